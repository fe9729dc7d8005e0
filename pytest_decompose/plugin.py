"""pytest hooks, options, marker and fixtures of pytest-decompose.

This module is loaded for every pytest run in an environment where the package is installed,
so it must stay light: no torch, no transformers, no engine import at module level. The engine
is imported inside fixtures and hooks, on first use.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from . import _session
from ._session import MARKER_KEYS
from .baseline import DEFAULT_TOLERANCE, DIRECTORY, Slot, baseline_path, stale_baselines

#: decompositions are cached in pytest's cache directory, under ``d/<CACHE_NAME>``
#: (``.pytest_cache/d/decompose`` by default: the path a CI job keeps between runs)
CACHE_NAME = "decompose"

RESULTS = pytest.StashKey[list[dict[str, Any]]]()
ENGINE = pytest.StashKey[Any]()
_STATS = pytest.StashKey[dict[str, int]]()  # cache counters merged from xdist workers
PROJECT = pytest.StashKey[dict[str, dict[str, Any]]]()  # "ini" / "command line" thresholds
_COLLECTED = pytest.StashKey[dict[Path, set[str]]]()  # test file -> its baseline file names
_STALE = pytest.StashKey[set[str]]()  # stale baseline files (merged from xdist workers)
_TOLERANCE = pytest.StashKey[float]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("decompose", "decompositionality contracts (pytest-decompose)")
    group.addoption(
        "--decompose-report",
        action="store",
        nargs="?",
        const=".",
        default=None,
        metavar="DIR",
        help="write decompose-report.json and decompose-report.html to DIR (default: .)",
    )
    group.addoption(
        "--decompose-device",
        action="store",
        default=None,
        metavar="DEVICE",
        help="device for decomposition work, e.g. cpu or cuda:0 (default: the model's)",
    )
    group.addoption(
        "--decompose-seed",
        action="store",
        type=int,
        default=0,
        metavar="SEED",
        help="seed for every random choice of the engine (default: 0)",
    )
    group.addoption(
        "--decompose-no-cache",
        action="store_true",
        default=False,
        help="neither read nor write cached decompositions",
    )
    group.addoption(
        "--decompose-refresh",
        action="store_true",
        default=False,
        help="recompute cached decompositions and overwrite them",
    )
    group.addoption(
        "--decompose-contract",
        action="store",
        default=None,
        metavar="KEY=VALUE,...",
        help="thresholds for this run over the ini's decompose_* keys, e.g. eps=0.05,gamma=0.4 "
        "(a test's own arguments and markers still win)",
    )
    group.addoption(
        "--decompose-update-baseline",
        action="store_true",
        default=False,
        help=f"write each check's figures to {DIRECTORY}/ beside its test file (the baseline "
        "later runs are compared with) and remove stale baselines",
    )
    for key in MARKER_KEYS:
        parser.addini(
            f"decompose_{key}",
            f"the project's contract: {key} of every check that sets none itself",
            default=None,
        )
    parser.addini(
        "decompose_baseline_tolerance",
        "how much worse than its baseline a figure may get before the check fails "
        f"(absolute; default {DEFAULT_TOLERANCE})",
        default=None,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "decomposable(eps=0.1, kappa=0.2, gamma=0.5, eta=0.3, delta=0.05, kappa_margin=None): "
        "the decomposition contract for the assertions inside this test",
    )
    config.stash[RESULTS] = []
    config.stash[_STATS] = {}
    config.stash[_COLLECTED] = {}
    config.stash[_STALE] = set()
    config.stash[PROJECT] = _project_contract(config)
    config.stash[_TOLERANCE] = _tolerance(config)


def _project_contract(config: pytest.Config) -> dict[str, dict[str, Any]]:
    """The ini keys and ``--decompose-contract`` (types checked here; ranges by the contract)."""
    ini: dict[str, Any] = {}
    for key in MARKER_KEYS:
        text = config.getini(f"decompose_{key}")
        if text not in (None, ""):
            try:
                ini[key] = _session.parse_value(key, str(text))
            except ValueError as error:
                raise pytest.UsageError(f"ini decompose_{key}: {error}") from None
    override = config.getoption("decompose_contract")
    try:
        command_line = _session.parse_override(override) if override else {}
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    return {"ini": ini, "command line": command_line}


def _tolerance(config: pytest.Config) -> float:
    text = config.getini("decompose_baseline_tolerance")
    if text in (None, ""):
        return DEFAULT_TOLERANCE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise pytest.UsageError(
            f"ini decompose_baseline_tolerance: expected a number >= 0, got {text!r}"
        )
    return value


def pytest_itemcollected(item: pytest.Item) -> None:
    """Every collected test, before any deselection: which baselines are still owned."""
    path = getattr(item, "path", None)
    if path is not None:
        names = item.config.stash[_COLLECTED].setdefault(Path(path), set())
        names.add(baseline_path(Path(path), item.nodeid).name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker in item.iter_markers("decomposable"):
            unknown = sorted(set(marker.kwargs) - set(MARKER_KEYS))
            if unknown or marker.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.decomposable takes only keyword arguments "
                    f"{', '.join(MARKER_KEYS)}; got unknown {unknown or list(marker.args)}"
                )


def _engine(config: pytest.Config) -> Any:
    """The session's engine, built on first use (this is where torch gets imported)."""
    if ENGINE not in config.stash:
        from .engine import Engine

        cache = None
        cache_provider = getattr(config, "cache", None)  # absent with -p no:cacheprovider
        if not config.getoption("decompose_no_cache") and cache_provider is not None:
            cache = Path(cache_provider.mkdir(CACHE_NAME))
        config.stash[ENGINE] = Engine(
            cache_dir=cache,
            refresh=config.getoption("decompose_refresh"),
            device=config.getoption("decompose_device"),
            seed=config.getoption("decompose_seed"),
        )
    return config.stash[ENGINE]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    config = item.config
    slot = None
    if getattr(item, "path", None) is not None:
        path = baseline_path(Path(item.path), item.nodeid)
        slot = Slot(
            path=path,
            shown=_shown(config, path),
            nodeid=item.nodeid,
            update=config.getoption("decompose_update_baseline"),
            tolerance=config.stash[_TOLERANCE],
        )
    state = _session.TestState(
        nodeid=item.nodeid,
        marker=_session.marker_settings(item),
        engine_factory=lambda: _engine(config),
        results=config.stash[RESULTS],
        announce=lambda text: _announce(config, text),
        project=config.stash[PROJECT],
        baseline=slot,
    )
    token = _session.current.set(state)
    try:
        return (yield)
    finally:
        _session.current.reset(token)
        item.user_properties.extend(state.user_properties)
        if slot is not None:
            slot.save()


def _shown(config: pytest.Config, path: Path) -> str:
    try:
        return str(path.relative_to(config.rootpath))
    except ValueError:
        return str(path)


def _announce(config: pytest.Config, text: str) -> None:
    """A line on the terminal now, during the test, past output capture (the time estimate
    of a long decomposition, so nobody wonders whether the run hangs)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    context = capture.global_and_fixture_disabled() if capture is not None else nullcontext()
    with context:
        reporter.ensure_newline()
        reporter.write_line(text)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def decompose_engine(pytestconfig: pytest.Config) -> Any:
    """The session's :class:`pytest_decompose.engine.Engine` (options, seed, cache)."""
    return _engine(pytestconfig)


@pytest.fixture()
def decompose(decompose_engine: Any) -> Any:
    """``decompose(model, data, **kwargs)``: :func:`saved.decompose` through the session
    engine (its seed, device and cache)."""
    return decompose_engine.decompose


@pytest.fixture()
def decompose_contract(request: pytest.FixtureRequest) -> Any:
    """The ``saved.Contract`` of this test: its ``decomposable`` marker over
    ``--decompose-contract``, over the ini keys, over the defaults."""
    from saved import Contract

    project: dict[str, dict[str, Any]] = request.config.stash[PROJECT]
    layers = dict(project)
    layers["marker"] = _session.marker_settings(request.node)
    return Contract(**_session.resolve(layers)[0])


# --------------------------------------------------------------------------- xdist and report


def _partly_collected(config: pytest.Config) -> set[Path]:
    """Test files named with node ids on the command line (``file.py::test``)."""
    base = config.invocation_params.dir
    return {(base / arg.split("::")[0]).resolve() for arg in config.args if "::" in arg}


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    results = config.stash[RESULTS]
    stale = config.stash[_STALE]
    collected = config.stash[_COLLECTED]
    if collected:
        found = stale_baselines(collected, _partly_collected(config))
        stale.update(_shown(config, path) for path in found)
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand results to the controller
        workeroutput["decompose_results"] = json.dumps(results)
        workeroutput["decompose_stale"] = json.dumps(sorted(stale))
        if ENGINE in config.stash:
            workeroutput["decompose_stats"] = json.dumps(vars(config.stash[ENGINE].stats))
        return
    if stale and config.getoption("decompose_update_baseline"):
        for shown in sorted(stale):
            path = Path(shown) if Path(shown).is_absolute() else config.rootpath / shown
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # the folder, once empty
                path.parent.rmdir()
    directory = config.getoption("decompose_report")
    if directory is not None and results:
        from .report import write_reports

        for entry in sorted(results, key=lambda r: str(r["nodeid"])):
            config.hook.pytest_decompose_update_json(config=config, entry=entry)
        write_reports(Path(directory), results, _stats(config), config.stash[PROJECT])


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent unless xdist is installed
def pytest_testnodedown(node: Any, error: Any) -> None:
    """Controller side of xdist: merge a finished worker's results."""
    output = getattr(node, "workeroutput", {})
    if "decompose_results" in output:
        node.config.stash[RESULTS].extend(json.loads(output["decompose_results"]))
    if "decompose_stale" in output:
        node.config.stash[_STALE].update(json.loads(output["decompose_stale"]))
    if "decompose_stats" in output:
        merged = node.config.stash[_STATS]
        for key, value in json.loads(output["decompose_stats"]).items():
            merged[key] = merged.get(key, 0) + value


def _stats(config: pytest.Config) -> dict[str, int]:
    merged: dict[str, int] = config.stash[_STATS]
    stats = dict(merged)
    if ENGINE in config.stash:
        for key, value in vars(config.stash[ENGINE].stats).items():
            stats[key] = stats.get(key, 0) + value
    return stats


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash[RESULTS]
    found: set[str] = config.stash[_STALE]
    stale = sorted(found)
    if not results and not stale:
        return
    write = terminalreporter.write_line
    terminalreporter.section("decomposition contracts")
    write(_session.project_line(config.stash[PROJECT]))
    if results:
        _summarise_checks(write, config, results)
    _summarise_baselines(write, config, results, stale)
    directory = config.getoption("decompose_report")
    if not results:
        return
    if directory is None:
        write("next: add --decompose-report=DIR for a JSON and HTML report of these checks")
    else:
        write(f"next: open {Path(directory) / 'decompose-report.html'}")


def _summarise_baselines(
    write: Any, config: pytest.Config, results: list[dict[str, Any]], stale: list[str]
) -> None:
    counts: dict[str, int] = {}
    for entry in results:
        status = (entry.get("baseline") or {}).get("status")
        if status is not None:
            counts[status] = counts.get(status, 0) + 1
    if counts:
        order = ("matched", "regressed", "broken", "missing", "written")
        write("baselines: " + ", ".join(f"{counts[k]} {k}" for k in order if k in counts))
        if counts.get("missing"):
            write("  checks without a baseline pass; write them with --decompose-update-baseline")
    if stale:
        removed = config.getoption("decompose_update_baseline")
        write(
            f"stale baselines ({len(stale)}, no collected test owns them; "
            + ("removed):" if removed else "remove with --decompose-update-baseline):")
        )
        for shown in stale:
            write(f"  {shown}")


def _summarise_checks(write: Any, config: pytest.Config, results: list[dict[str, Any]]) -> None:
    from saved import ContractReport  # results exist: the engine is loaded already

    advice = []
    for entry in results:
        report = ContractReport.from_dict(entry["report"])
        advice.append(report.next_step())
        verdict = "holds" if report.holds else "FAILS"
        timing = entry.get("timing", {})
        took = ""
        if timing.get("seconds", 0) > 60:  # a long decomposition: say how long, and how good
            took = f"; decomposed in {timing['seconds'] / 60:.1f} min"  # the estimate was
            if "estimate" in timing:
                took += f" (estimated {timing['estimate'] / 60:.1f})"
        baseline = entry.get("baseline") or {}
        if baseline.get("regressions"):
            verdict = "REGR" if report.holds else verdict
            took += f"; regressed against {baseline['path']}"
        write(f"{verdict:5s} {entry['nodeid']} {report.summary_line()}{took}")
    first = next((line for line in advice if line), None)
    if first is not None:
        write(first)
    stats = _stats(config)
    if stats:
        write(
            f"cache: {stats.get('hits', 0)} hits, {stats.get('trained', 0)} decompositions "
            f"computed, {stats.get('unreadable', 0)} unreadable entries recomputed"
        )
