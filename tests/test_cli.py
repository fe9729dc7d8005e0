"""saved/cli.py: the demo (the README's main job) and error handling."""

from __future__ import annotations

import re

import pytest

from saved.cli import main


def test_demo_reports_zero_disagreement_for_unmasked_components(
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    accuracy = float(re.search(r"training accuracy (\d\.\d+)", out).group(1))
    assert accuracy > 0.9
    semantic = re.search(r"semantic\s+│\s+(\d\.\d+) \+ (\d\.\d+) = (\d\.\d+)", out)
    assert semantic is not None, out
    assert float(semantic.group(1)) == 0.0
    assert "Contract fails: structural, reduction" in out


def test_unknown_command_exits_non_zero(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nonsense"])
    assert exit_info.value.code == 2
