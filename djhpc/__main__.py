"""`python -m djhpc`: the same as the `djhpc` command."""

from djhpc.cli import main

main()
