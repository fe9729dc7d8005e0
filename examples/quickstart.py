"""Quick start: class-wise components of a digits classifier and their contract report.

Run with ``.venv/bin/python examples/quickstart.py``.
"""

from __future__ import annotations

import torch
from rich import print

import saved
from saved import testing


def main() -> None:
    x, y = testing.digits()  # 1,797 real 8x8 digits from scikit-learn
    model = testing.train_classifier(testing.tiny_mlp(), x, y, steps=300)

    inputs = saved.as_inputs(x, labels=y)  # a tensor, TensorDataset, DataLoader or dict
    logits = saved.predict_logits(model, inputs)  # model left exactly as it was
    components = saved.ClassComponents(num_classes=10)  # m_k(x) = [F_k, max_{j!=k} F_j]
    decomposed = components.predict(logits)

    # Unmasked components keep every weight: one all-true support row per component.
    n_weights = sum(p.numel() for p in model.parameters())
    supports = torch.ones(components.num_components, n_weights, dtype=torch.bool)
    report = saved.assess(
        saved.Contract(eps=0.1, kappa=0.2),
        logits,
        decomposed,
        supports,
        labels=inputs.labels,
        method="unmasked",
    )
    print(report.summary_line())
    print(report.to_dict()["verdicts"])


if __name__ == "__main__":
    main()
