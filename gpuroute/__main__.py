"""``python -m gpuroute``: the same as the ``gpuroute`` command."""

import sys

from gpuroute.cli import main

sys.exit(main())
