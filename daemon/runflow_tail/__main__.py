"""``python -m runflow_tail``."""

import sys

from .cli import main

sys.exit(main())
