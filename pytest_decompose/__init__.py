"""pytest-decompose: decompositionality contracts in pytest.

Importing this package (which pytest does for every run through the ``pytest11`` entry point)
imports neither torch nor the engine; they load on first use.
"""

__all__: list[str] = []
