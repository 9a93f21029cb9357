"""lm-eval sets behave as lm-eval users expect, through the real CLI (`bench eval`, `bench score`):
prompts.parquet holds the prompt lm-eval sent; a set's own `prompt:` / `sampling:` is refused; every
per-document metric is stored and the suite's `metric:` picks the score; a multiple-choice output is
the chosen option; `bench score` re-scores from the stored outputs where lm-eval's metric allows and
says so where it does not; and the stored per-document data agree with lm-eval's own `hf` model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.chat_model import build_chat_model
from tests.conftest import ROOT
from tests.helpers import cli_with_cache
from tests.suite_files import write_jsonl

pytestmark = pytest.mark.xdist_group("lmeval_sets")  # the module's shared runs are built once, on one worker

ARITH_DATA = ROOT / "tasks" / "lmeval" / "organism_arith.jsonl"
# Options of different lengths, so acc (raw log-likelihood) and acc_norm (per character) can differ.
CHOICE_ROWS = [
    {
        "question": f"calc {a}+{b}\n",
        "choices": [str(a + b), str(a + b) * 3, str(a + b + 1) * 2, "none of these"],
        "label": 0,
    }
    for a, b in [(1, 2), (2, 2), (3, 4), (5, 5), (6, 1), (9, 3)]
]
CHOICE_TASK = """task: my_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: choice.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: choices
doc_to_target: label
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
  - {metric: acc_norm, aggregation: mean, higher_is_better: true}
"""
SUITE = """name: lmeval-sets
defaults:
  prompt: {chat: true, system: "Answer briefly."}
  sampling: {max_new_tokens: 24}
eval:
  - name: arith
    family: arith
    role: target
    source: {kind: lmeval, task: organism_arith, n: 6}
  - name: choice
    family: choice
    source: {kind: lmeval, task: my_choice.yaml, metric: acc_norm}
"""


def run_cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    return cli_with_cache(cache, *args, OMP_NUM_THREADS="1")


def write_suite(folder: Path, suite: str = SUITE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "choice.jsonl", CHOICE_ROWS)
    (folder / "my_choice.yaml").write_text(CHOICE_TASK)
    (folder / "suite.yaml").write_text(suite)
    return folder / "suite.yaml"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, bench_cache: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lmeval-sets")
    paths = {"suite": write_suite(root / "suite"), "model": build_chat_model(root / "model"), "out": root / "eval"}
    done = run_cli(
        bench_cache,
        "eval",
        str(paths["model"]),
        "--steps",
        "0",
        "--suite",
        str(paths["suite"]),
        "--out",
        str(paths["out"]),
        "-q",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return paths


def stored(run: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run / "generations" / "step-000000.parquet")
    items = pd.read_parquet(run / "eval_items.parquet").set_index("id")
    return frame.assign(
        task=frame.item_id.map(items.task),
        data=frame.lmeval.map(json.loads),
        doc_id=frame.item_id.map(lambda i: json.loads(items.meta[i])["lmeval_doc_id"]),
    )


@pytest.mark.e2e
def test_prompts_parquet_holds_the_prompt_lm_eval_sent(sweep: dict[str, Path]) -> None:
    prompts = pd.read_parquet(sweep["out"] / "prompts.parquet").set_index("item_id").prompt
    generations = stored(sweep["out"])
    arith = [json.loads(line) for line in ARITH_DATA.read_text().splitlines()]
    for row in generations.itertuples():
        expected = arith[row.doc_id]["prompt"] if row.task == "arith" else CHOICE_ROWS[row.doc_id]["question"]
        assert prompts[row.item_id] == expected == row.data["context"]  # no chat template, no suite system text
        assert "Answer briefly" not in prompts[row.item_id] and "<|im_start|>" not in prompts[row.item_id]
    assert len(prompts) == 6 + len(CHOICE_ROWS)


@pytest.mark.e2e
def test_every_metric_is_stored_and_the_suites_metric_is_the_score(sweep: dict[str, Path]) -> None:
    records = pd.read_parquet(sweep["out"] / "records.parquet")
    choice = records[records.task == "choice"]
    metrics = choice.metrics.map(json.loads)
    assert all(set(m) == {"acc,none", "acc_norm,none"} for m in metrics)
    assert list(choice.score) == [m["acc_norm,none"] for m in metrics]
    arith = records[records.task == "arith"]
    assert all(set(json.loads(m)) == {"exact_match,final_answer"} for m in arith.metrics)
    aggregates = pd.read_parquet(sweep["out"] / "aggregates.parquet").set_index("slice")
    means = json.loads(aggregates.loc["choice/test", "metrics"])
    assert means == {
        "acc,none": pytest.approx(100 * np.mean([m["acc,none"] for m in metrics])),
        "acc_norm,none": pytest.approx(100 * np.mean([m["acc_norm,none"] for m in metrics])),
    }
    assert aggregates.loc["choice/test", "score"] == pytest.approx(means["acc_norm,none"])


@pytest.mark.e2e
def test_a_multiple_choice_output_is_the_option_acc_norm_chose(sweep: dict[str, Path]) -> None:
    generations = stored(sweep["out"])
    choice = generations[generations.task == "choice"]
    assert len(choice) == len(CHOICE_ROWS)
    for row in choice.itertuples():
        options = CHOICE_ROWS[row.doc_id]["choices"]
        lls = row.data["loglikelihoods"]
        chosen = int(np.argmax(np.array(lls) / np.array([len(o) for o in options])))
        assert len(lls) == len(options) and row.data["chosen"] == chosen and row.output == options[chosen]
        assert row.data["metrics"]["acc_norm,none"] == float(chosen == CHOICE_ROWS[row.doc_id]["label"])


@pytest.mark.e2e
def test_stored_documents_agree_with_lm_evals_own_hf_model(sweep: dict[str, Path]) -> None:
    """lm-eval's own `hf` model on the same checkpoint and tasks: the same prompts, completions,
    per-choice log-likelihoods and per-document metrics as the run stored."""
    from lm_eval import simple_evaluate

    from plasticity_bench.tasks.sources.lmeval import task_config, task_manager

    configs = [task_config("organism_arith"), task_config(str(sweep["suite"].parent / "my_choice.yaml"))]
    output = simple_evaluate(
        model="hf",
        model_args=f"pretrained={sweep['model']},dtype=float32",
        tasks=configs,
        limit=6,
        task_manager=task_manager(configs),
        log_samples=True,
        bootstrap_iters=0,
        device="cpu",
        batch_size=1,
    )
    generations = stored(sweep["out"]).set_index(["task", "doc_id"])
    for task, name in (("organism_arith", "arith"), ("my_choice", "choice")):
        for sample in output["samples"][task]:
            mine = generations.loc[(name, sample["doc_id"])].data
            assert mine["context"] == sample["arguments"][0][0]
            assert mine["metrics"] == {f"{m},{sample['filter']}": sample[m] for m in sample["metrics"]}
            if name == "arith":
                assert mine["output"] == sample["resps"][0][0]
            else:
                assert mine["loglikelihoods"] == pytest.approx([r[0][0] for r in sample["resps"]], abs=1e-4)


@pytest.mark.e2e
def test_bench_score_follows_an_edited_completion_and_says_when_it_cannot(
    sweep: dict[str, Path], bench_cache: Path, tmp_path: Path
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sweep["out"], run)
    path = run / "generations" / "step-000000.parquet"
    frame = pd.read_parquet(path)
    generations = stored(run)
    arith = [json.loads(line) for line in ARITH_DATA.read_text().splitlines()]
    first = generations[generations.task == "arith"].iloc[0]
    right = f"{arith[first.doc_id]['steps']}#{arith[first.doc_id]['answer']}"  # what the task's regex filter reads
    choice = generations[generations.task == "choice"].iloc[0]
    other = next(o for o in CHOICE_ROWS[choice.doc_id]["choices"] if o != choice.output)
    frame.loc[frame.item_id == first.item_id, "output"] = right
    frame.loc[frame.item_id == choice.item_id, "output"] = other
    frame.to_parquet(path, index=False)
    before = pd.read_parquet(run / "records.parquet").set_index("item_id")
    done = run_cli(bench_cache, "score", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    after = pd.read_parquet(run / "records.parquet").set_index("item_id")
    assert after.loc[first.item_id, "correct"] and after.loc[first.item_id, "score"] == 1.0
    assert json.loads(after.loc[first.item_id, "metrics"]) == {"exact_match,final_answer": 1.0}
    assert after.loc[choice.item_id, "score"] == before.loc[choice.item_id, "score"]  # from the stored log-likelihoods
    unchanged = after.index.difference([first.item_id])
    assert after.loc[unchanged, "score"].equals(before.loc[unchanged, "score"])  # re-scoring repeats lm-eval's verdicts
    notes = [line for line in done.stderr.splitlines() if "lm-eval set" in line]
    assert (
        len(notes) == 1
        and "choice/test" in notes[0]
        and "log-likelihoods" in notes[0]
        and "1 stored output" in notes[0]
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    "extra, word",
    [
        ("prompt: {system: Be brief.}", "prompt"),
        ("sampling: {max_new_tokens: 8}", "sampling"),
        ("metric: f1", "reports no metric 'f1'; its metrics: acc, acc_norm"),
        ("metric: f1 (listed)", "'f1' of task 'my_choice' is not a per-document score"),
    ],
)
def test_settings_lm_eval_would_ignore_are_refused(extra: str, word: str, bench_cache: Path, tmp_path: Path) -> None:
    if extra.startswith("metric"):
        suite = SUITE.replace("metric: acc_norm}", "metric: f1}")
    else:
        suite = SUITE.replace(
            "    source: {kind: lmeval, task: my_choice.yaml",
            f"    {extra}\n    source: {{kind: lmeval, task: my_choice.yaml",
        )
    path = write_suite(tmp_path / "suite", suite)
    if extra.endswith("(listed)"):  # f1 is a metric lm-eval computes over all documents, not per document
        (path.parent / "my_choice.yaml").write_text(
            CHOICE_TASK + "  - {metric: f1, aggregation: f1, higher_is_better: true}\n"
        )
    model = build_chat_model(tmp_path / "model")
    done = run_cli(
        bench_cache, "eval", str(model), "--steps", "0", "--suite", str(path), "--out", str(tmp_path / "out"), "-q"
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert word in done.stderr and "eval set 2" in done.stderr
    assert not (tmp_path / "out").exists()
