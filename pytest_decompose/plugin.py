"""pytest hooks, options, marker and fixtures of pytest-decompose.

This module is loaded for every pytest run in an environment where the package is installed,
so it must stay light: no torch, no transformers, no engine import at module level. The engine
is imported inside fixtures and hooks, on first use.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from . import _session
from ._session import MARKER_KEYS

RESULTS = pytest.StashKey[list[dict[str, Any]]]()
ENGINE = pytest.StashKey[Any]()
_STATS = pytest.StashKey[dict[str, int]]()  # cache counters merged from xdist workers


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "decomposable(eps=0.1, kappa=0.2, gamma=0.5, eta=0.3, delta=0.05, kappa_margin=None): "
        "the decomposition contract for the assertions inside this test",
    )
    config.stash[RESULTS] = []
    config.stash[_STATS] = {}


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
            cache = Path(cache_provider.mkdir("decompose"))
        config.stash[ENGINE] = Engine(
            cache_dir=cache,
            refresh=config.getoption("decompose_refresh"),
            device=config.getoption("decompose_device"),
            seed=config.getoption("decompose_seed"),
        )
    return config.stash[ENGINE]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    state = _session.TestState(
        nodeid=item.nodeid,
        marker=_session.marker_settings(item),
        engine_factory=lambda: _engine(item.config),
        results=item.config.stash[RESULTS],
        announce=lambda text: _announce(item.config, text),
    )
    token = _session.current.set(state)
    try:
        return (yield)
    finally:
        _session.current.reset(token)
        item.user_properties.extend(state.user_properties)


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
    """The ``saved.Contract`` of this test: its ``decomposable`` marker over the defaults."""
    from saved import Contract

    return Contract(**_session.marker_settings(request.node))


# --------------------------------------------------------------------------- xdist and report


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    results = config.stash[RESULTS]
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand results to the controller
        workeroutput["decompose_results"] = json.dumps(results)
        if ENGINE in config.stash:
            workeroutput["decompose_stats"] = json.dumps(vars(config.stash[ENGINE].stats))
        return
    directory = config.getoption("decompose_report")
    if directory is not None and results:
        from .report import write_reports

        for entry in sorted(results, key=lambda r: str(r["nodeid"])):
            config.hook.pytest_decompose_update_json(config=config, entry=entry)
        write_reports(Path(directory), results, _stats(config))


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent unless xdist is installed
def pytest_testnodedown(node: Any, error: Any) -> None:
    """Controller side of xdist: merge a finished worker's results."""
    output = getattr(node, "workeroutput", {})
    if "decompose_results" in output:
        node.config.stash[RESULTS].extend(json.loads(output["decompose_results"]))
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
    if not results:
        return
    from saved import ContractReport  # results exist: the engine is loaded already

    write = terminalreporter.write_line
    terminalreporter.section("decomposition contracts")
    for entry in results:
        report = ContractReport.from_dict(entry["report"])
        verdict = "holds" if report.holds else "FAILS"
        timing = entry.get("timing", {})
        took = ""
        if timing.get("seconds", 0) > 60:  # a long decomposition: say how long, and how good
            took = f"; decomposed in {timing['seconds'] / 60:.1f} min"  # the estimate was
            if "estimate" in timing:
                took += f" (estimated {timing['estimate'] / 60:.1f})"
        write(f"{verdict:5s} {entry['nodeid']} {report.summary_line()}{took}")
    stats = _stats(config)
    if stats:
        write(
            f"cache: {stats.get('hits', 0)} hits, {stats.get('trained', 0)} decompositions "
            f"computed, {stats.get('unreadable', 0)} unreadable entries recomputed"
        )
    directory = config.getoption("decompose_report")
    if directory is None:
        write("next: add --decompose-report=DIR for a JSON and HTML report of these checks")
    else:
        write(f"next: open {Path(directory) / 'decompose-report.html'}")
