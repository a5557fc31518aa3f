"""TensorFlow's native start-up lines (``I0000 … port.cc:153] oneDNN custom operations are on``)
kept out of user-facing output.

TF 2.21 writes them from C++ before absl logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` does not
silence them. :func:`import_tensorflow` imports TensorFlow with file descriptor 2 pointed at a
temporary file and then writes back every line except absl's INFO lines and its "before
absl::InitializeLog()" notice: warnings and errors still come through. ``MCNN_VERBOSE=1`` (set by
``mcnn-explore -v``, and inherited by every job it starts) keeps everything.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["VERBOSE_ENV", "filter_native_info", "import_tensorflow", "is_native_info", "verbose",
           "without_native_info"]

VERBOSE_ENV = "MCNN_VERBOSE"
# absl's line prefix: I + MMDD, then a time whose seconds field is the whole epoch before absl
# is initialised (``I0000 00:00:1795988246.920930   12291 port.cc:153] ...``), the thread, file:line
_INFO = re.compile(rb"^(I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |WARNING: All log messages "
                   rb"before absl::InitializeLog\(\) is called are written to STDERR)")


def is_native_info(line: bytes) -> bool:
    """Whether ``line`` is one of absl's INFO lines (or its pre-initialisation notice)."""
    return _INFO.match(line) is not None


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def filter_native_info() -> Iterator[None]:
    """Within the block, native writes to stderr lose their INFO lines (unless verbose)."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(keepends=True)
                    if not is_native_info(line)]
            if kept:
                os.write(2, b"".join(kept))


def without_native_info(text: str) -> str:
    """``text`` (e.g. a job's log tail) without absl's INFO lines, unless verbose."""
    if verbose():
        return text
    return "\n".join(line for line in text.splitlines()
                     if not is_native_info(line.encode(errors="replace")))


def import_tensorflow() -> None:
    """Import TensorFlow (once) without its native INFO lines; later imports reuse it."""
    if "tensorflow" in sys.modules:
        return
    with filter_native_info():
        import tensorflow  # noqa: F401
