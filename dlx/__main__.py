"""`python -m dlx ...`: the `dlx` command where its console script is not installed."""

from dlx.cli import entry

entry()
