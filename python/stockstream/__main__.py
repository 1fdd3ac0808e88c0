"""``python -m stockstream`` runs the command line."""

import sys

from stockstream.cli import main

sys.exit(main())
