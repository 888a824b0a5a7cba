"""``python -m pnngraph``: the same as the ``pnngraph`` command."""

from pnngraph.cli import main

if __name__ == "__main__":
    main()
