"""``python -m kured``: the same as the ``kured`` command."""

from kured.cli import main

if __name__ == "__main__":
    main()
