"""pytest-decompose: decompositionality contracts in pytest.

Importing this package (which pytest does for every run through the ``pytest11`` entry point)
imports neither torch nor the engine; they load on first use.
"""

from typing import Any

import pytest

pytest.register_assert_rewrite("pytest_decompose.assertions")

__all__ = ["ContractViolation", "assert_decomposable"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import assertions

        return getattr(assertions, name)
    raise AttributeError(f"module 'pytest_decompose' has no attribute {name!r}")
