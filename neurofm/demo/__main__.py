"""``python -m neurofm.demo`` runs ``neurofm demo`` (what ``make demo`` calls)."""

import sys

from . import main

sys.exit(main())
