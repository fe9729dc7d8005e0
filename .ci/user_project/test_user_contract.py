"""A user's test file: the plugin as it is used from an installed wheel (no repository)."""

import pytest

from pytest_decompose import ContractViolation, assert_decomposable
from saved import LBMaskConfig, testing

X, Y = testing.digits()
MODEL = testing.train_classifier(testing.tiny_mlp(hidden=(64, 64)), X, Y, steps=200)
QUICK = LBMaskConfig(steps=60, batch_size=64)


@pytest.mark.decomposable(eps=0.9, gamma=0.9, eta=0.3)
def test_a_lenient_contract_holds(decompose_contract):
    assert decompose_contract.eps == 0.9
    report = assert_decomposable(MODEL, X, labels=Y, lbmask=QUICK)
    assert report.holds and report.min_prune >= 0.3


def test_a_strict_contract_names_the_failed_axis():
    with pytest.raises(ContractViolation, match="semantic") as failure:
        assert_decomposable(MODEL, X, eps=0.001, gamma=1.0, method="random")
    assert failure.value.report.semantic_holds is False


def test_the_strategies_module_imports():
    from pytest_decompose import strategies

    assert callable(strategies.find_counterexample)
