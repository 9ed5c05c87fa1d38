"""`python -m hvuio` runs the CLI."""

from hvuio.cli import main

main()
