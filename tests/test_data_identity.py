"""A run's identity covers the bytes of every data file its suite reads and the versions of its
sources' and scorers' libraries (tasks/identity.py): a re-run into the same folder after either
changed is refused in one line naming the set and both values, and `--refresh` redoes only what
the change affects (harness/app/refresh.py). Through the real CLI, on a user's own suite."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from plasticity_bench.harness.app.refresh import check_data
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.store import RUN_FORMAT
from plasticity_bench.tasks.identity import fingerprinted
from tests.chat_model import build_chat_model
from tests.suite_files import GSM8K_ROWS, MATH500_ROWS, write_jsonl

pytestmark = pytest.mark.xdist_group("data_identity")  # the module's shared runs are built once, on one worker

QA_ROWS = [{"question": f"Say the word number {k}.", "answer": f"word {k}"} for k in range(3)]
SUITE = """name: identity-suite
defaults:
  prompt: {chat: false}
  sampling: {max_new_tokens: 6}
eval:
  - name: qa
    family: words
    role: target
    source: {kind: file, path: qa.jsonl, fields: {prompt: question, answer: answer}}
    scorer: exact_match
  - name: sums
    family: math
    source: {kind: file, path: math.jsonl, fields: {prompt: problem, answer: answer}}
    scorer: math_verify
train:
  easy:
    source: {kind: file, path: easy.jsonl,
             fields: {prompt: question, target: answer, answer: {field: answer, pattern: "####\\\\s*(.+?)\\\\s*$"}}}
    scorer: math_verify
  hard: {source: {kind: file, path: hard.jsonl, fields: {prompt: problem, target: solution, answer: answer}},
         scorer: math_verify}
"""


def write_identity_suite(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "qa.jsonl", QA_ROWS)
    write_jsonl(folder / "math.jsonl", MATH500_ROWS[:2])
    write_jsonl(folder / "easy.jsonl", GSM8K_ROWS)
    write_jsonl(folder / "hard.jsonl", MATH500_ROWS)
    (folder / "suite.yaml").write_text(SUITE)
    return folder / "suite.yaml"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every file of the folder: its mtime, and its bytes where small (run.json and the tables)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes() if p.stat().st_size < 1 << 20 else None)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, bench) -> dict[str, Path]:
    """The suite, a tiny chat model, and one `bench eval` of it on the suite."""
    root = tmp_path_factory.mktemp("identity")
    paths = {"suite": write_identity_suite(root / "suite"), "model": build_chat_model(root / "model", head_dim=16)}
    paths["run"] = root / "eval"
    done = bench(
        "eval", str(paths["model"]), "--steps", "0", "--suite", str(paths["suite"]), "--out", str(paths["run"]), "-q"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return paths


def copy_of(scored: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """The suite folder and the run folder copied: a test may edit its own data."""
    shutil.copytree(scored["suite"].parent, tmp_path / "suite")
    shutil.copytree(scored["run"], tmp_path / "eval")
    return tmp_path / "suite" / "suite.yaml", tmp_path / "eval"


def test_run_json_records_each_sets_file_hashes_and_libraries(scored: dict[str, Path]) -> None:
    meta = json.loads((scored["run"] / "run.json").read_text())
    identity = meta["data_identity"]["eval"]
    assert identity["qa/test"]["files"] == {"qa.jsonl": sha256(scored["suite"].parent / "qa.jsonl")}
    assert identity["sums/test"]["scorer_packages"]["math-verify"] == meta["provenance"]["packages"]["math-verify"]
    assert identity["qa/test"]["scorer_packages"] == {}  # exact_match needs no library
    assert "train" not in meta["data_identity"]  # bench eval trains on nothing
    report = (scored["run"] / "report.html").read_text()
    assert "<th>math-verify</th>" in report and "<th>datasets</th>" in report
    assert (
        "<th>reasoning-gym</th>" not in report and "<th>evalplus</th>" not in report
    )  # libraries this suite does not use


def test_edited_gold_answer_is_refused_then_refreshed(scored: dict[str, Path], bench, tmp_path: Path) -> None:
    suite, out = copy_of(scored, tmp_path)
    records = pd.read_parquet(out / "records.parquet")
    items = pd.read_parquet(out / "eval_items.parquet").set_index("id")
    qa = records[(records.task == "qa") & (records.output.str.strip() != "")]
    assert len(qa), "the model generated nothing for any qa item; the test needs one output to use as a gold answer"
    target = qa.iloc[0]
    assert not bool(target.correct)
    # the gold answer of that item becomes exactly what the model answered (greedy: it answers the same again)
    rows = [dict(row) for row in QA_ROWS]
    index = next(i for i, row in enumerate(rows) if row["question"] == items.loc[target.item_id, "prompt"])
    rows[index]["answer"] = target.output
    old_sha = sha256(suite.parent / "qa.jsonl")
    write_jsonl(suite.parent / "qa.jsonl", rows)
    new_sha = sha256(suite.parent / "qa.jsonl")
    before = snapshot(out)
    args = ("eval", str(scored["model"]), "--steps", "0", "--suite", str(suite), "--out", str(out), "-q")

    refused = bench(*args)
    assert refused.returncode == 2
    line = one_line(refused.stderr)
    assert "evaluation set qa/test" in line and old_sha[:12] in line and new_sha[:12] in line and "--refresh" in line
    assert snapshot(out) == before  # nothing written

    done = bench(*args, "--refresh")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["data_identity"]["eval"]["qa/test"]["files"]["qa.jsonl"] == new_sha
    assert (
        meta["refreshed"][-1]["redone"] == ["generate", "score", "report"]
        and "qa/test" in meta["refreshed"][-1]["changes"][0]
    )
    assert pd.read_parquet(out / "eval_items.parquet").set_index("id").loc[target.item_id, "answer"] == target.output
    again = pd.read_parquet(out / "records.parquet").set_index(["item_id", "sample"]).loc[(target.item_id, 0)]
    assert again.output == target.output and bool(again.correct)  # scored against the new gold answer

    unchanged = snapshot(out)
    assert bench(*args).returncode == 0  # the same data again: nothing to redo
    assert {name: mtime for name, (mtime, _) in snapshot(out).items() if name.startswith("generations/")} == {
        name: mtime for name, (mtime, _) in unchanged.items() if name.startswith("generations/")
    }


def test_changed_scorer_library_is_refused_then_rescored(scored: dict[str, Path], bench, tmp_path: Path) -> None:
    suite, out = copy_of(scored, tmp_path)
    meta = json.loads((out / "run.json").read_text())
    installed = meta["data_identity"]["eval"]["sums/test"]["scorer_packages"]["math-verify"]
    # the folder as a run scored by an older math-verify would have left it
    meta["data_identity"]["eval"]["sums/test"]["scorer_packages"]["math-verify"] = "0.0.1"
    meta["fingerprint"] = hashlib.sha256(
        json.dumps({**meta["config"], **fingerprinted(meta["data_identity"])}, sort_keys=True).encode()
    ).hexdigest()[:16]
    (out / "run.json").write_text(json.dumps(meta))
    generations = snapshot(out / "generations")
    args = ("eval", str(scored["model"]), "--steps", "0", "--suite", str(suite), "--out", str(out), "-q")

    refused = bench(*args)
    assert refused.returncode == 2
    line = one_line(refused.stderr)
    assert "evaluation set sums/test" in line and f"math-verify 0.0.1 → {installed}" in line

    done = bench(*args, "--refresh")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["refreshed"][-1]["redone"] == ["score", "report"]
    assert meta["data_identity"]["eval"]["sums/test"]["scorer_packages"]["math-verify"] == installed
    assert snapshot(out / "generations") == generations  # re-scored from the stored outputs


def test_a_changed_package_version_in_run_json_is_refused(tmp_path: Path) -> None:
    def identity(version: str) -> dict:
        return {
            "eval": {
                "gsm8k/test": {
                    "files": {"gsm8k.jsonl": "a" * 64},
                    "source_packages": {"datasets": "5.2.0"},
                    "scorer_packages": {"math-verify": version},
                }
            }
        }

    def fingerprint_of(data: dict) -> str:
        return hashlib.sha256(json.dumps(fingerprinted(data), sort_keys=True).encode()).hexdigest()[:16]

    (tmp_path / "run.json").write_text(
        json.dumps(
            {"format": RUN_FORMAT, "fingerprint": fingerprint_of(identity("0.8.0")), "data_identity": identity("0.8.0")}
        )
    )
    new = identity("0.9.0")
    with pytest.raises(BenchError, match="evaluation set gsm8k/test: scorer library math-verify 0.8.0 → 0.9.0"):
        check_data(tmp_path, fingerprint_of(new), new, fingerprint_of, refresh=False)
    plan = check_data(tmp_path, fingerprint_of(new), new, fingerprint_of, refresh=True)
    assert plan is not None and plan.scope == "score"
    # a run whose settings differ as well is never refreshed: the refusal says so
    with pytest.raises(BenchError, match="other settings"):
        check_data(tmp_path, "0" * 16, new, lambda data: "1" * 16, refresh=True)
    # the same identity: nothing to say here (RunStore.check_target decides whether the folder is this run)
    assert (
        check_data(tmp_path, fingerprint_of(identity("0.8.0")), identity("0.8.0"), fingerprint_of, refresh=False)
        is None
    )
    # a run folder without a format version: refused whatever it recorded, --refresh or not
    (tmp_path / "run.json").write_text(json.dumps({"fingerprint": fingerprint_of({})}))
    for refresh in (False, True):
        with pytest.raises(BenchError, match=f"no format version; .* reads format version {RUN_FORMAT} only"):
            check_data(tmp_path, fingerprint_of(new), new, fingerprint_of, refresh=refresh)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, bench, scored: dict[str, Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("identity-run")
    shutil.copytree(scored["suite"].parent, root / "suite")
    paths = {"suite": root / "suite" / "suite.yaml", "run": root / "sft"}
    done = bench(*run_args(scored["model"], paths))
    assert done.returncode == 0, done.stderr[-3000:]
    return paths


def run_args(model: Path, paths: dict[str, Path]) -> tuple[str, ...]:
    return (
        "run",
        "--model",
        str(model),
        "--suite",
        str(paths["suite"]),
        "--method",
        "sft",
        "--preset",
        "smoke",
        "--out",
        str(paths["run"]),
        "-q",
    )


def test_edited_training_file_redoes_the_run_from_the_start(
    trained: dict[str, Path], scored: dict[str, Path], bench
) -> None:
    meta = json.loads((trained["run"] / "run.json").read_text())
    hard = trained["suite"].parent / "hard.jsonl"
    assert meta["data_identity"]["train"]["hard"]["files"] == {"hard.jsonl": sha256(hard)}
    old_sha = sha256(hard)
    rows = [dict(row) for row in MATH500_ROWS]
    rows[-1]["answer"] = "3.1416"
    write_jsonl(hard, rows)
    before = snapshot(trained["run"])

    refused = bench(*run_args(scored["model"], trained))
    assert refused.returncode == 2
    line = one_line(refused.stderr)
    assert "training set hard" in line and old_sha[:12] in line and sha256(hard)[:12] in line
    assert snapshot(trained["run"]) == before

    done = bench(*run_args(scored["model"], trained), "--refresh")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "redone from the start" in done.stderr
    meta = json.loads((trained["run"] / "run.json").read_text())
    assert meta["refreshed"][-1]["redone"][0] == "train" and meta["data_identity"]["train"]["hard"]["files"][
        "hard.jsonl"
    ] == sha256(hard)
    assert meta["stages"]["train"]["resumed_from_step"] == 0
    start = before["checkpoints/step-000002/model.safetensors"][0]
    retrained = snapshot(trained["run"])
    assert retrained["checkpoints/step-000002/model.safetensors"][0] != start  # trained again

    # then an evaluation file changes: its items and generations are redone, the training is kept
    rows = [dict(row) for row in QA_ROWS]
    rows[0]["answer"] = "another answer"
    write_jsonl(trained["suite"].parent / "qa.jsonl", rows)
    done = bench(*run_args(scored["model"], trained), "--refresh")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((trained["run"] / "run.json").read_text())
    assert meta["refreshed"][-1]["redone"] == ["generate", "score", "report"]
    assert "another answer" in set(pd.read_parquet(trained["run"] / "eval_items.parquet").answer)
    after = snapshot(trained["run"])
    checkpoints = {name: mtime for name, (mtime, _) in retrained.items() if name.startswith("checkpoints/")}
    assert checkpoints and checkpoints == {name: after[name][0] for name in checkpoints}
    assert after["generations/step-000000.parquet"][0] != retrained["generations/step-000000.parquet"][0]
