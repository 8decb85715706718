"""Shared test helpers: one tolerance table per dtype, seeded data, subprocess runner."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

# The start-up cache (runtime/start_cache.py) stays on, as users have it, in a folder of this run's
# own (subprocesses inherit it): sessions made twice from one file take the cached path the second time.
os.environ["IABN_ONNX_CACHE_DIR"] = tempfile.mkdtemp(prefix="iabn_onnx_test_cache_")
os.environ.pop("IABN_ONNX_CACHE", None)
# Progress lines print for steps of 5 s or more, which on a slow machine a test's step may take: the tests that
# assert a silent stderr must not depend on the machine's speed (the progress tests set their own threshold).
os.environ["IABN_ONNX_PROGRESS_AFTER"] = "inf"

# (rtol, atol) per dtype, against a float64 reference.
TOLERANCES: dict[np.dtype, tuple[float, float]] = {
    np.dtype(np.float16): (2e-3, 2e-3),
    np.dtype(np.float32): (1e-5, 1e-5),
    np.dtype(np.float64): (1e-12, 1e-12),
}


def assert_close(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype | type | None = None) -> None:
    dtype = np.dtype(dtype or np.asarray(actual).dtype)
    rtol, atol = TOLERANCES[dtype]
    assert np.asarray(actual).shape == np.asarray(expected).shape
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=rtol, atol=atol)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def run_isolated(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter; the caller asserts on stdout and the exit code."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run's cache folder: a test run leaves nothing in the temporary directory but pytest's own
    ``pytest-of-<user>`` (``tests/test_temp_cleanup.py`` checks)."""
    import shutil

    folder = os.environ.get("IABN_ONNX_CACHE_DIR", "")
    if os.path.basename(folder).startswith("iabn_onnx_test_cache_"):  # ours, not one the caller set
        shutil.rmtree(folder, ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run the long variants")


def pytest_configure(config: pytest.Config) -> None:
    from hypothesis import HealthCheck, settings

    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", max_examples=100, derandomize=True, deadline=None, suppress_health_check=quiet)
    settings.load_profile("ci")  # the 2000-example variants carry the slow mark


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
