"""Training, sweeping and meta-learning programs behind the ``gradtx`` command."""
