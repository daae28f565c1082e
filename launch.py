"""Start TL Studio: ``python launch.py`` (also the Hugging Face Space entry point)."""

import os
import sys

# A Space runs this file from the repository root without installing the
# package: make ``tl_studio`` importable from here.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from tl_studio.ui.launch import main  # noqa: E402

if __name__ == "__main__":
    main()
