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
        assert re.search(rf"{axis}\s+│\s+[\d.+ =]+│.*│\s+(holds|FAILS)", out), axis
    report = json.loads(out_json.read_text())
    assert report["method"] == "lbmask"
    assert report["verdicts"]["min_prune"] == pytest.approx(0.5)
    assert report["n_boundary"] == 359  # floor(0.2 * 1797 + 1/2)


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "saved.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_check_with_a_bad_import_path_fails_in_one_line() -> None:
    result = _run("check", "no_such_module_here:build")
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
def test_check_with_thresholds_out_of_range_fails_in_one_line(option: str, match: str) -> None:
    result = _run("check", "anything:build", option)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert re.search(match, result.stderr)


def test_check_a_user_module_and_render_its_report(tmp_path) -> None:
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
    result = _run(
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
    assert data["n_samples"] == 300
    rendered = _run("report", str(report_path), "--html", str(tmp_path / "r.html"))
    assert rendered.returncode == result.returncode
    assert "Decomposition contract (random)" in rendered.stdout
    assert "<html" in (tmp_path / "r.html").read_text().lower()
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    failed = _run("report", str(broken))
    assert failed.returncode == 2 and "not a readable report" in failed.stderr


def test_unknown_command_exits_non_zero() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nonsense"])
    assert exit_info.value.code == 2
