"""End to end through the real `bench` CLI on the smoke preset (tiny organism, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from plasticity_bench.harness.core.provenance import weights_digest
from plasticity_bench.harness.store import read_manifest
from tests.helpers import cli, rejected


def test_run_writes_every_stage_of_the_pipeline(smoke_run: Path) -> None:
    meta = json.loads((smoke_run / "run.json").read_text())
    assert meta["method"] == "rps" and meta["seed"] == 0 and meta["config"]["steps"] == 4
    assert meta["config"]["lr"] == 1e-3  # no lr given: the method's default η, recorded resolved
    assert all(meta["stages"][s]["done"] for s in ("train", "generate", "score", "report"))
    assert {"torch", "transformers", "reasoning-gym"} <= set(meta["provenance"]["packages"])
    assert "commit" in meta["provenance"]["git"]
    assert meta["provenance"]["cpu"]["torch_capability"] in {
        "DEFAULT",
        "AVX2",
        "AVX512",
        "ZVECTOR",
        "NEON",
        "SVE256",
        "VSX",
    }
    assert (
        meta["base_model_sha256"] == weights_digest(Path(meta["base_model"])) and len(meta["base_model_sha256"]) == 64
    )
    assert set(meta["eval_sets"]) == {
        "chain_sum/easy",
        "chain_sum/hard",
        "reverse/easy",
        "sort_letters/easy",
        "affine/easy",
        "string_fn/easy",
    }
    assert all(len(s["sha256"]) == 64 and s["n"] == 4 for s in meta["eval_sets"].values())

    manifest = read_manifest(smoke_run / "checkpoints")
    assert [(r.step, r.stage) for r in manifest] == [(0, "start"), (2, "easy"), (4, "hard")]
    assert manifest[2].examples_seen == 4 * 4 and manifest[1].loss > 0
    assert manifest[2].lr < manifest[1].lr  # stage 2 runs at 0.1·η
    for record in manifest:
        assert (smoke_run / record.path / "model.safetensors").is_file()
        assert (smoke_run / record.path / "tokenizer.json").is_file()

    items = pd.read_parquet(smoke_run / "eval_items.parquet")
    records = pd.read_parquet(smoke_run / "records.parquet")
    assert len(records) == len(items) * len(manifest)
    assert set(records.columns) >= {"item_id", "family", "output", "score", "correct", "step"}
    aggregates = pd.read_parquet(smoke_run / "aggregates.parquet")
    whole = aggregates[aggregates.slice == "all"]
    assert set(whole.step) == {0, 2, 4} and set(whole.family) == {"math", "reasoning", "code"}
    for row in whole.itertuples():  # aggregates agree with the per-item records
        group = records[(records.step == row.step) & (records.family == row.family)]
        assert row.n == len(group) and row.score == pytest.approx(100 * group.correct.mean())

    report = (smoke_run / "report.html").read_text()
    assert "data:image/png;base64," in report and "Forgetting curves" in report
    assert (
        "base model weights sha256" in report and meta["base_model_sha256"] in report
    )  # the full hash is the cell's title
    assert f"{meta['provenance']['cpu']['torch_capability']}</td>" in report
    assert f"<th>base model source</th><td>{meta['base_model_source']}</td>" in report  # smoke: pre-trained
    assert (smoke_run / "forgetting_curves.png").stat().st_size > 10_000


def test_same_seed_gives_the_same_numbers(bench, smoke_run: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    done = bench("run", "--method", "rps", "--preset", "smoke", "--out", str(again), "-q")
    assert done.returncode == 0, done.stderr
    first = pd.read_parquet(smoke_run / "records.parquet")
    second = pd.read_parquet(again / "records.parquet")
    pd.testing.assert_frame_equal(first, second)
    w1 = load_file(smoke_run / "checkpoints/step-000004/model.safetensors")
    w2 = load_file(again / "checkpoints/step-000004/model.safetensors")
    assert all((w1[k] == w2[k]).all() for k in w1)


def test_gate_and_compare_note_runs_that_started_from_other_weights(bench, smoke_run: Path, tmp_path: Path) -> None:
    """Another organism (here another pre-training seed; in practice another CPU, whose float
    kernels pre-train the organism to other weights) makes a difference the code change did not:
    the gate says so, and so does the baseline file."""
    config = tmp_path / "other-organism.yaml"
    config.write_text("organism: {seed: 1}\n")
    other = tmp_path / "other"
    assert (
        bench(
            "run", "--method", "rps", "--preset", "smoke", "--config", str(config), "--out", str(other), "-q"
        ).returncode
        == 0
    )
    baseline = tmp_path / "baseline.json"
    assert bench("export-baseline", str(smoke_run), "-o", str(baseline)).returncode == 0
    assert (
        json.loads(baseline.read_text())["base_model_sha256"]
        == json.loads((smoke_run / "run.json").read_text())["base_model_sha256"]
    )

    same = json.loads(bench("gate", "-b", str(baseline), "-c", str(smoke_run), "--json", "-").stdout)
    assert same["same_start"] is True  # (4 items a family: the verdict itself is inconclusive)
    gated = bench("gate", "-b", str(baseline), "-c", str(other))
    assert gated.returncode in (0, 1) and "started from different model weights" in gated.stdout, (
        gated.stdout + gated.stderr
    )
    compared = bench("compare", str(smoke_run), str(other), "--json", str(tmp_path / "compare.json"))
    assert compared.returncode == 0 and "started from different model weights" in compared.stdout, (
        compared.stdout + compared.stderr
    )
    assert json.loads((tmp_path / "compare.json").read_text())["same_start"] is False


def test_rps_and_eps_share_the_stage_one_checkpoint(bench, smoke_run: Path, tmp_path: Path) -> None:
    eps = tmp_path / "eps"
    assert bench("run", "--method", "eps", "--preset", "smoke", "--out", str(eps), "-q").returncode == 0
    rps_stage1 = load_file(smoke_run / "checkpoints/step-000002/model.safetensors")
    eps_stage1 = load_file(eps / "checkpoints/step-000002/model.safetensors")
    assert all((rps_stage1[k] == eps_stage1[k]).all() for k in rps_stage1)
    rps_end = load_file(smoke_run / "checkpoints/step-000004/model.safetensors")
    eps_end = load_file(eps / "checkpoints/step-000004/model.safetensors")
    assert any((rps_end[k] != eps_end[k]).any() for k in rps_end)  # stage 2 differs: η vs 0.1·η


def test_sft_runs_and_methods_are_listed(bench, tmp_path: Path) -> None:
    done = bench("run", "--method", "sft", "--preset", "smoke", "--out", str(tmp_path / "sft"), "-q")
    assert done.returncode == 0, done.stderr
    assert [r.stage for r in read_manifest(tmp_path / "sft" / "checkpoints")] == ["start", "hard", "hard"]
    listing = bench("methods").stdout
    for method in ("sft", "rps", "eps"):
        assert any(line.startswith(method) and len(line.split()) > 3 for line in listing.splitlines())
    defaults = {line.split()[0]: line.split()[1:3] for line in listing.splitlines()[1:]}
    assert defaults["sft"] == ["0.0003", "300"] and defaults["grpo"] == [
        "0.0001",
        "600",
    ]  # each method's own η and run length


def test_rescoring_and_rereporting_do_not_regenerate(bench, smoke_run: Path) -> None:
    generations = sorted((smoke_run / "generations").glob("*.parquet"))
    stamps = [f.stat().st_mtime_ns for f in generations]
    records_before = pd.read_parquet(smoke_run / "records.parquet")
    done = bench("score", str(smoke_run))
    assert done.returncode == 0, done.stderr
    assert [f.stat().st_mtime_ns for f in generations] == stamps
    pd.testing.assert_frame_equal(records_before, pd.read_parquet(smoke_run / "records.parquet"))
    report = smoke_run / "report.html"
    before = report.stat().st_mtime_ns
    assert bench("report", str(smoke_run)).returncode == 0
    assert report.stat().st_mtime_ns > before


def test_rerunning_into_the_same_folder_resumes_instead_of_retraining(bench, smoke_run: Path) -> None:
    checkpoint = smoke_run / "checkpoints/step-000004/model.safetensors"
    stamp = checkpoint.stat().st_mtime_ns
    done = bench("run", "--method", "rps", "--preset", "smoke", "--out", str(smoke_run), "-q")
    assert done.returncode == 0, done.stderr
    assert checkpoint.stat().st_mtime_ns == stamp


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written
# (in-process through the real entry point, except the first, which checks the console script's exit status)


def test_unknown_method_lists_the_known_ones(bench, tmp_path: Path) -> None:
    out = tmp_path / "x"
    rejected(
        bench("run", "--method", "magic", "--preset", "smoke", "--out", str(out)),
        "unknown method 'magic'",
        "dpo, eps, grpo, l2sp, pcr, replay, rps, sft, spot",
    )
    assert not out.exists()


def test_missing_model_folder(tmp_path: Path) -> None:
    out = tmp_path / "x"
    rejected(cli("run", "--model", str(tmp_path / "nope"), "--out", str(out)), "not a Hugging Face model folder")
    assert not out.exists()


def test_malformed_config_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("steps: [1,\n")
    out = tmp_path / "x"
    rejected(cli("run", "--config", str(config), "--out", str(out)), "not valid YAML/JSON")
    assert not out.exists()


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_non_positive_step_count(tmp_path: Path, steps: str) -> None:
    out = tmp_path / "x"
    rejected(cli("run", "--steps", steps, "--preset", "smoke", "--out", str(out)), "steps must be positive")
    assert not out.exists()


def test_output_folder_holding_a_different_run(smoke_run: Path) -> None:
    before = sorted(p.relative_to(smoke_run) for p in smoke_run.rglob("*"))
    run_json = (smoke_run / "run.json").read_text()
    rejected(
        cli("run", "--method", "sft", "--preset", "smoke", "--out", str(smoke_run)), "already holds a different run"
    )
    assert sorted(p.relative_to(smoke_run) for p in smoke_run.rglob("*")) == before
    assert (smoke_run / "run.json").read_text() == run_json


def test_output_folder_with_unrelated_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    rejected(cli("run", "--preset", "smoke", "--out", str(tmp_path)), "holds no run")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_scoring_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    rejected(cli("score", str(tmp_path)), "is not a run folder")
    rejected(cli("report", str(tmp_path)), "is not a run folder")
