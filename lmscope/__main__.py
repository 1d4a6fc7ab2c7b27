"""``python -m lmscope`` runs the command line."""

import sys

from lmscope.cli import main

sys.exit(main())
