"""``python -m runflow_tail``."""

import sys

from runflow_tail.cli import main

sys.exit(main())
