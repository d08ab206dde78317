"""``python -m gradtx``: the same as the ``gradtx`` command."""

from gradtx.cli import main

raise SystemExit(main())
