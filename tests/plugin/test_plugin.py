"""pytest_decompose/plugin.py: the option group, the marker, and a light import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]


def test_help_lists_the_decompose_option_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "decompositionality contracts (pytest-decompose):",
            "*--decompose-report*",
            "*--decompose-device*",
            "*--decompose-seed*",
            "*--decompose-no-cache*",
            "*--decompose-refresh*",
        ]
    )


def test_marker_is_registered_for_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.decomposable(eps=0.2)
        def test_marked():
            pass
        """
    )
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=1)
    assert "decomposable(" in "\n".join(pytester.runpytest("--markers").stdout.lines)


@pytest.mark.parametrize("module", ["pytest_decompose", "pytest_decompose.plugin"])
def test_loading_the_plugin_imports_no_torch(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "heavy = [m for m in ('torch', 'transformers', 'saved') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("disabled", ["xdist", "decompose"])
def test_a_run_without_xdist_or_without_the_plugin_succeeds(
    pytester: pytest.Pytester, disabled: str
) -> None:
    """The plugin loads through its entry point into every pytest run of the environment: a
    hook of an absent optional plugin (xdist) must not stop a run that never uses it."""
    pytester.makepyfile("def test_plain():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess("-p", f"no:{disabled}")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    listed = pytester.runpytest_subprocess("-p", f"no:{disabled}", "--help")
    assert ("--decompose-report" in listed.stdout.str()) is (disabled != "decompose")


# --------------------------------------------------------------------------- assert_decomposable

# Runs are in-process (conftest.py imports first what they import), but for the one above:
# loading the plugin into a fresh process is what it tests.
MODEL_FILE = """
import pytest
import torch
from pytest_decompose import assert_decomposable
from saved import testing

X, Y = testing.digits()
MODEL = testing.train_classifier(testing.tiny_mlp(seed=1), X, Y, steps=100)
"""


def _write_tests(pytester: pytest.Pytester, body: str) -> None:
    pytester.makepyfile(test_checks=MODEL_FILE + textwrap.dedent(body))


def test_passing_and_failing_contracts(pytester: pytest.Pytester) -> None:
    _write_tests(
        pytester,
        """
        def test_random_masks_meet_a_lenient_contract():
            report = assert_decomposable(MODEL, X, eps=0.95, gamma=1.0, eta=0.3, method="random")
            assert report.holds

        def test_magnitude_masks_collapse():
            assert_decomposable(MODEL, X, eps=0.9, gamma=0.5, method="magnitude")
        """,
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ContractViolation: decomposition contract violated (magnitude*",
            "*structural: max overlap 1.0000 > gamma = 0.5*",
            "*top counterexamples*",
            "*test_checks.py:*: ContractViolation*",
        ]
    )
    # the traceback points at the user's line, not into the plugin
    assert "assertions.py" not in result.stdout.str()


def test_marker_sets_the_contract_and_unknown_keys_fail(pytester: pytest.Pytester) -> None:
    _write_tests(
        pytester,
        """
        @pytest.mark.decomposable(gamma=1.0, eps=0.9)
        def test_marker_relaxes_gamma():
            assert_decomposable(MODEL, X, method="magnitude")

        @pytest.mark.decomposable(gamma=1.0, eps=0.9)
        def test_explicit_argument_wins_over_marker():
            assert_decomposable(MODEL, X, gamma=0.5, method="magnitude")

        @pytest.mark.decomposable(eta=0.3)
        def test_contract_fixture(decompose_contract):
            assert decompose_contract.eta == 0.3 and decompose_contract.eps == 0.1
        """,
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2, failed=1)
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.decomposable(epsilon=0.1)
        def test_typo():
            pass
        """
    )
    result = pytester.runpytest_inprocess("test_bad.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*decomposable takes only keyword arguments*epsilon*"])


def test_too_few_boundary_samples_says_how_many_are_needed(pytester: pytest.Pytester) -> None:
    _write_tests(
        pytester,
        """
        def test_tiny_data():
            # sparsity 0.01 keeps every unit of the 32-wide layers: Dis = 0 exactly
            assert_decomposable(
                MODEL, X[:40], calibration=X[40:400], gamma=1.0, eta=0.0, method="random",
                sparsity=0.01,
            )
        """,
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    # n = 40, q = 0.2 -> |B| = 8, 0 disagreements: Clopper-Pearson 1 - 0.025^(1/8) = 0.3694.
    # Binomial at Dis = 0: 1 - 0.025^(1/n) <= 0.1 needs n >= 35.01 -> |B| >= 36, and
    # floor(0.2 n + 1/2) >= 36 needs n >= 178 (356 with half held out). Hoeffding: ln 40 / 0.02
    # = 184.4 -> |B| >= 185, n >= 923 (1846).
    result.stdout.fnmatch_lines(
        [
            "*semantic: Clopper-Pearson upper 0.3694 > eps = 0.1 (Dis 0.0000 = 0 of 8*",
            "*binomial: |B| >= 36, about 178 evaluated samples at kappa = 0.2 (356 in all*",
            "*hoeffding: |B| >= 185, about 923 evaluated samples at kappa = 0.2 (1846 in all*",
            "*samples: decomposed on the calibration data, certified on all of the data*",
        ]
    )


def test_report_files_cache_refresh_and_no_cache(pytester: pytest.Pytester) -> None:
    _write_tests(
        pytester,
        """
        def test_one():
            assert_decomposable(MODEL, X, eps=0.95, gamma=1.0, method="random")

        def test_two():
            assert_decomposable(MODEL, X[:900], eps=0.95, gamma=1.0, method="random", sparsity=0.4)
        """,
    )
    cold = pytester.runpytest_inprocess("--decompose-report=out")
    cold.assert_outcomes(passed=2)
    cold.stdout.fnmatch_lines(["*cache: 0 hits, 2 decompositions computed*"])
    document = json.loads((pytester.path / "out" / "decompose-report.json").read_text())
    assert [r["nodeid"] for r in document["results"]] == [
        "test_checks.py::test_one",
        "test_checks.py::test_two",
    ]
    assert {"python", "torch", "device"} <= set(document["results"][0]["machine"])
    assert "<svg" in (pytester.path / "out" / "decompose-report.html").read_text()
    warm = pytester.runpytest_inprocess()
    warm.stdout.fnmatch_lines(["*cache: 2 hits, 0 decompositions computed*"])
    refresh = pytester.runpytest_inprocess("--decompose-refresh")
    refresh.stdout.fnmatch_lines(["*cache: 0 hits, 2 decompositions computed*"])
    bypass = pytester.runpytest_inprocess("--decompose-no-cache")
    bypass.stdout.fnmatch_lines(["*cache: 0 hits, 2 decompositions computed*"])
    pytester.runpytest_inprocess("--junitxml=junit.xml")
    xml = (pytester.path / "junit.xml").read_text()
    assert 'name="decompose_holds" value="True"' in xml


def test_xdist_workers_results_are_merged(pytester: pytest.Pytester) -> None:
    _write_tests(
        pytester,
        """
        @pytest.mark.parametrize("size", [600, 700, 800, 900])
        def test_sizes(size):
            assert_decomposable(MODEL, X[:size], eps=0.95, gamma=1.0, method="random")
        """,
    )
    result = pytester.runpytest_inprocess("-n", "2", "--decompose-report=out", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    document = json.loads((pytester.path / "out" / "decompose-report.json").read_text())
    assert len(document["results"]) == 4
    assert document["cache"]["trained"] == 4


def test_a_long_decomposition_is_announced_before_it_starts(pytester: pytest.Pytester) -> None:
    # an estimate of a million steps is far above a minute; the run itself stops when the
    # held-out loss stops improving, after a few steps
    _write_tests(
        pytester,
        """
        from saved import LBMaskConfig

        def test_long():
            config = LBMaskConfig(max_steps=1_000_000, eval_every=2, patience=1)
            assert_decomposable(MODEL, X, eps=0.95, gamma=1.0, lbmask=config)
        """,
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--decompose-report=out")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*pytest-decompose: decomposing, about * min: mining*"])
    document = json.loads((pytester.path / "out" / "decompose-report.json").read_text())
    timing = document["results"][0]["timing"]
    assert timing["cached"] is False and timing["estimate"] > 60 > timing["seconds"]
    verdicts = document["results"][0]["report"]["verdicts"]
    assert verdicts["bound"] == "binomial"
    assert verdicts["semantic_bound"] == verdicts["bounds"]["binomial"]


def test_a_conftest_hook_amends_each_report_entry(pytester: pytest.Pytester) -> None:
    """``pytest_decompose_update_json`` (pytest_decompose/hookspec.py) sees every entry once,
    in node-id order, and what it adds lands in the JSON report."""
    pytester.makeconftest(
        """
        SEEN = []

        def pytest_decompose_update_json(config, entry):
            SEEN.append(entry["nodeid"])
            entry["commit"] = "abc123"
            entry["order"] = len(SEEN)
        """
    )
    _write_tests(
        pytester,
        """
        def test_b():
            assert_decomposable(MODEL, X[:700], eps=0.95, gamma=1.0, method="random")

        def test_a():
            assert_decomposable(MODEL, X[:600], eps=0.95, gamma=1.0, method="random")
        """,
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--decompose-report=out")
    result.assert_outcomes(passed=2)
    document = json.loads((pytester.path / "out" / "decompose-report.json").read_text())
    entries = {r["nodeid"]: r for r in document["results"]}
    assert {r["commit"] for r in entries.values()} == {"abc123"}
    assert entries["test_checks.py::test_a"]["order"] == 1
    assert entries["test_checks.py::test_b"]["order"] == 2
    assert entries["test_checks.py::test_a"]["report"]["method"] == "random"
