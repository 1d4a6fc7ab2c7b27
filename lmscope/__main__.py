"""``python -m lmscope``: the command line."""

import sys

from lmscope.cli import main

sys.exit(main())
