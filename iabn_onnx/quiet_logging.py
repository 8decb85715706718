"""A logger held at ERROR for a block: the libraries we drive (onnxscript, onnxruntime's quantizer) log
advice that our own reports already carry."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_logger(name: str = "") -> Iterator[None]:
    """Within the block, ``name``'s logger (default: the root logger) passes on errors only."""
    logger = logging.getLogger(name or None)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
