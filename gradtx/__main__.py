"""``python -m gradtx``: the same as the ``gradtx`` command."""

try:
    from gradtx.cli import main
except KeyboardInterrupt:  # Ctrl-C while JAX is still being imported
    import sys

    print("gradtx: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
