"""``python -m lmlab``: the ``lmlab`` command (torchrun starts data-parallel workers this way)."""

import sys

from lmlab.cli import main

sys.exit(main())
