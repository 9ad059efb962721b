"""`python3 -m vmtest.cli` (what `vmtest bisect` hands to git bisect run)."""

import sys

from vmtest.cli import main

sys.exit(main())
