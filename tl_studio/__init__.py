"""TL Studio: transfer learning on images.

The engine (everything but :mod:`tl_studio.ui` and :mod:`tl_studio.cli`)
imports no gradio and works headless from Python and from the ``tl-studio``
CLI; the two on top import the engine, never the reverse.
"""

import logging

from .version import __version__

__all__ = ["__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
