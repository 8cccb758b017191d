"""``python -m patchpack.cli VERB``: the same as the ``patchpack`` console script."""

import sys

from patchpack.cli import main

sys.exit(main())
