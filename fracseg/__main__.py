"""``python -m fracseg`` == the ``fracseg`` console script."""

import sys

from fracseg.cli import main

sys.exit(main())
