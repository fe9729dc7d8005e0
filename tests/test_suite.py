"""The suite's own guards (docs/BENCHMARKS.md, "The test suite's time"): every test runs under a
time limit, and an xdist worker runs torch on one thread."""

from __future__ import annotations

import os

import pytest
import torch

pytest_plugins = ["pytester"]


def test_every_test_runs_under_a_time_limit(request: pytest.FixtureRequest) -> None:
    """pytest only warns about an ini key no plugin reads: without pytest-timeout the limit
    in pyproject.toml would vanish silently."""
    assert request.config.pluginmanager.hasplugin("timeout")
    assert 0 < float(request.config.getini("timeout")) <= 120


def test_a_test_over_the_limit_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time

        def test_slow():
            time.sleep(5)

        def test_quick():
            pass
        """
    )
    result = pytester.runpytest_inprocess("-o", "timeout=1", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*Timeout (>1.0s)*"])


@pytest.mark.skipif(
    not os.environ.get("PYTEST_XDIST_WORKER"), reason="about xdist workers (make test: -n 2)"
)
def test_an_xdist_worker_runs_torch_on_one_thread() -> None:
    """Two workers on two cores: one thread each, and the processes a test starts inherit it
    (two threads per worker would put four on two cores, each waiting on the others)."""
    assert torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"
