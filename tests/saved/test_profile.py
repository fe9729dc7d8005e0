"""saved/profile.py: where each component keeps its units, block by block — hand-computed on
a tiny MLP, and carried by evaluate's report into the terminal and the HTML page."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

import saved
from saved import testing
from saved.masking.units import UnitSpace
from saved.profile import BlockRow, Separation, block_of, block_profile, separation
from saved.report import html_page, render_report


@pytest.mark.parametrize(
    ("name", "block"),
    [
        ("layer1.0.conv1", "layer1.0"),
        ("conv1", "conv1"),
        ("features.3.conv.0.0", "features.3"),
        ("features.denseblock1.denselayer1.conv1", "features.denseblock1"),
        ("bert.encoder.layer.2.attention", "bert.encoder.layer.2"),
        ("fc", "fc"),
    ],
)
def test_block_names(name: str, block: str) -> None:
    assert block_of(name) == block


def _hand_masks(space: UnitSpace) -> torch.Tensor:
    """Component 0 keeps units 0-15 of the first layer and 0-7 of the second; component 1
    keeps 8-23 and 0-15."""
    masks = torch.zeros(2, space.num_units, dtype=torch.bool)
    columns = {group.name: part.start for group, part in space.group_slices()}
    first, second = columns["0"], columns["2"]
    masks[0, first : first + 16] = masks[0, second : second + 8] = True
    masks[1, first + 8 : first + 24] = masks[1, second : second + 16] = True
    return masks


def test_profile_by_hand_on_a_tiny_mlp(digits_xy) -> None:
    x, _ = digits_xy
    model = testing.tiny_mlp()  # 64 -> 32 -> 32 -> 10: layers "0" and "2" hold the units
    space = UnitSpace.of(model, x[:2])
    rows = block_profile(space, _hand_masks(space), model)
    assert [(r.block, r.units) for r in rows] == [("0", 32), ("2", 32)]
    assert rows[0].kept == pytest.approx([16 / 32, 16 / 32])
    assert rows[1].kept == pytest.approx([8 / 32, 16 / 32])
    assert rows[0].max_overlap == pytest.approx(8 / 24)  # {8..15} of {0..23}
    assert rows[1].max_overlap == pytest.approx(8 / 16)  # {0..7} of {0..15}
    assert rows[0].mean_overlap == pytest.approx(8 / 24)  # one pair: mean = max
    # overlap rises with depth here: the supports never part ways
    assert separation(rows) is None
    with pytest.raises(ValueError, match=r"supports: expected \[K, 64\]"):
        block_profile(space, torch.ones(2, 5, dtype=torch.bool))


def test_the_report_carries_the_profile_to_the_terminal_and_the_page(digits_xy) -> None:
    x, _ = digits_xy
    model = testing.tiny_mlp()
    decomposition = saved.decompose(model, x[:300], method="random", progress=False)
    report = saved.evaluate(model, decomposition, x[300:600])
    assert isinstance(decomposition.space, UnitSpace)
    expected = block_profile(decomposition.space, decomposition.supports, model)
    assert report.blocks == expected
    parted = separation(expected)
    assert report.separation == parted
    data = report.to_dict()
    assert data["blocks"] == [row.to_dict() for row in expected]
    assert data["separation"] == (parted.to_dict() if parted is not None else None)
    again = saved.ContractReport.from_json(report.to_json())
    assert again.blocks == report.blocks and again.separation == report.separation
    # a version-4 report kept the profile under "extra": it is read into the fields
    older = {**data, "version": 4, "blocks": [], "separation": None}
    older["extra"] = {**data["extra"], "blocks": data["blocks"], "separation": data["separation"]}
    old = saved.ContractReport.from_dict(older)
    assert old.blocks == report.blocks and old.separation == report.separation
    assert "blocks" not in old.extra
    console = Console(record=True, width=140, file=io.StringIO())
    console.print(render_report(report))
    text = console.export_text()
    assert "Kept per block" in text and "0.50 (0)" in text  # one quota per group: 1 - s
    page = html_page([("t", report)])
    assert 'aria-label="kept share per block"' in page
    assert 'aria-label="overlap by depth"' in page and page.count("<polyline") == 2
    assert page.count("kept</title>") == 2 * 10  # 2 blocks x 10 components
    unstructured = saved.decompose(model, x[:300], method="wanda", progress=False)
    assert saved.evaluate(model, unstructured, x[300:600]).blocks == []


def test_mean_overlap_and_the_depth_where_supports_part_ways(digits_xy) -> None:
    """Three components on the 32-32 MLP. Layer "0": all keep units 0-15 (Jaccard 1 for each
    of the 3 pairs). Layer "2": component 0 keeps 0-15, component 1 keeps 8-23, component 2
    keeps 16-31: pairs (0,1) 8/24, (0,2) 0/32, (1,2) 8/24 -> mean (1/3 + 0 + 1/3) / 3 = 2/9,
    max 1/3. The mean drops by 1 - 2/9 = 7/9 at layer "2"."""
    x, _ = digits_xy
    model = testing.tiny_mlp()
    space = UnitSpace.of(model, x[:2])
    columns = {group.name: part.start for group, part in space.group_slices()}
    first, second = columns["0"], columns["2"]
    masks = torch.zeros(3, space.num_units, dtype=torch.bool)
    masks[:, first : first + 16] = True
    for k, start in enumerate((0, 8, 16)):
        masks[k, second + start : second + start + 16] = True
    rows = block_profile(space, masks, model)
    assert rows[0].mean_overlap == pytest.approx(1.0)
    assert rows[1].mean_overlap == pytest.approx(2 / 9)
    assert rows[1].max_overlap == pytest.approx(1 / 3)
    parted = separation(rows)
    assert parted == Separation("2", 1, pytest.approx(1.0), pytest.approx(2 / 9))
    assert parted.drop == pytest.approx(7 / 9)


def test_separation_takes_the_largest_drop_and_the_earliest_on_ties() -> None:
    def row(name: str, mean: float) -> BlockRow:
        return BlockRow(name, 4, [0.5, 0.5], mean, mean)

    means = [("a", 0.5), ("b", 0.375), ("c", 0.5), ("d", 0.25), ("e", 0.5), ("f", 0.25)]
    parted = separation([row(n, m) for n, m in means])
    assert parted is not None and (parted.block, parted.depth) == ("d", 3)  # f drops 0.25 too
    assert parted.drop == pytest.approx(0.25)
    assert separation([row("a", 0.5)]) is None
    assert separation([row("a", 0.1), row("b", 0.2)]) is None
