"""TL Studio: transfer learning on images.

The engine (everything but :mod:`tl_studio.ui`) imports no gradio and works
headless from Python and from the ``tl-studio`` CLI.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
