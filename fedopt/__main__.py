"""``python -m fedopt`` runs the command line."""

import sys

from fedopt.cli import main

sys.exit(main())
