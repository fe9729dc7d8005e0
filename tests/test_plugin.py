"""pytest_decompose/plugin.py: the option group, the marker, and a light import."""

from __future__ import annotations

import subprocess
import sys

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
