"""`python3 -m vmtest.cli` (what `vmtest bisect` hands to git bisect run)."""

from vmtest.cli import entry

entry()
