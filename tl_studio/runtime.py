"""Process-level tuning shared by every entry point (CLI, launch.py, a Space).

glibc's malloc hands large blocks (anything over 128 KiB at first) straight
to ``mmap`` and returns them with ``munmap`` on free. A CPU training step
allocates and frees the same activation-sized buffers every iteration, so each
step page-faults its whole working set back in: measured here on a 2-core
x86 machine, a frozen-backbone EfficientNet-Lite0 step spent most of its time
in the kernel (3 million minor faults and 11.6 s of system time for five
batches of 32, 15 img/s). Telling malloc to keep large blocks in its heap
(``M_MMAP_MAX = 0``) and not to trim them (``M_TRIM_THRESHOLD``) gave 42 img/s
with no faults. ``mallopt`` applies from the moment it is called, so it works
whichever way the program was started, unlike ``MALLOC_*_`` environment
variables, which must be set before the interpreter starts.

The price: glibc then never gives the heap's peak back on its own (a server
stayed at 3.9 GB after its jobs were gone, 0.87 GB after a trim). So every
job ends with :func:`release_memory` (``malloc_trim``), which returns the
freed pages while keeping the tuning for the next job's steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30  # keep up to 1 GiB of freed heap for reuse

_tuned: bool | None = None
_libc = None


def tune_allocator() -> bool:
    """Keep large freed buffers in glibc's heap. Idempotent; False where not glibc.

    Set ``TL_STUDIO_MALLOC_TUNING=0`` to leave the allocator alone.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("TL_STUDIO_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    libc = _c_library()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:  # musl and others have no mallopt
        return False
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    _tuned = bool(ok)
    log.debug("glibc malloc tuned for training: %s", _tuned)
    return _tuned


def _c_library():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            _libc = False
    return _libc or None


def release_memory() -> bool:
    """Give the memory freed in the C heap back to the system (glibc's ``malloc_trim``).

    Cheap when there is little to return (milliseconds); False where there is
    no glibc. Call it when a job ends, not inside the loop.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = _c_library()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:  # musl and others
        return False
    trim(0)
    return True
# Libraries that log routine progress at INFO (onnx_ir: 68 lines per ONNX export): their
# warnings still show, the rest only with -v. matplotlib announces building its font cache
# as a warning, once per machine: that too only with -v.
CHATTY_LOGGERS = {
    **dict.fromkeys(("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo", "torch.fx",
                     "matplotlib", "PIL", "httpx", "urllib3", "gradio"), logging.WARNING),
    "matplotlib.font_manager": logging.ERROR,
}


def configure_logging(verbose: bool = False) -> None:
    """Plain log lines on stderr for the CLI and the app (never in library code).

    Ours at INFO (DEBUG with ``verbose``); other libraries' routine chatter is
    silenced unless ``verbose``.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name, level in CHATTY_LOGGERS.items():
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else level)
    # Gradio's analytics threads delay exit by ~20 s offline.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
