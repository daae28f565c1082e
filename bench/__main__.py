"""``python -m bench``: the CPU benchmark suite (see bench/README.md)."""

import sys

from .run import main

sys.exit(main())
