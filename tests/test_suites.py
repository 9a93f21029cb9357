"""Real benchmarks in the run: a user's own suite YAML (GSM8K- and MATH-500-shaped files,
HumanEval, a local lm-eval task) through the real CLI on a small model with a chat template;
`bench eval` on any trainer's checkpoints; every bad input one line and exit 2."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from plasticity_bench.harness.app.organism import OrganismConfig
from tests.chat_model import build_chat_model
from tests.conftest import require_vllm
from tests.helpers import cli, cli_with_cache, rejected
from tests.suite_files import GSM8K_ROWS, write_jsonl, write_suite

pytestmark = pytest.mark.xdist_group("suites")  # the module's shared runs are built once, on one worker

SLICES = {"gsm8k/test", "math500/test", "humaneval/test", "sums/test"}


def run_cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    return cli_with_cache(cache, *args, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory, bench_cache: Path) -> dict[str, Path]:
    """The suite, the chat model, and two smoke SFT runs (seeds 0 and 1) on it."""
    root = tmp_path_factory.mktemp("own-suite")
    paths = {
        "suite": write_suite(root / "suite"),
        "model": build_chat_model(root / "model", head_dim=32, max_positions=4096),
    }
    for seed in (0, 1):
        out = root / f"sft-seed{seed}"
        done = run_cli(
            bench_cache,
            "run",
            "--model",
            str(paths["model"]),
            "--suite",
            str(paths["suite"]),
            "--method",
            "sft",
            "--preset",
            "smoke",
            "--seed",
            str(seed),
            "--out",
            str(out),
            "-q",
        )
        assert done.returncode == 0, done.stderr[-3000:]
        paths[f"run{seed}"] = out
    return paths


@pytest.mark.e2e
def test_own_suite_writes_records_for_every_set_at_every_checkpoint(own: dict[str, Path]) -> None:
    records = pd.read_parquet(own["run0"] / "records.parquet")
    per_step = records.assign(slice=records.task + "/" + records.level).groupby("step").slice.agg(set)
    assert len(per_step) == 3 and all(slices == SLICES for slices in per_step)
    math500 = records[records.task == "math500"]
    assert set(math500.groupby(["step", "item_id"]).size()) == {2}  # n = 2 samples per item, one record each
    aggregates = pd.read_parquet(own["run0"] / "aggregates.parquet")
    whole = aggregates[aggregates.slice == "all"]
    assert set(whole.family) == {"grade-school", "competition", "programs", "sums"}
    assert (whole[whole.family == "competition"].samples == 2).all()
    assert (
        whole[whole.family == "programs"].reliability.notna().all()
        and whole[whole.family == "sums"].reliability.isna().all()
    )
    meta = json.loads((own["run0"] / "run.json").read_text())
    assert meta["suite_sha256"] == hashlib.sha256(own["suite"].read_bytes()).hexdigest()
    assert (
        meta["suite_spec"]["target_slice"] == "gsm8k/test" and meta["suite_spec"]["family_order"][0] == "grade-school"
    )


@pytest.mark.e2e
def test_stored_prompts_are_the_chat_template_and_what_the_model_saw(own: dict[str, Path]) -> None:
    prompts = pd.read_parquet(own["run0"] / "prompts.parquet").set_index("item_id").prompt
    items = pd.read_parquet(own["run0"] / "eval_items.parquet").set_index("id")
    tokenizer = AutoTokenizer.from_pretrained(own["model"])
    gsm8k = items[items.task == "gsm8k"]
    for item_id, item in gsm8k.iterrows():
        messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": item.prompt}]
        expected = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        assert prompts[item_id] == expected and expected.endswith("<think>\n\n</think>\n\n")
    humaneval = items[items.task == "humaneval"]
    assert all(prompts[i] == item.prompt for i, item in humaneval.iterrows())  # this set asked for raw text
    assert len(prompts) == len(items)


@pytest.mark.e2e
def test_report_shows_the_suites_own_families_and_target(own: dict[str, Path]) -> None:
    page = (own["run0"] / "report.html").read_text()
    for family in ("grade-school", "competition", "programs", "sums"):
        assert f"data-family='{family}'" in page or f'data-family="{family}"' in page, family
    assert "gsm8k/test" in page and "the training target (GSM8K-shaped)" in page
    assert "Published numbers" in page and "A paper&#x27;s model" in page and "42.5" in page
    assert "chain_sum" not in page  # nothing of the micro suite leaks in


@pytest.mark.e2e
def test_gate_and_compare_work_on_two_runs_of_the_suite(own: dict[str, Path], bench_cache: Path) -> None:
    gate = run_cli(bench_cache, "gate", "-b", str(own["run0"]), "-c", str(own["run1"]), "--json", "-")
    assert gate.returncode in (0, 1), gate.stderr
    verdict = json.loads(gate.stdout)
    assert [f["family"] for f in verdict["families"]] == ["grade-school", "competition", "programs", "sums"]
    compare = run_cli(bench_cache, "compare", str(own["run0"]), str(own["run1"]))
    assert compare.returncode == 0 and "grade-school" in compare.stdout, compare.stderr


@pytest.mark.e2e
def test_bench_eval_of_the_runs_checkpoints_repeats_its_greedy_records(
    own: dict[str, Path], bench_cache: Path, tmp_path: Path
) -> None:
    """The same checkpoints scored by `bench eval` give the same greedy outputs as the run's own stage."""
    checkpoints = own["run0"] / "checkpoints"
    out = tmp_path / "eval"
    done = run_cli(
        bench_cache,
        "eval",
        str(checkpoints / "step-000000"),
        str(checkpoints / "step-000004"),
        "--steps",
        "0,4",
        "--suite",
        str(own["suite"]),
        "--eval-per-slice",
        "4",
        "--out",
        str(out),
        "-q",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    mine, theirs = pd.read_parquet(out / "records.parquet"), pd.read_parquet(own["run0"] / "records.parquet")
    assert sorted(mine.step.unique()) == [0, 4]
    greedy = ["gsm8k", "humaneval", "sums"]
    key = ["item_id", "step", "sample"]
    a = mine[mine.task.isin(greedy)].set_index(key).sort_index()
    b = theirs[theirs.task.isin(greedy) & theirs.step.isin([0, 4])].set_index(key).sort_index()
    assert a.output.equals(b.output) and a.correct.equals(b.correct)
    assert (out / "report.html").is_file() and json.loads((out / "run.json").read_text())["method"] == "eval"


@pytest.mark.e2e
def test_bench_eval_on_vllm_uses_one_engine_for_the_sweep(
    own: dict[str, Path], bench_cache: Path, tmp_path: Path
) -> None:
    require_vllm()
    out = tmp_path / "eval-vllm"
    done = run_cli(
        bench_cache,
        "eval",
        str(own["run0"] / "checkpoints" / "step-000000"),
        str(own["run0"] / "checkpoints" / "step-000002"),
        str(own["run0"] / "checkpoints" / "step-000004"),
        "--steps",
        "0,2,4",
        "--suite",
        str(own["suite"]),
        "--eval-per-slice",
        "4",
        "--backend",
        "vllm",
        "--out",
        str(out),
        "-q",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["backend"] == "vllm" and meta["engines_started"] == 1
    records = pd.read_parquet(out / "records.parquet")
    assert set((records.task + "/" + records.level).unique()) == SLICES and sorted(records.step.unique()) == [0, 2, 4]


# ---------------------------------------------------------------- bench eval of other trainers' sweeps


@pytest.fixture(scope="module")
def organism_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_sweep import save_organism

    config = OrganismConfig(
        hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, max_positions=128
    )
    return save_organism(tmp_path_factory.mktemp("organism") / "base", config)


@pytest.mark.e2e
def test_bench_eval_on_a_transformers_trainer_sweep(organism_base: Path, bench_cache: Path, tmp_path: Path) -> None:
    from tests.test_sweep import train

    run = tmp_path / "trainer-out"
    train(AutoModelForCausalLM.from_pretrained(organism_base), AutoTokenizer.from_pretrained(organism_base), run)
    out = tmp_path / "eval"
    done = run_cli(
        bench_cache,
        "eval",
        str(run),
        "--base",
        str(organism_base),
        "--suite",
        "micro",
        "--eval-per-slice",
        "4",
        "--out",
        str(out),
        "-q",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = pd.read_parquet(out / "records.parquet")
    assert sorted(records.step.unique()) == [0, 2, 4] and len(records) == 3 * 6 * 4
    manifest = json.loads((out / "checkpoints" / "manifest.json").read_text())
    assert [Path(r["path"]) for r in manifest] == [
        organism_base.resolve(),
        (run / "checkpoint-2").resolve(),
        (run / "checkpoint-4").resolve(),
    ]


@pytest.mark.e2e
def test_bench_eval_on_a_peft_lora_sweep(organism_base: Path, bench_cache: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from tests.test_sweep import train

    run = tmp_path / "lora-out"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(organism_base),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    train(model, AutoTokenizer.from_pretrained(organism_base), run)
    out = tmp_path / "eval"
    done = run_cli(
        bench_cache,
        "eval",
        str(run),
        "--base",
        str(organism_base),
        "--suite",
        "micro",
        "--eval-per-slice",
        "4",
        "--out",
        str(out),
        "-q",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert [(p["step"], p["kind"]) for p in meta["sweep"]] == [(0, "model"), (2, "lora"), (4, "lora")]
    assert (out / "merged" / "step-000002" / "model.safetensors").is_file()
    assert sorted(pd.read_parquet(out / "records.parquet").step.unique()) == [0, 2, 4]


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing left behind

GOOD_SET = (
    "{family: math, role: target, source: {kind: file, path: data.jsonl, fields: {prompt: question, answer: answer}}, "
    "scorer: numeric}"
)


def suite_with(tmp_path: Path, eval_set: str, rows: list[dict] | None = None) -> Path:
    write_jsonl(tmp_path / "data.jsonl", [{"question": "1+1?", "answer": "2"}] if rows is None else rows)
    path = tmp_path / "bad-suite.yaml"
    train = "{source: {kind: file, path: data.jsonl, fields: {prompt: question, answer: answer}}, scorer: numeric}"
    path.write_text(f"name: bad\neval:\n  - {eval_set}\ntrain:\n  easy: {train}\n  hard: {train}\n")
    return path


@pytest.mark.parametrize(
    ("eval_set", "rows", "fragments"),
    [
        (
            "{family: math, role: target, source: {kind: spreadsheet, path: data.jsonl}}",
            None,
            ("unknown source kind 'spreadsheet'", "file"),
        ),
        (
            "{family: math, role: target, source: {kind: file, path: data.jsonl}, scorer: numeric}",
            None,
            ("needs 'fields'",),
        ),
        (
            "{family: math, role: target, source: {kind: file, path: data.jsonl, fields: {prompt: question}}, "
            "scorer: numeric}",
            None,
            ("field mapping lacks 'answer'",),
        ),
        (
            "{family: math, role: target, source: {kind: file, path: missing.jsonl, "
            "fields: {prompt: question, answer: answer}}, scorer: numeric}",
            None,
            ("missing.jsonl does not exist",),
        ),
        (GOOD_SET.replace("numeric", "telepathy"), None, ("unknown scorer 'telepathy'", "math_verify")),
        (GOOD_SET, [], ("no items",)),
        (GOOD_SET.replace("answer: answer}", "answer: solution}"), None, ("column 'solution'", "question")),
    ],
)
def test_bad_suite_files_are_one_line_errors(
    tmp_path: Path, eval_set: str, rows: list[dict] | None, fragments: tuple[str, ...]
) -> None:
    suite = suite_with(tmp_path, eval_set, rows)
    out = tmp_path / "run"
    done = cli(
        "run",
        "--preset",
        "smoke",
        "--suite",
        str(suite),
        "--model",
        str(build_model_once(tmp_path)),
        "--out",
        str(out),
        "-q",
    )
    rejected(done, *fragments)
    assert not out.exists()


def build_model_once(tmp_path: Path) -> Path:
    return build_chat_model(tmp_path / "model", head_dim=16)


@pytest.mark.e2e
def test_hub_dataset_not_available_offline(tmp_path: Path, bench_cache: Path) -> None:
    hub_set = (
        "{family: math, role: target, source: {kind: hub, dataset: nobody/no-such-dataset, "
        "fields: {prompt: q, answer: a}}, scorer: numeric}"
    )
    suite = suite_with(tmp_path, hub_set)
    out = tmp_path / "run"
    done = run_cli(
        bench_cache,
        "run",
        "--preset",
        "smoke",
        "--suite",
        str(suite),
        "--model",
        str(build_model_once(tmp_path)),
        "--out",
        str(out),
        "-q",
    )
    rejected(done, "nobody/no-such-dataset", "is not available here", "kind: file")  # type: ignore[arg-type]
    assert not out.exists()


@pytest.fixture()
def two_models(tmp_path: Path) -> tuple[Path, Path]:
    from tests.test_sweep import save_organism

    small = OrganismConfig(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, max_positions=128
    )
    wide = OrganismConfig(
        hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, max_positions=128
    )
    return save_organism(tmp_path / "small", small), save_organism(tmp_path / "wide", wide)


def test_bench_eval_bad_checkpoints(tmp_path: Path, two_models: tuple[Path, Path]) -> None:
    small, wide = two_models
    out = tmp_path / "eval"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((small / "config.json").read_text())
    rejected(cli("eval", str(tmp_path / "empty"), "--steps", "0", "--suite", "micro", "--out", str(out)), "no weights")
    assert not out.exists()
    rejected(
        cli("eval", str(small), str(wide), "--steps", "0,1", "--suite", "micro", "--out", str(out)), "architecture"
    )
    assert not out.exists()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps(
            {
                "base_model_name_or_path": "/no/such/base",
                "peft_type": "LORA",
                "r": 4,
                "lora_alpha": 8,
                "target_modules": ["q_proj"],
            }
        )
    )
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    rejected(cli("eval", str(adapter), "--steps", "1", "--suite", "micro", "--out", str(out)), "/no/such/base")
    assert not out.exists()
    rejected(
        cli("eval", str(small), "--steps", "0", "--suite", "no-such-suite", "--out", str(out)),
        "unknown suite 'no-such-suite'",
    )
    assert GSM8K_ROWS  # the shared rows stay importable for the other tests
