"""The plugin in a project's CI: one decomposition per model and data whatever the contracts,
a project-wide contract (ini keys, ``--decompose-contract``), and baselines that catch
regressions (pytest_decompose/baseline.py)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

import pytest_decompose.assertions
from pytest_decompose.baseline import DIRECTORY, Slot, baseline_path, compare, stale_baselines
from pytest_decompose.plugin import CACHE_NAME
from saved import ContractReport

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

# Inner runs are in-process (conftest.py imports first what they import); xdist's workers are
# processes of their own. The model: the test suite's 32-32 MLP trained on the real digits.
MODEL_FILE = """
import os
import pytest
from pytest_decompose import assert_decomposable
from saved import LBMaskConfig, testing

X, Y = testing.digits()
MODEL = testing.train_classifier(testing.tiny_mlp(seed=1), X, Y, steps=100)
QUICK = LBMaskConfig(max_steps=40)
"""


def _write(pytester: pytest.Pytester, body: str, name: str = "test_checks") -> None:
    pytester.makepyfile(**{name: MODEL_FILE + textwrap.dedent(body)})


def _results(pytester: pytest.Pytester) -> list[dict]:
    document = json.loads((pytester.path / "out" / "decompose-report.json").read_text())
    return document["results"]


# --------------------------------------------------------------------------- cache key


def test_three_contracts_share_one_decomposition(pytester: pytest.Pytester) -> None:
    """The masks of a fixed sparsity depend on no threshold but gamma (LBMask's overlap hinge
    aims below it): three contracts that differ elsewhere, one LBMask run; another gamma, a
    run of its own. ``sparsity="auto"`` chooses sparsities against eps, so its two contracts
    with different eps are two runs."""
    _write(
        pytester,
        """
        def test_three_contracts():
            loose = assert_decomposable(MODEL, X, eps=1.0, gamma=1.0, lbmask=QUICK)
            with pytest.raises(AssertionError):
                assert_decomposable(MODEL, X, eps=0.01, gamma=1.0, lbmask=QUICK)
            other = assert_decomposable(MODEL, X, eps=1.0, gamma=1.0, eta=0.1, lbmask=QUICK)
            assert loose.overlap == other.overlap  # the same masks, judged twice
            assert_decomposable(MODEL, X, eps=1.0, gamma=0.99, lbmask=QUICK)  # learned anew

        def test_auto_depends_on_eps():
            for eps in (1.0, 0.9):
                try:  # the verdict at 0.9 is not the point: each eps is a run of its own
                    assert_decomposable(MODEL, X, eps=eps, gamma=1.0, sparsity="auto", lbmask=QUICK)
                except AssertionError:
                    pass
        """,
    )
    cold = pytester.runpytest_inprocess("--decompose-report=out", "-p", "no:randomly")
    cold.assert_outcomes(passed=2)
    cold.stdout.fnmatch_lines(
        [
            "*cache: 2 hits, 4 decompositions computed*",
            "*baselines: 6 missing*",  # no baseline files: the checks pass, counted
        ]
    )
    results = _results(pytester)
    cached = [False, False, False, True, True, False]
    assert [r["timing"]["cached"] for r in results] == cached
    # each report judges by its own contract, recorded as the one the check used
    assert [r["report"]["contract"]["eps"] for r in results] == [1.0, 0.9, 1.0, 0.01, 1.0, 1.0]
    assert [r["report"]["contract"]["gamma"] for r in results][-3:] == [1.0, 1.0, 0.99]
    warm = pytester.runpytest_inprocess("-p", "no:randomly")
    warm.stdout.fnmatch_lines(["*cache: 6 hits, 0 decompositions computed*"])
    entries = sorted((pytester.path / ".pytest_cache" / "d" / CACHE_NAME).glob("*.safetensors"))
    assert len(entries) == 4


# --------------------------------------------------------------------------- the CI recipe


def test_the_readme_ci_recipe_is_valid_yaml_and_keeps_the_plugins_cache(
    pytester: pytest.Pytester,
) -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### In CI", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    workflow = yaml.safe_load(block)
    steps = workflow["jobs"]["decompose"]["steps"]

    def step(action: str) -> dict:
        (found,) = [s for s in steps if s.get("uses", "").startswith(f"{action}@")]
        return found

    # the cached path is the directory the plugin writes its decompositions to
    config = pytester.parseconfigure()
    cache_dir = Path(config.cache.mkdir(CACHE_NAME)).relative_to(pytester.path)
    assert Path(step("actions/cache")["with"]["path"]) == cache_dir
    # the uploaded files are the ones the pytest step writes, uploaded even when it fails
    (command,) = [s["run"] for s in steps if s.get("run", "").startswith("pytest ")]
    report = re.search(r"--decompose-report=(\S+)", command)
    junit = re.search(r"--junitxml=(\S+)", command)
    assert report is not None and junit is not None
    upload = step("actions/upload-artifact")
    assert upload["if"] == "always()"
    assert set(upload["with"]["path"].split()) == {f"{report.group(1)}/", junit.group(1)}
    python = step("actions/setup-python")["with"]["python-version"]
    assert python == "3.11"


# --------------------------------------------------------------------------- project contract


def test_ini_keys_the_override_and_their_precedence(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        decompose_eps = 0.97
        decompose_gamma = 1.0
        decompose_bound = hoeffding
        """
    )
    _write(
        pytester,
        """
        def test_project():
            assert_decomposable(MODEL, X, method="wanda")

        @pytest.mark.decomposable(eps=0.96)
        def test_marker():
            assert_decomposable(MODEL, X, method="wanda")

        @pytest.mark.decomposable(eps=0.96)
        def test_argument():
            assert_decomposable(MODEL, X, eps=0.95, method="wanda")

        def test_fixture(decompose_contract):
            assert decompose_contract.bound == "hoeffding"
        """,
    )
    run = pytester.runpytest_inprocess("--decompose-report=out", "-p", "no:randomly")
    run.assert_outcomes(passed=4)
    run.stdout.fnmatch_lines(
        ["*project contract: eps=0.97 (ini), gamma=1.0 (ini), bound=hoeffding (ini)*"]
    )
    by_test = {r["nodeid"].split("::")[1]: r for r in _results(pytester)}
    assert {k: r["report"]["contract"]["eps"] for k, r in by_test.items()} == {
        "test_project": 0.97,
        "test_marker": 0.96,
        "test_argument": 0.95,
    }
    assert {k: r["contract_sources"]["eps"] for k, r in by_test.items()} == {
        "test_project": "ini",
        "test_marker": "marker",
        "test_argument": "argument",
    }
    assert by_test["test_project"]["contract_sources"]["kappa"] == "default"
    assert all(r["report"]["contract"]["bound"] == "hoeffding" for r in by_test.values())

    # a one-off run: the command line replaces ini values; markers and arguments still win
    run = pytester.runpytest_inprocess(
        "--decompose-report=out", "--decompose-contract", "eps=0.98, bound=binomial"
    )
    run.assert_outcomes(passed=3, failed=1)  # the fixture's test sees the binomial bound
    run.stdout.fnmatch_lines(["*eps=0.98 (command line), gamma=1.0 (ini), bound=binomial*"])
    by_test = {r["nodeid"].split("::")[1]: r for r in _results(pytester)}
    assert by_test["test_project"]["report"]["contract"]["eps"] == 0.98
    assert by_test["test_project"]["contract_sources"]["eps"] == "command line"
    assert by_test["test_marker"]["report"]["contract"]["eps"] == 0.96
    assert "project contract: eps=0.98" in (pytester.path / "out/decompose-report.html").read_text()


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--decompose-contract", "epsilon=0.1"], "", "*KEY one of eps, kappa*got 'epsilon=0.1'*"),
        (["--decompose-contract", "eps=small"], "", "*eps: expected a number, got 'small'*"),
        ([], "decompose_gamma = wide", "*ini decompose_gamma: gamma: expected a number*"),
        ([], "decompose_baseline_tolerance = -1", "*decompose_baseline_tolerance: expected*"),
    ],
)
def test_bad_project_settings_stop_the_run(
    pytester: pytest.Pytester, args: list[str], ini: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_inprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_an_out_of_range_value_names_its_source() -> None:
    """Types are checked at start-up (above); ranges are the contract's, and its error says
    where each threshold came from."""
    layers = {"ini": {"eps": 2.0, "gamma": 0.4}, "marker": {"gamma": 0.3}}
    with pytest.raises(ValueError, match=r"\[from eps = 2.0 \(ini\), gamma = 0.3 \(marker\)\]"):
        pytest_decompose.assertions._resolve_contract(layers)
    contract, sources = pytest_decompose.assertions._resolve_contract({"ini": {"eps": 0.2}})
    assert contract.eps == 0.2 and sources["eps"] == "ini" and sources["gamma"] == "default"


# --------------------------------------------------------------------------- baselines

BASELINE_TESTS = """
METHOD = os.environ.get("CHECK_METHOD", "wanda")

@pytest.mark.decomposable(eps=1.0, gamma=1.0)
def test_digits():
    assert_decomposable(MODEL, X, method=METHOD, lbmask=QUICK)

@pytest.mark.decomposable(eps=1.0, gamma=1.0)
@pytest.mark.parametrize("size", [900])
def test_subset(size):
    assert_decomposable(MODEL, X[:size], method=METHOD, lbmask=QUICK)
"""


def test_baselines_write_pass_regress_update(pytester: pytest.Pytester, monkeypatch) -> None:
    _write(pytester, BASELINE_TESTS)
    stored = {
        name: pytester.path / DIRECTORY / "test_checks" / name
        for name in ("test_digits.json", "test_subset[900].json")
    }
    written = pytester.runpytest_inprocess("--decompose-update-baseline")
    written.assert_outcomes(passed=2)
    written.stdout.fnmatch_lines(["*baselines: 2 written*"])
    baseline = json.loads(stored["test_digits.json"].read_text())
    assert baseline["test"] == "test_checks.py::test_digits"
    (check,) = baseline["checks"]
    assert check["method"] == "wanda" and len(check["classes"]) == 10
    assert len(check["supports"]) == 64  # a sha256 of the component supports

    same = pytester.runpytest_inprocess("-n", "2", "--decompose-report=out")
    same.assert_outcomes(passed=2)
    same.stdout.fnmatch_lines(["*baselines: 2 matched*"])

    # a worse decomposition (random masks instead of Wanda's) of the same model: the contract holds
    # (eps = 1), the baseline catches it, under xdist too
    monkeypatch.setenv("CHECK_METHOD", "random")
    worse = pytester.runpytest_inprocess("-n", "2", "--decompose-report=out")
    worse.assert_outcomes(failed=2)
    new = {r["nodeid"]: r for r in _results(pytester)}["test_checks.py::test_digits"]
    assert new["baseline"]["status"] == "regressed"
    old_bound = check["upper_bound"]
    new_bound = round(ContractReport.from_dict(new["report"]).semantic_bound, 6)
    assert new_bound > old_bound + 0.02
    worse.stdout.fnmatch_lines(
        [
            # one line (the two failures come in either order under xdist)
            "*BaselineRegression: decomposition contract holds*regressed against the "
            f"baseline {DIRECTORY}/test_checks/test_digits.json:*",
            f"*upper bound of the boundary disagreement (upper_bound) {new_bound:.4f}, "
            f"baseline {old_bound:.4f} + tolerance 0.02*",
            "*accept the new figures with: pytest --decompose-update-baseline*",
        ]
    )
    worse.stdout.fnmatch_lines(["REGR *test_digits*regressed against*"])

    pytester.runpytest_inprocess("--decompose-update-baseline").assert_outcomes(passed=2)
    assert json.loads(stored["test_digits.json"].read_text())["checks"][0]["method"] == "random"
    accepted = pytester.runpytest_inprocess()
    accepted.assert_outcomes(passed=2)
    accepted.stdout.fnmatch_lines(["*baselines: 2 matched*"])


def test_stale_baselines_are_listed_then_removed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_kept="def test_alive():\n    pass\n")
    folder = pytester.path / DIRECTORY
    alive = folder / "test_kept" / "test_alive.json"
    gone_test = folder / "test_kept" / "test_removed.json"
    gone_file = folder / "test_deleted" / "test_x.json"
    for path in (alive, gone_test, gone_file):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"format": 1, "checks": []}')
    listed = pytester.runpytest_inprocess("-n", "2")
    listed.assert_outcomes(passed=1)
    listed.stdout.fnmatch_lines(
        [
            "*stale baselines (2, no collected test owns them; remove with*",
            f"*{DIRECTORY}/test_deleted/test_x.json",
            f"*{DIRECTORY}/test_kept/test_removed.json",
        ]
    )
    # a run that names single tests judges none of that file's baselines
    single = pytester.runpytest_inprocess("test_kept.py::test_alive")
    assert "test_kept/test_removed.json" not in single.stdout.str()
    removed = pytester.runpytest_inprocess("--decompose-update-baseline")
    removed.stdout.fnmatch_lines(["*stale baselines (2*removed):*"])
    assert alive.exists() and not gone_test.exists() and not gone_file.exists()
    assert not gone_file.parent.exists()


def _slot(path: Path, update: bool = False) -> Slot:
    return Slot(path=path, shown=path.name, nodeid="t.py::t", update=update, tolerance=0.02)


def test_a_slot_reports_missing_broken_matched_and_written(tmp_path: Path) -> None:
    record = _record(0.1, 0.4, 0.5, {"0": False})
    path = tmp_path / "t.json"
    assert _slot(path).check(record) == ("missing", [])  # no file: the check passes
    writer = _slot(path, update=True)
    assert writer.check(record) == ("written", [])
    writer.save()
    reader = _slot(path)
    assert reader.check(record) == ("matched", [])
    assert reader.check(record) == ("missing", [])  # a second check the baseline lacks
    worse = _record(0.2, 0.4, 0.5, {"0": False})
    status, found = _slot(path).check(worse)
    assert status == "regressed" and found[0].startswith("upper bound")
    path.write_text("{not json")
    status, found = _slot(path).check(record)
    assert status == "broken"
    assert "t.json is unreadable" in found[0] and "--decompose-update-baseline" in found[0]
    path.write_text('{"format": 99, "checks": []}')
    assert "not a format-1 baseline file" in _slot(path).check(record)[1][0]


# --------------------------------------------------------------------------- pure functions


def _record(bound: float, overlap: float, prune: float, fails: dict[str, bool]) -> dict:
    classes = {k: {"upper_bound": 0.5 if f else 0.05, "fails": f} for k, f in fails.items()}
    return {"upper_bound": bound, "max_overlap": overlap, "min_prune": prune, "classes": classes}


def test_compare_names_each_regression_beyond_the_tolerance() -> None:
    old = _record(0.10, 0.40, 0.50, {"0": False, "1": False, "2": True})
    assert compare(old, _record(0.12, 0.42, 0.48, {"0": False, "1": False, "2": True}), 0.02) == []
    found = compare(old, _record(0.1201, 0.45, 0.47, {"0": True, "1": False, "2": False}), 0.02)
    assert found == [
        "upper bound of the boundary disagreement (upper_bound) 0.1201, baseline 0.1000 "
        "+ tolerance 0.02",
        "max overlap (max_overlap) 0.4500, baseline 0.4000 + tolerance 0.02",
        "min prune (min_prune) 0.4700, baseline 0.5000 - tolerance 0.02",
        "class 0 newly fails: upper bound 0.5000 > eps (was 0.0500)",
    ]
    # improvements are never regressions, whatever the tolerance
    assert compare(old, _record(0.0, 0.0, 1.0, {"0": False, "1": False, "2": False}), 0.0) == []


def test_baseline_paths_and_staleness(tmp_path: Path) -> None:
    test_file = tmp_path / "tests" / "test_model.py"
    path = baseline_path(test_file, "tests/test_model.py::TestA::test_b[cuda:0-x/y]")
    assert path == tmp_path / "tests" / DIRECTORY / "test_model" / "TestA__test_b[cuda_0-x_y].json"
    other = baseline_path(test_file, "tests/test_model.py::test_c")
    for p in (path, other):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{}")
    test_file.write_text("")
    assert stale_baselines({test_file: {path.name}}, set()) == [other]
    assert stale_baselines({test_file: {path.name}}, {test_file}) == []  # collected in part
    assert stale_baselines({test_file: {path.name, other.name}}, set()) == []
