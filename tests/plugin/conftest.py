"""The plugin's tests run pytest inside pytest (pytester), in this process unless a fresh
process is what a test is about: a run in a subprocess pays seconds to import torch again.

An in-process run restores ``sys.modules`` afterwards, and torch, numpy and scikit-learn
cannot load their native extensions twice in one process; so every module an inner run may
import is imported here first, once, and outlives the inner runs."""

from __future__ import annotations

import importlib
import pkgutil

import sklearn.datasets  # noqa: F401

import pytest_decompose
import saved

for _package in (saved, pytest_decompose):
    for _module in pkgutil.walk_packages(_package.__path__, f"{_package.__name__}."):
        if not _module.name.endswith(".__main__"):  # that one runs the command line
            importlib.import_module(_module.name)
