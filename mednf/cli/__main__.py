"""``python -m mednf.cli`` (and ``torchrun -m mednf.cli``): the ``mednf`` command."""

from mednf.cli import main

if __name__ == "__main__":
    main()
