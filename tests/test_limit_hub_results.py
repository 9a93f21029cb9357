"""What lm-eval and lighteval users reach for first, through the real CLI: `--limit N`, a hub id
for `--model` / `--base` / checkpoints resolved from the local Hugging Face cache (offline here:
a fake cache in a temporary HF_HOME), a `results/step-N.json` per checkpoint, and every family
broken down by slice in the report, `bench compare` and `bench gate`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from plasticity_bench.harness.app.hub import resolve_model
from tests.helpers import cli, rejected

HUB_ID = "someone/tiny-organism"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
MICRO_SLICES = {
    "chain_sum/easy",
    "chain_sum/hard",
    "reverse/easy",
    "sort_letters/easy",
    "affine/easy",
    "string_fn/easy",
}
METRICS = ("score", "stderr", "n", "samples", "pass_at_n")


@contextmanager
def offline_hub(home: Path) -> Iterator[None]:
    """The `bench` fixture's subprocesses see only this Hugging Face cache, and may not download."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(home))
        patch.setenv("HF_HUB_CACHE", str(home / "hub"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def hub(bench, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fake HF cache holding the smoke organism as `someone/tiny-organism` (refs/main → COMMIT),
    and a plain local copy of the same model."""
    built = bench("base", "--preset", "smoke", "-q")
    assert built.returncode == 0, built.stderr
    organism = Path(built.stdout.strip().splitlines()[-1])
    root = tmp_path_factory.mktemp("hub")
    repo = root / "hf" / "hub" / "models--someone--tiny-organism"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(organism, repo / "snapshots" / COMMIT)
    return {
        "home": root / "hf",
        "snapshot": repo / "snapshots" / COMMIT,
        "local": shutil.copytree(organism, root / "local"),
        "root": root,
    }


@pytest.fixture(scope="module")
def sweep(bench, hub: dict[str, Path]) -> Path:
    """`bench eval` of a local checkpoint (step 2) whose start (`--base`) is a hub id, 2 items per slice."""
    out = hub["root"] / "eval"
    with offline_hub(hub["home"]):
        done = bench(
            "eval",
            str(hub["local"]),
            "--steps",
            "2",
            "--base",
            HUB_ID,
            "--suite",
            "micro",
            "--limit",
            "2",
            "--out",
            str(out),
            "-q",
        )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def run_json(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def test_limit_keeps_the_first_n_items_of_every_slice_and_is_recorded(sweep: Path) -> None:
    from plasticity_bench.tasks.suites import load_suite
    from plasticity_bench.tasks.suites.items import load_eval_items

    meta = run_json(sweep)
    assert meta["config"]["eval_per_slice"] == 2
    assert {name: spec["n"] for name, spec in meta["eval_sets"].items()} == dict.fromkeys(MICRO_SLICES, 2)
    records = pd.read_parquet(sweep / "records.parquet")
    per_slice = records.assign(slice=records.task + "/" + records.level).groupby(["step", "slice"]).item_id.nunique()
    assert set(per_slice) == {2} and len(per_slice) == 2 * len(MICRO_SLICES)
    first_two: dict[str, list[str]] = {}
    for item in load_eval_items(load_suite("micro")).items:  # the whole sets, in order: --limit keeps the head of each
        first_two.setdefault(f"{item.task}/{item.level}", []).append(item.id)
    stored = pd.read_parquet(sweep / "eval_items.parquet")
    assert sorted(stored.id) == sorted(i for ids in first_two.values() for i in ids[:2])


def test_limit_is_part_of_the_runs_identity(bench, hub: dict[str, Path], sweep: Path) -> None:
    with offline_hub(hub["home"]):
        again = bench(
            "eval",
            str(hub["local"]),
            "--steps",
            "2",
            "--base",
            HUB_ID,
            "--suite",
            "micro",
            "--limit",
            "3",
            "--out",
            str(sweep),
            "-q",
        )
    rejected(again, "already holds a different run")


def test_hub_id_for_the_base_is_resolved_from_the_offline_cache(sweep: Path, hub: dict[str, Path]) -> None:
    meta = run_json(sweep)
    expected = {"role": "base", "id": HUB_ID, "revision": "main", "commit": COMMIT, "folder": str(hub["snapshot"])}
    assert meta["config"]["hub_models"] == [expected]
    assert meta["config"]["base"] == str(hub["snapshot"].resolve()) and meta["base_model"] == str(hub["snapshot"])
    manifest = json.loads((sweep / "checkpoints" / "manifest.json").read_text())
    assert [(m["step"], m["path"]) for m in manifest] == [
        (0, str(hub["snapshot"].resolve())),
        (2, str(hub["local"].resolve())),
    ]
    assert json.loads((sweep / "results" / "step-000000.json").read_text())["run"]["hub_models"] == [expected]


def test_a_results_file_for_every_checkpoint_with_every_family_and_slice(sweep: Path) -> None:
    meta = run_json(sweep)
    aggregates = pd.read_parquet(sweep / "aggregates.parquet")
    assert sorted(p.name for p in (sweep / "results").iterdir()) == ["step-000000.json", "step-000002.json"]
    for step in (0, 2):
        results = json.loads((sweep / "results" / f"step-{step:06d}.json").read_text())
        assert results["format"] == "plasticity-bench/results" and results["step"] == step
        assert results["run"]["fingerprint"] == meta["fingerprint"] and results["run"]["suite"] == "micro"
        assert (
            results["run"]["limit"] == 2 and results["versions"]["torch"] and results["eval_sets"] == meta["eval_sets"]
        )
        assert set(results["results"]) == {"math", "reasoning", "code"}
        slices = {name: entry for family in results["results"].values() for name, entry in family["slices"].items()}
        assert set(slices) == MICRO_SLICES
        for (family, slice_), row in aggregates[aggregates.step == step].set_index(["family", "slice"]).iterrows():
            shown = results["results"][family] if slice_ == "all" else results["results"][family]["slices"][slice_]
            for metric in METRICS:
                assert shown[metric] == pytest.approx(row[metric], nan_ok=True), (step, family, slice_, metric)
        assert slices["reverse/easy"]["role"] == "held-out" and slices["chain_sum/hard"]["role"] == "target"


def test_bench_score_rewrites_the_results_files(sweep: Path) -> None:
    before = (sweep / "results" / "step-000002.json").read_text()
    (sweep / "results" / "step-000002.json").unlink()
    (sweep / "results" / "step-000000.json").write_text("{}")
    (sweep / "results" / "step-000099.json").write_text("{}")  # a step the run does not have
    done = cli("score", str(sweep))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (sweep / "results").iterdir()) == ["step-000000.json", "step-000002.json"]
    after = json.loads((sweep / "results" / "step-000002.json").read_text())
    assert after["results"] == json.loads(before)["results"]
    assert json.loads((sweep / "results" / "step-000000.json").read_text())["step"] == 0


def test_compare_and_gate_break_held_out_families_down_by_slice(sweep: Path, tmp_path: Path) -> None:
    compared = cli(
        "compare", str(sweep), str(sweep), "--step-a", "0", "--step-b", "2", "--json", str(tmp_path / "compare.json")
    )
    assert compared.returncode == 0, compared.stderr
    gated = cli("gate", "-b", str(sweep), "-c", str(sweep), "--candidate-step", "0")
    assert gated.returncode == 0, gated.stderr
    for text in (compared.stdout, gated.stdout):
        lines = text.splitlines()
        reasoning = next(i for i, line in enumerate(lines) if line.startswith("reasoning "))
        assert lines[reasoning + 1].lstrip().startswith("· reverse/easy") and lines[reasoning + 2].lstrip().startswith(
            "· sort_letters/easy"
        )
        assert any(line.lstrip().startswith("· string_fn/easy") for line in lines)
    assert "(slice: shown, not gated)" in gated.stdout
    by_family = {f["family"]: f for f in json.loads((tmp_path / "compare.json").read_text())["families"]}
    assert [s["slice"] for s in by_family["reasoning"]["slices"]] == ["reverse/easy", "sort_letters/easy"]
    assert all(s["n"] == 2 and "change_low" in s for s in by_family["reasoning"]["slices"])
    verdict = json.loads(cli("gate", "-b", str(sweep), "-c", str(sweep), "--candidate-step", "0", "--json", "-").stdout)
    gate_families = {f["family"]: f for f in verdict["families"]}
    assert [s["slice"] for s in gate_families["code"]["slices"]] == ["affine/easy", "string_fn/easy"]
    assert all(
        len(s["interval"]) == 2 and "verdict" not in s for s in gate_families["code"]["slices"]
    )  # shown, not gated


def test_report_breaks_every_family_down_by_slice(sweep: Path) -> None:
    page = (sweep / "report.html").read_text()
    for family, slice_ in [
        ("reasoning", "reverse/easy"),
        ("reasoning", "sort_letters/easy"),
        ("code", "affine/easy"),
        ("math", "chain_sum/hard"),
    ]:
        assert f"data-family='{family}' data-slice='{slice_}'" in page
    summary = json.loads((sweep / "summary.json").read_text())
    assert {row["slice"] for row in summary} == MICRO_SLICES | {"all"}


def test_bench_run_from_a_hub_model_with_a_limit(bench, hub: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    with offline_hub(hub["home"]):
        done = bench(
            "run", "--method", "sft", "--preset", "smoke", "--model", HUB_ID, "--limit", "2", "--out", str(out), "-q"
        )
    assert done.returncode == 0, done.stderr[-3000:]
    meta = run_json(out)
    assert meta["config"]["model"] == str(hub["snapshot"]) and meta["base_model"] == str(hub["snapshot"])
    assert meta["config"]["model_hub"] == {
        "id": HUB_ID,
        "revision": "main",
        "commit": COMMIT,
        "folder": str(hub["snapshot"]),
    }
    assert meta["config"]["eval_per_slice"] == 2 and {spec["n"] for spec in meta["eval_sets"].values()} == {2}
    steps = [m["step"] for m in json.loads((out / "checkpoints" / "manifest.json").read_text())]
    assert sorted(p.name for p in (out / "results").iterdir()) == [f"step-{step:06d}.json" for step in steps]
    last = json.loads((out / "results" / f"step-{steps[-1]:06d}.json").read_text())
    assert last["run"]["method"] == "sft" and last["run"]["hub_models"][0]["commit"] == COMMIT


def test_an_uncached_hub_id_offline_is_one_line_and_leaves_nothing(bench, hub: dict[str, Path], tmp_path: Path) -> None:
    with offline_hub(hub["home"]):
        evaluated = bench(
            "eval", "someone/not-cached", "--steps", "0", "--suite", "micro", "--out", str(tmp_path / "eval")
        )
        trained = bench("run", "--preset", "smoke", "--model", "someone/not-cached", "--out", str(tmp_path / "run"))
    for done in (evaluated, trained):
        rejected(done, "'someone/not-cached'", "not in the local Hugging Face cache", "HF_HUB_OFFLINE=1")
    assert not (tmp_path / "eval").exists() and not (tmp_path / "run").exists()


def test_a_failed_download_is_one_line(bench, hub: dict[str, Path], tmp_path: Path) -> None:
    """Online but the hub cannot be reached (an endpoint that refuses connections): one line, exit 2."""
    with offline_hub(hub["home"]), pytest.MonkeyPatch.context() as patch:
        patch.delenv("HF_HUB_OFFLINE")
        patch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        done = bench("eval", "someone/not-cached", "--steps", "0", "--suite", "micro", "--out", str(tmp_path / "eval"))
    rejected(done, "'someone/not-cached'", "could not be downloaded from the Hugging Face hub")
    assert not (tmp_path / "eval").exists()


def test_limit_must_be_a_positive_number(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    rejected(cli("run", "--preset", "smoke", "--limit", "0", "--out", out), "--limit", "got 0")
    rejected(
        cli("eval", str(tmp_path), "--steps", "0", "--suite", "micro", "--limit", "-3", "--out", out),
        "--limit",
        "got -3",
    )
    rejected(
        cli("eval", str(tmp_path), "--steps", "0", "--suite", "micro", "--eval-per-slice", "0", "--out", out), "--limit"
    )  # the old name
    assert not (tmp_path / "out").exists()


def test_a_local_folder_wins_over_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "someone" / "tiny-organism").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_model(HUB_ID) == (Path(HUB_ID), None)  # no cache lookup: the folder is the model
    assert resolve_model("/no/such/model") == (Path("/no/such/model"), None)  # not an id: the caller's "does not exist"
