"""Everything a run needs is checked before any generation: a scorer that does not fit its source,
a setting the source ignores, a missing data file or lm-eval task, a gold the scorer cannot read.
`bench run` and `bench eval` refuse with one line and leave no folder; `bench suites --check FILE`
lists every problem of a suite file at once (exit 2), or each set's counts (exit 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chat_model import build_chat_model
from tests.helpers import cli, rejected
from tests.suite_files import GSM8K_ROWS, LMEVAL_ROWS, LMEVAL_TASK, write_jsonl

OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
ANSWER = "{field: answer, pattern: '####\\s*(.+?)\\s*$'}"
FILE_SOURCE = f"{{kind: file, path: sums.jsonl, fields: {{prompt: question, answer: {ANSWER}}}}}"
TRAIN_SET = (
    f"{{source: {{kind: file, path: train.jsonl, fields: {{prompt: question, answer: {ANSWER}}}}}, scorer: numeric}}"
)
TRAIN = f"train:\n  easy: {TRAIN_SET}\n  hard: {TRAIN_SET}\n"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in OFFLINE.items():  # the `bench` fixture's subprocesses inherit them
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_chat_model(tmp_path_factory.mktemp("chat-model") / "model", head_dim=16)


TARGET = f"{{name: sums, family: math, role: target, source: {FILE_SOURCE}, scorer: numeric}}"


def write_data(folder: Path) -> None:
    write_jsonl(folder / "sums.jsonl", GSM8K_ROWS[:3])
    write_jsonl(folder / "train.jsonl", GSM8K_ROWS[3:])
    write_jsonl(folder / "lm_sums.jsonl", LMEVAL_ROWS)
    (folder / "my_local_sums.yaml").write_text(LMEVAL_TASK.replace("sums.jsonl", "lm_sums.jsonl"))


def code_scored_suite(folder: Path, scorer: str) -> Path:
    """A user's file set scored by a program scorer: the items carry a gold answer, not a program's test."""
    write_data(folder)
    path = folder / "suite.yaml"
    path.write_text(f"""name: mine
defaults:
  prompt: {{chat: true, system: "Answer briefly."}}
  sampling: {{max_new_tokens: 8}}
eval:
  - {{name: sums, family: math, role: target, source: {FILE_SOURCE}, scorer: numeric}}
  - {{name: programs, family: code, source: {FILE_SOURCE}, scorer: {scorer}}}
{TRAIN}""")
    return path


def table(stdout: str) -> dict[str, list[str]]:
    """`bench suites --check`'s rows by slice: part, slice, family, role, source, items, scorer, status, ignores."""
    rows = [line.split(maxsplit=8) for line in stdout.splitlines() if line.startswith(("  eval", "  train"))]
    return {row[1]: row for row in rows}


def no_run_folder_left(*folders: Path) -> None:
    for folder in folders:
        assert not folder.exists(), f"{folder} was written"


@pytest.mark.parametrize("scorer", ["humaneval", "arc_program"])
def test_program_scorer_on_a_file_set_is_refused_before_generation(tmp_path: Path, model: Path, scorer: str) -> None:
    suite = code_scored_suite(tmp_path, scorer)
    run_out, eval_out = tmp_path / "run", tmp_path / "eval"
    for done in (
        cli("run", "--preset", "smoke", "--suite", str(suite), "--model", str(model), "--out", str(run_out)),
        cli("eval", str(model), "--steps", "0", "--suite", str(suite), "--out", str(eval_out)),
    ):
        rejected(
            done,
            "eval set 2 (programs/test)",
            f"scorer {scorer} needs item meta",
            "source kind file",
            "scorers that fit source kind file",
        )
    no_run_folder_left(run_out, eval_out)


def test_evalplus_on_a_file_set_refused_then_the_corrected_suite_runs_into_the_same_folders(
    bench, tmp_path: Path, model: Path
) -> None:
    suite = code_scored_suite(tmp_path, "evalplus")
    run_out, eval_out = tmp_path / "run", tmp_path / "eval"
    run = (
        "run",
        "--preset",
        "smoke",
        "--method",
        "sft",
        "--suite",
        str(suite),
        "--model",
        str(model),
        "--out",
        str(run_out),
        "-q",
    )
    evaluate = ("eval", str(model), "--steps", "0", "--suite", str(suite), "--out", str(eval_out), "-q")
    for args in (run, evaluate):
        done = bench(*args)
        assert done.returncode == 2, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "eval set 2 (programs/test): scorer evalplus needs item meta" in lines[0], lines
        assert "Traceback" not in done.stderr and "KeyError" not in done.stderr
    no_run_folder_left(run_out, eval_out)

    suite.write_text(suite.read_text().replace("scorer: evalplus", "scorer: math_verify"))
    for args, out in ((run, run_out), (evaluate, eval_out)):
        done = bench(*args)
        assert done.returncode == 0, done.stderr[-3000:]
        meta = json.loads((out / "run.json").read_text())
        scorers = {s["slice"]: s["scorer"] for s in meta["suite_spec"]["sets"]}
        assert scorers == {"sums/test": "numeric", "programs/test": "math_verify"}


def test_lmeval_set_settings_it_ignores_are_refused_and_defaults_are_not(tmp_path: Path, model: Path) -> None:
    write_data(tmp_path)
    suite = tmp_path / "suite.yaml"
    lm_set = (
        "{name: lm, family: sums, source: {kind: lmeval, task: my_local_sums.yaml}, sampling: {temperature: 0.7, n: 2}}"
    )
    suite.write_text(f"name: mine\ndefaults: {{sampling: {{max_new_tokens: 8}}}}\neval:\n  - {TARGET}\n  - {lm_set}\n")
    out = tmp_path / "eval"
    rejected(
        cli("eval", str(model), "--steps", "0", "--suite", str(suite), "--out", str(out), "-q"),
        "eval set 2 (lm/test)",
        "source kind lmeval ignores sampling.n, sampling.temperature",
        "honours no sampling setting",
    )
    no_run_folder_left(out)


def test_gold_a_scorer_cannot_read_is_refused_before_generation(tmp_path: Path, model: Path) -> None:
    write_data(tmp_path)
    write_jsonl(
        tmp_path / "sums.jsonl",
        [{"question": "1+1?", "answer": "#### 2"}, {"question": "Colour?", "answer": "#### blue"}],
    )
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: mine\neval:\n  - {TARGET}\n")
    out = tmp_path / "eval"
    rejected(
        cli("eval", str(model), "--steps", "0", "--suite", str(suite), "--out", str(out), "-q"),
        "(sums/test): scorer numeric cannot score item",
        "'blue' has no number",
    )
    no_run_folder_left(out)


BROKEN = """name: broken
evl_seed: 3
defaults:
  prompt: {chat: true, system: "Answer briefly."}
eval:
  - {name: sums, family: math, role: target, source: SOURCE, scorer: numeric}
  - {name: programs, family: code, source: SOURCE, scorer: evalplus}
  - {name: missing, family: math, source: {kind: file, path: no-such.jsonl,
     fields: {prompt: question, answer: answer}}, scorer: numeric}
  - {name: lm, family: sums, source: {kind: lmeval, task: my_local_sums.yaml}, prompt: {system: "Be brief."}}
  - {name: lm2, family: sums, source: {kind: lmeval, task: no_such_task.yaml}}
  - {name: colours, family: math, source: {kind: file, path: colours.jsonl,
     fields: {prompt: question, answer: answer}}, scorer: numeric}
  - {name: gen, family: math, source: {kind: generator, task: chain_sum, level: easy, n: 5}, scorer: exact_match}
  - {name: tagged, family: math, source: SOURCE, scorer: task}
train:
  easy: {source: {kind: file, path: train.jsonl, fields: {prompt: question, answer: answer}}, scorer: humaneval}
  hard: {source: {kind: file, path: gone.jsonl, fields: {prompt: question, answer: answer}}, scorer: numeric}
"""


def test_check_lists_every_problem_of_a_broken_suite(bench, tmp_path: Path) -> None:
    write_data(tmp_path)
    write_jsonl(tmp_path / "colours.jsonl", [{"question": "Sky?", "answer": "blue"}])
    suite = tmp_path / "broken.yaml"
    suite.write_text(BROKEN.replace("SOURCE", FILE_SOURCE))
    done = bench("suites", "--check", str(suite))
    assert done.returncode == 2, done.stderr
    problems = done.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in problems), done.stderr
    expected = [
        "unknown key 'evl_seed'",
        "eval set 2 (programs/test): scorer evalplus needs item meta",
        "no-such.jsonl does not exist",
        "eval set 4 (lm/test): source kind lmeval ignores prompt.system",
        "no_such_task.yaml does not exist",
        "scorer numeric cannot score item",
        "eval set 8 (tagged/test): scorer task needs items made by a generator task",
        "train.easy: scorer humaneval needs item meta 'task_id'",
        "gone.jsonl does not exist",
    ]
    for fragment in expected:
        assert sum(fragment in line for line in problems) == 1, (fragment, problems)
    assert len(problems) == len(expected), problems
    # the sets that parsed are still listed, with what was found of them
    rows = table(done.stdout)
    assert rows["sums/test"][5:8] == ["3", "numeric", "ok"]
    assert rows["gen/easy"][5:8] == ["5", "exact_match", "ok"]  # a generator's items carry a gold answer
    assert rows["missing/test"][7] == "error" and rows["colours/test"][7] == "error"


def test_check_a_good_suite_prints_each_sets_counts(bench, tmp_path: Path) -> None:
    write_data(tmp_path)
    suite = tmp_path / "good.yaml"
    suite.write_text(f"""name: good
defaults:
  prompt: {{chat: true, system: "Answer briefly."}}
  sampling: {{max_new_tokens: 8}}
  scorer: numeric
eval:
  - {{name: sums, family: math, role: target, source: {FILE_SOURCE}}}
  - {{name: humaneval, family: code, source: {{kind: humaneval, n: 2}}}}
  - {{name: lm, family: sums, source: {{kind: lmeval, task: my_local_sums.yaml}}}}
  - {{name: gsm8k, family: math, optional: true,
     source: {{kind: hub, dataset: nobody/no-such-dataset, fields: {{prompt: q, answer: a}}}}}}
{TRAIN}""")
    done = bench("suites", "--check", str(suite))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
    rows = table(done.stdout)
    assert rows["sums/test"][2:8] == ["math", "target", "file", "3", "numeric", "ok"]
    # the suite's default scorer does not fit HumanEval: the source's own scores it, and the row says so
    assert rows["humaneval/test"][4:] == ["humaneval", "2", "humaneval", "ok", "scorer"]
    assert rows["lm/test"][4:8] == ["lmeval", "5", "lmeval", "ok"]
    assert rows["lm/test"][8] == "prompt.chat, prompt.system, sampling.max_new_tokens, scorer"
    assert rows["gsm8k/test"][5:8] == ["-", "numeric", "skipped"]
    assert rows["train-easy/easy"][4:8] == ["file", "5", "numeric", "ok"]
    assert "gsm8k/test is optional and skipped here" in done.stdout and "nobody/no-such-dataset" in done.stdout
    assert "ok: 4 evaluation and 2 training sets" in done.stdout


def test_training_data_is_checked_before_bench_run_writes_anything(tmp_path: Path, model: Path) -> None:
    suite = code_scored_suite(tmp_path, "numeric")
    suite.write_text(
        suite.read_text().replace(
            "  hard: {source: {kind: file, path: train.jsonl", "  hard: {source: {kind: file, path: gone.jsonl"
        )
    )
    out = tmp_path / "run"
    rejected(
        cli("run", "--preset", "smoke", "--suite", str(suite), "--model", str(model), "--out", str(out)),
        "train.hard",
        "gone.jsonl does not exist",
    )
    no_run_folder_left(out)
