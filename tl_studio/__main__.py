"""``python -m tl_studio`` is the ``tl-studio`` command."""

import sys

from .cli import main

sys.exit(main())
