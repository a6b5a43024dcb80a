"""``python -m neurofm`` runs the ``neurofm`` command."""

import sys

from .cli import main

sys.exit(main())
