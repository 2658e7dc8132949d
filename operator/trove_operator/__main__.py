"""``python -m trove_operator``: the same as the ``trove-operator`` command."""

from trove_operator.cli import main

if __name__ == "__main__":
    main()
