"""Running the benchmark scripts in their smoke mode, inside the test process.

A script run here is the script run as ``python benchmarks/SCRIPT ARGS`` from the repository
root: the same ``__main__`` code, arguments, working folder, import path and environment, only
without a new interpreter. That saves importing torch, transformers and torchvision again for
each of the twenty runs (seconds each); a script that starts processes of its own (torchrun, a
child that measures its peak memory, pytest on the examples) still starts them.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: ``script_stdout(script, *args, env=None)``: what a script printed on stdout
ScriptStdout = Callable[..., str]
#: ``run_script(script, *args, env=None)``: the JSON object a script printed last
RunScript = Callable[..., dict]


@pytest.fixture
def script_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> ScriptStdout:
    def run(script: str, *args: str, env: dict[str, str] | None = None) -> str:
        return _run_main(monkeypatch, capsys, script, *args, env=env)

    return run


@pytest.fixture
def run_script(script_stdout: ScriptStdout) -> RunScript:
    def run(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
        return json.loads(script_stdout(script, *args, env=env).strip().splitlines()[-1])

    return run


def _run_main(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    script: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``script`` (a path from the repository root) as ``__main__`` with ``args``; return
    what it printed on stdout. A non-zero exit is an error, as ``check=True`` made it."""
    path = ROOT / script
    capsys.readouterr()  # what the test printed before is not the script's
    with monkeypatch.context() as patch:
        patch.chdir(ROOT)
        patch.syspath_prepend(str(path.parent))  # its sibling imports (models, generated)
        patch.setattr(sys, "argv", [str(path), *args])
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        try:
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as stop:
            if stop.code not in (None, 0):
                captured = capsys.readouterr()
                raise AssertionError(
                    f"{script} {' '.join(args)} exited with {stop.code}:\n{captured.err[-3000:]}"
                ) from stop
    return capsys.readouterr().out


@pytest.fixture(scope="session")
def smoke_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of smoke-trained benchmark models for the whole session, shared by the xdist
    workers: every script that needs, say, the smoke MiniLM reads the one the first script
    trained. A model's file name is its recipe's digest and files are written atomically, so
    a shared folder cannot mix recipes, and two workers training one model at once both write
    the same weights."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.mktemp("smoke-models")
    shared = tmp_path_factory.getbasetemp().parent / "smoke-models"
    shared.mkdir(exist_ok=True)
    return shared


@pytest.fixture
def cache(tmp_path: Path, smoke_models: Path) -> Path:
    """A fresh ``$SAVED_CACHE_DIR`` (rows, studies, sweeps start empty) whose ``models`` is
    the session's shared folder."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / "models").symlink_to(smoke_models, target_is_directory=True)
    return root
