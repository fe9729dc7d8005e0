"""saved/cli.py: the demo (the README's main job), check, report and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from saved.cli import main


def test_demo_runs_the_pipeline_and_prints_every_axis(capsys, tmp_path) -> None:
    out_json = tmp_path / "demo.json"
    assert main(["demo", "--quiet", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    for axis in ("semantic", "structural", "reduction"):
        assert re.search(rf"{axis}\s+│\s+[\w\d.>+ =-]+│.*│\s+(holds|FAILS)", out), axis
    # three disjoint parts: the model trains on one, the decomposition learns on a second,
    # the contract certifies on the third (issue 37: a certificate on samples the model never
    # trained on either)
    assert "the contract certified on the 599 that neither saw" in re.sub(r"\s+", " ", out)
    report = json.loads(out_json.read_text())
    assert report["method"] == "lbmask"
    assert report["verdicts"]["min_prune"] == pytest.approx(0.5, abs=0.01)
    split = report["split"]
    assert split["mode"] == "calibration"
    assert (split["n_decomposition"], split["n_evaluation"]) == (599, 599)
    assert report["n_samples"] == split["n_evaluation"]
    assert report["verdicts"]["bound"] == "binomial"
    # where along the margin it disagrees: ten deciles of the certified samples
    profile = report["margin_profile"]
    assert len(profile) == 10 and sum(b["n_samples"] for b in profile) == report["n_samples"]
    assert "Disagreement by margin decile" in out


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``saved ARGS`` in this process, from the folder ``cwd``: its exit status and output.
    ``saved check`` puts its working folder on ``sys.path`` to import the user's module; both
    are undone afterwards."""

    def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
        capsys.readouterr()
        with monkeypatch.context() as patch:
            patch.setattr(sys, "path", list(sys.path))
            if cwd is not None:
                patch.chdir(cwd)
            known = set(sys.modules)
            try:
                code = main(list(args))
            except SystemExit as stop:  # argparse's usage errors
                code = stop.code
            finally:
                for name in set(sys.modules) - known:  # the user's module is not ours to keep
                    if name.startswith("my_model"):
                        del sys.modules[name]
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["saved", *args], code, out, err)

    return run_cli


def test_check_with_a_bad_import_path_fails_in_one_line() -> None:
    """Through the real entry point, ``python -m saved.cli``, in a process of its own: the
    exit status and the one line on stderr are what a shell sees."""
    result = subprocess.run(
        [sys.executable, "-m", "saved.cli", "check", "no_such_module_here:build"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "cannot import 'no_such_module_here'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ("--eps=1.5", r"eps: expected a value in \(0, 1\]"),
        ("--gamma=-1", "gamma"),
        ("--kappa=0", "kappa"),
    ],
)
def test_check_with_thresholds_out_of_range_fails_in_one_line(option: str, match: str, run) -> None:
    result = run("check", "anything:build", option)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert re.search(match, result.stderr)


def test_check_a_user_module_and_render_its_report(tmp_path, run) -> None:
    (tmp_path / "my_model.py").write_text(
        textwrap.dedent(
            """
            from saved import testing

            def build():
                x, y = testing.digits()
                model = testing.train_classifier(testing.tiny_mlp(seed=1), x, y, steps=100)
                return model, x[:300], y[:300]
            """
        )
    )
    report_path = tmp_path / "report.json"
    result = run(
        "check",
        "my_model:build",
        "--method",
        "random",
        "--quiet",
        "--json",
        str(report_path),
        cwd=tmp_path,
    )
    assert result.returncode in (0, 1), result.stderr
    data = json.loads(report_path.read_text())
    assert result.returncode == (0 if data["verdicts"]["holds"] else 1)
    assert data["split"]["mode"] == "held-out"
    assert data["n_samples"] == data["split"]["n_evaluation"]
    assert data["split"]["n_evaluation"] + data["split"]["n_decomposition"] == 300
    rendered = run("report", str(report_path), "--html", str(tmp_path / "r.html"))
    assert rendered.returncode == result.returncode
    assert "Decomposition contract (random)" in rendered.stdout
    assert "<html" in (tmp_path / "r.html").read_text().lower()
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    failed = run("report", str(broken))
    assert failed.returncode == 2 and "not a readable report" in failed.stderr


def test_unknown_command_exits_non_zero() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nonsense"])
    assert exit_info.value.code == 2


def test_plan_prints_the_samples_each_bound_needs(capsys) -> None:
    from dataclasses import replace

    from saved import Contract, plan_samples

    assert main(["plan", "--eps", "0.1", "--delta", "0.05", "--expected-dis", "0.02"]) == 0
    out = capsys.readouterr().out
    for bound in ("binomial", "hoeffding"):
        plan = plan_samples(replace(Contract(), bound=bound), 0.02)
        assert (
            f"{bound}{' (chosen)' if bound == 'binomial' else ''}: |B| >= {plan.n_boundary}, "
            f"{plan.n_samples} evaluated samples, {plan.n_with_holdout} in all" in out
        )
    assert main(["plan", "--bound", "hoeffding"]) == 0
    assert "hoeffding (chosen): |B| >= 185, 923 evaluated samples" in capsys.readouterr().out


def test_plan_refuses_an_expected_dis_above_eps(run) -> None:
    result = run("plan", "--eps", "0.05", "--expected-dis", "0.1")
    assert result.returncode == 2
    assert "no sample size passes" in result.stderr
