"""``python -m recsys.cli``: the same as the ``recsys`` command."""

from recsys.cli import main

main()
