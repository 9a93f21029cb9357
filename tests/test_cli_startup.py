"""`bench --help` and usage errors answer before anything heavy is imported, and `-q` is quiet.

The start-up tests check what a fresh interpreter has imported (not a time: the machines are
shared), since torch, transformers, vLLM and pandas are what take seconds to import. The quiet
tests run the real CLI from a folder outside any git checkout, where lm-eval's `git describe`
printed `fatal: not a git repository`, on a suite with an lm-eval set, whose progress bars
lm-eval draws itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.suite_files import GSM8K_ROWS, LMEVAL_ROWS, LMEVAL_TASK, write_jsonl

HEAVY = ("torch", "transformers", "vllm", "pandas")
# Runs `main` as the program's entry point with the given arguments in a fresh interpreter; at
# exit (however `main` ends the process) prints the heavy modules it imported, as JSON.
PROBE = """
import atexit, json, sys
arguments, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
atexit.register(lambda: print(json.dumps([m for m in heavy if m in sys.modules]), flush=True))
from plasticity_bench.harness.app.cli import main
sys.argv = ["bench", *arguments]
main()
"""


def probe(*args: str) -> dict:
    """The exit status of `bench ARGS` and the heavy modules it imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip(), done.stderr
    return {"status": done.returncode, "heavy": json.loads(done.stdout.strip().splitlines()[-1])}


def test_importing_the_cli_imports_nothing_heavy() -> None:
    code = f"import sys, plasticity_bench.harness.app.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [("--help",), ("run", "--help"), ("eval", "--help")])
def test_help_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    assert probe(*args) == {"status": 0, "heavy": []}


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--bogus"),  # click: unknown option
        ("eval",),  # click: missing argument
        ("run", "--steps", "abc"),  # click: not an integer
        ("run", "--method", "nosuch"),
        ("run", "--preset", "nosuch"),
        ("run", "--backend", "nosuch"),
        ("run", "--rollout-backend", "nosuch"),
        ("run", "--suite", "nosuch"),
        ("run", "--suite", "missing.yaml"),
        ("eval", "model", "--suite", "micro", "--out", "unused", "--steps", "abc"),
        ("eval", ".", "--suite", "nosuch", "--out", "unused"),
    ],
    ids=lambda args: " ".join(args),
)
def test_usage_errors_import_nothing_heavy(args: tuple[str, ...]) -> None:
    assert probe(*args) == {"status": 2, "heavy": []}


def test_usage_errors_say_what_is_wrong(bench) -> None:
    done = bench("run", "--method", "nosuch")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: unknown method 'nosuch'; known: dpo, eps, grpo, l2sp, pcr, replay, rps, sft, spot"
    ]
    done = bench("run", "--backend", "nosuch")
    assert done.returncode == 2 and done.stderr.strip() == "error: unknown backend 'nosuch'; known: auto, hf, vllm"
    done = bench("run", "--suite", "nosuch")
    assert done.returncode == 2 and done.stderr.strip().startswith("error: unknown suite 'nosuch'; shipped: micro, ")


def test_names_read_from_registration_lines_equal_the_registries() -> None:
    """The CLI checks names against the registration lines read as text; they must be the registries' names exactly."""
    import plasticity_bench.trainers
    from plasticity_bench.harness.app import names
    from plasticity_bench.harness.backends import BACKENDS
    from plasticity_bench.harness.backends.auto import AUTO

    assert list(names.method_names()) == plasticity_bench.trainers.TRAINERS.names() and "rps" in names.method_names()
    assert list(names.backend_names()) == BACKENDS.names() and "vllm" in names.backend_names()
    assert names.AUTO == AUTO


def test_shipped_suite_names_equal_the_suites_package() -> None:
    from plasticity_bench.harness.app.names import shipped_suite_names
    from plasticity_bench.tasks.suites import shipped_suites

    assert shipped_suite_names() == list(shipped_suites()) and "micro" in shipped_suite_names()


# ---------------------------------------------------------------- -q


def summary_lines(stdout: str) -> list[str]:
    """stdout without the summary table `bench run`/`bench eval` print: what is left is noise."""
    rows = stdout.strip().splitlines()
    table = rows.index(next(r for r in rows if r.startswith("family ")))
    footer = next(i for i, r in enumerate(rows) if r.startswith("(* :"))
    return rows[:table] + rows[footer + 1 :]


def warnings_only(stderr: str) -> list[str]:
    """The stderr lines that are not one-line warnings."""
    return [line for line in stderr.splitlines() if not line.startswith("warning: ")]


@pytest.fixture(scope="module")
def quiet_run(bench, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A smoke run with -q, from a folder outside any git checkout."""
    outside = tmp_path_factory.mktemp("outside-git")
    done = bench("run", "--method", "sft", "--preset", "smoke", "-q", "--out", str(outside / "run"), cwd=outside)
    assert done.returncode == 0, done.stderr[-3000:]
    return outside / "run", done


def test_quiet_run_prints_only_the_summary(quiet_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    folder, done = quiet_run
    assert warnings_only(done.stderr) == []
    assert summary_lines(done.stdout) == [
        f"run folder: {folder}  ({done.stdout.split('  (')[1].split(')')[0]})",
        f"report: {folder / 'report.html'}",
    ]


LMEVAL_SUITE = """name: quiet-lmeval
description: a file set and a local lm-eval task (tests/test_cli_startup.py)
families:
  sums: the target (a local lm-eval task)
  grade-school: GSM8K-shaped questions
eval:
  - name: sums
    family: sums
    role: target
    source: {kind: lmeval, task: my_local_sums.yaml}
  - name: gsm8k
    family: grade-school
    source: {kind: file, path: gsm8k.jsonl,
             fields: {prompt: question, target: answer, answer: {field: answer, pattern: "####\\\\s*(.+?)\\\\s*$"}}}
    prompt: {chat: false}
    sampling: {max_new_tokens: 8}
    scorer: math_verify
"""


def test_quiet_eval_with_an_lmeval_set_prints_only_the_summary(bench, quiet_run, tmp_path: Path) -> None:
    """lm-eval draws bars per task and checkpoint and runs `git describe` in the working folder."""
    run, _ = quiet_run
    write_jsonl(tmp_path / "sums.jsonl", LMEVAL_ROWS)
    (tmp_path / "my_local_sums.yaml").write_text(LMEVAL_TASK)
    write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS[:3])
    (tmp_path / "suite.yaml").write_text(LMEVAL_SUITE)
    checkpoints = sorted(str(p) for p in (run / "checkpoints").glob("step-*") if p.is_dir())
    steps = ",".join(str(int(Path(p).name.split("-")[1])) for p in checkpoints)
    done = bench("eval", *checkpoints, "--steps", steps, "--suite", "suite.yaml", "--out", "eval", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert warnings_only(done.stderr) == []
    assert [line.split("  (")[0] for line in summary_lines(done.stdout)] == [
        "run folder: eval",
        "report: eval/report.html",
    ]
