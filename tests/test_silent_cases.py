"""Inputs a user must hear about: one `error:` line and exit 2 where
going on would score against something the user did not mean, one `warning:` line where the work
is sound but a reader must know how it was done. Every case through the real `bench` CLI.

The cases: duplicate questions in a data file (conflicting answers: error; exact repeats: dropped,
one warning), blank or missing values in a data file, `bench eval --steps` out of order, repeated
or negative, a sweep without step 0 (warning: which step is the start), a suite asking for chat
mode on a model without a chat template (warning, recorded in run.json), and `role: held-out` in
the target's own family (forgetting in summary.json, the report and the gate, by role)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests import test_gate
from tests.suite_files import write_jsonl

HARD = [{"q": f"{a}+{b}+{c}=", "a": str(a + b + c)} for a, b, c in [(1, 2, 3), (4, 1, 2), (2, 2, 5)]]
EASY = [{"q": f"{a}+{b}=", "a": str(a + b)} for a, b in [(1, 2), (3, 4), (2, 5)]]
WORDS = [{"q": f"reverse {w}:", "a": w[::-1]} for w in ("cat", "dog")]
SUITE = """name: silent-cases
defaults:
  prompt: {system: "Answer with a number."}   # chat mode (the default) asked of a model without a chat template
  sampling: {max_new_tokens: 4}
  scorer: exact_match
eval:
  - {name: hard, family: arith, role: target, source: {kind: file, path: hard.jsonl, fields: {prompt: q, answer: a}}}
  - {name: easy, family: arith, role: held-out, source: {kind: file, path: easy.jsonl, fields: {prompt: q, answer: a}}}
  # role held-out: the default
  - {name: words, family: words, source: {kind: file, path: words.jsonl, fields: {prompt: q, answer: a}}}
"""


def write_suite(folder: Path, easy: list[dict] = EASY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "hard.jsonl", HARD)
    write_jsonl(folder / "easy.jsonl", easy)
    write_jsonl(folder / "words.jsonl", WORDS)
    (folder / "suite.yaml").write_text(SUITE)
    return folder / "suite.yaml"


def checkpoints(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("step-*[0-9]"))


def one_line(stderr: str, kind: str, *fragments: str) -> str:
    """The single `kind:` line of stderr holding every fragment (there must be exactly one)."""
    lines = [line for line in stderr.splitlines() if all(fragment in line for fragment in fragments)]
    assert len(lines) == 1 and lines[0].startswith(f"{kind}: "), stderr
    return lines[0]


def refused(done, out: Path, *fragments: str) -> None:
    """Exit 2, one `error:` line naming the problem, no run folder left behind."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert not out.exists()


# ---------------------------------------------------------------- one sweep, every warning


@pytest.fixture(scope="module")
def swept(bench, smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """`bench eval` of the smoke run's two trained checkpoints (no step 0, no --base) on a suite whose
    easy set repeats one row exactly and whose prompts ask for chat mode of the organism (no template)."""
    root = tmp_path_factory.mktemp("silent")
    suite = write_suite(root / "suite", easy=[*EASY, EASY[1]])
    first, second = checkpoints(smoke_run)[1:3]
    out = root / "eval"
    steps = f"{int(first.name[5:])},{int(second.name[5:])}"
    done = bench("eval", str(first), str(second), "--steps", steps, "--suite", str(suite), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    return done, out


def test_exact_duplicate_rows_are_dropped_with_one_warning(swept) -> None:
    done, out = swept
    one_line(done.stderr, "warning", "easy/test", "1 exact duplicate row(s)", "3 items kept")
    assert json.loads((out / "run.json").read_text())["eval_sets"]["easy/test"]["n"] == 3


def test_a_sweep_without_step_0_says_which_step_is_the_start(swept, smoke_run: Path) -> None:
    done, out = swept
    start = checkpoints(smoke_run)[1]
    one_line(done.stderr, "warning", "no step 0 and no --base", f"step {int(start.name[5:])} ({start})", "--base MODEL")
    assert json.loads((out / "run.json").read_text())["base_model"] == str(start)


def test_a_base_that_is_not_step_0_says_which_model_is_the_start(bench, smoke_run: Path, tmp_path: Path) -> None:
    """--base reads as "the start", but a point of the sweep at step 0 is: one warning says so."""
    start, _middle, last = checkpoints(smoke_run)
    suite = write_suite(tmp_path / "suite")
    out = tmp_path / "eval"
    done = bench(
        "eval", str(start), "--steps", "0", "--base", str(last), "--suite", str(suite), "--out", str(out), "-q"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one_line(done.stderr, "warning", f"--base {last} is not the start: {start} has step 0")
    assert json.loads((out / "run.json").read_text())["base_model"] == str(start)


def test_chat_mode_without_a_chat_template_warns_and_is_recorded(swept) -> None:
    done, out = swept
    one_line(
        done.stderr,
        "warning",
        "has no chat template",
        "hard/test, easy/test, words/test: raw text with the system prompt as a first paragraph",
        "chat: false",
    )
    fallback = json.loads((out / "run.json").read_text())["chat_fallback"]
    assert set(fallback["sets"]) == {"hard/test", "easy/test", "words/test"}
    prompts = pd.read_parquet(out / "prompts.parquet").prompt
    assert prompts.str.startswith("Answer with a number.\n\n").all()  # what was used instead, as the warning says


def test_a_held_out_set_beside_the_target_is_forgetting(bench, swept, tmp_path: Path) -> None:
    """role: held-out decides, in the target's family too: summary.json marks it as forgetting, the
    report tags it so, and the gate gates it as its own unit beside the family's whole."""
    _done, out = swept
    rows = {(r["family"], r["slice"]): r for r in json.loads((out / "summary.json").read_text())}
    assert rows[("arith", "easy/test")]["role"] == "held-out" and rows[("arith", "easy/test")]["forgetting"] is True
    assert rows[("arith", "hard/test")]["role"] == "target" and rows[("arith", "hard/test")]["forgetting"] is False
    assert rows[("arith", "all")]["role"] == "mixed" and rows[("words", "all")]["forgetting"] is True
    assert "held-out: its drop is forgetting" in (out / "report.html").read_text()
    gate = bench("gate", "-b", str(out), "-c", str(out), "--json", str(tmp_path / "gate.json"))
    assert gate.returncode == 0, gate.stderr
    units = {f["family"]: f for f in json.loads((tmp_path / "gate.json").read_text())["families"]}
    assert list(units) == ["arith", "arith (held-out)", "words"]
    assert units["arith (held-out)"]["n"] == 3 and units["arith"]["n"] == 6


def test_the_gate_fails_a_drop_the_targets_gain_hides(bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Micro's easy math (role: held-out) loses 10 points on 400 items while hard math gains 20:
    math as a whole gains 5 and passes, `math (held-out)` is the regression."""
    monkeypatch.setattr(test_gate, "SLICES", (("math", "chain_sum", "easy"), ("math", "chain_sum", "hard")))
    n = 400
    base = np.zeros(2 * n, dtype=bool)
    base[:240] = True  # easy 60 %
    base[n : n + 160] = True  # hard 40 %
    worse = base.copy()
    worse[:40] = False  # easy −10 points
    worse[n + 160 : n + 240] = True  # hard +20 points
    baseline = test_gate.write_run(tmp_path / "base", {0: base, 100: base}, n)
    candidate = test_gate.write_run(tmp_path / "cand", {0: base, 100: worse}, n, method="rps")
    done = bench("gate", "-b", str(baseline), "-c", str(candidate), "--json", str(tmp_path / "gate.json"))
    assert done.returncode == 1, done.stderr
    verdicts = {f["family"]: f["verdict"] for f in json.loads((tmp_path / "gate.json").read_text())["families"]}
    assert verdicts == {"math": "no detectable change", "math (held-out)": "regression"}
    assert "FAIL: regression in math (held-out)" in done.stdout


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("easy", "fragments"),
    [
        (
            [*EASY, {"q": EASY[0]["q"], "a": "4"}],
            ("easy/test", "question '1+2=' appears twice with different answers, '3' and '4'"),
        ),
        ([*EASY[:2], {"q": "5+5=", "a": ""}], ("row 2", "'a' value is empty", "fields.answer")),
        ([*EASY[:2], {"q": "5+5="}], ("row 2", "'a' value (fields.answer) is missing (null)")),
        ([*EASY[:2], {"q": "   ", "a": "1"}], ("row 2", "'q' value is empty", "fields.prompt")),
    ],
    ids=["conflicting-answers", "empty-answer", "missing-answer", "blank-question"],
)
def test_bad_rows_of_a_data_file_are_one_error(
    bench, smoke_run: Path, tmp_path: Path, easy: list[dict], fragments: tuple[str, ...]
) -> None:
    suite = write_suite(tmp_path / "suite", easy=easy)
    out = tmp_path / "eval"
    start = checkpoints(smoke_run)[0]
    done = bench("eval", str(start), "--steps", "0", "--suite", str(suite), "--out", str(out), "-q")
    refused(done, out, "suite suite.yaml, eval set 2", *fragments)


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [("4,2", "--steps must increase"), ("2,2", "duplicate step 2 in --steps"), ("-2,4", "step -2 is negative")],
    ids=["decreasing", "repeated", "negative"],
)
def test_steps_out_of_order_repeated_or_negative_are_one_error(
    bench, smoke_run: Path, tmp_path: Path, steps: str, fragment: str
) -> None:
    first, second = checkpoints(smoke_run)[1:3]
    out = tmp_path / "eval"
    done = bench("eval", str(first), str(second), f"--steps={steps}", "--suite", "micro", "--out", str(out), "-q")
    refused(done, out, fragment)
