"""`python -m babelprune.cli ...` runs the command line."""

from babelprune.cli import main

main()
