"""Behaviour unchanged: the same runs made with the code of a git revision and of the working tree.

For the default `bench run --method rps` and a smoke run (`--preset smoke`) of every method,
this runs the CLI twice — once with the code of REV (extracted by `git archive` into a temporary
folder and run with that folder as cwd and PYTHONPATH, so the CLI module imports that tree's
packages ahead of the editable install) and once with the working tree — and compares byte for
byte. The CLI module is the one the tree holds: `plasticity_bench.harness.app.cli` where the tree
has plasticity_bench/ (its links to the folders survive `git archive`), else `harness.app.cli`
(a tree whose folders were installed under their own names).

The files compared:

  * `records.parquet`, every column except `answer` (the one column the working tree may add),
  * `aggregates.parquet` and `train_log.parquet` (pandas `DataFrame.equals`, column order too),
  * the final checkpoint's weight files (sha256).

Both trees share one organism cache (PLASTICITY_BENCH_CACHE, default: the user's cache): the
organism's cache key is its config, suite and ORGANISM_CODE_VERSION, not the code, so the runs
start from the same weights and the comparison is about the run itself. REV's runs are kept
under WORK/<commit>/ and reused by a later call (they cannot change); the working tree's are
always made afresh. Prints a Markdown table (run, file, identical) and exits 1 if anything differs.

    OMP_NUM_THREADS=1 python benchmarks/bench_identical.py [--rev e15ef5c] [--work DIR]
        [--methods rps sft] [--no-default] [--side before|after|both|compare]

`--side after` with the --work of an earlier `--side before` (or `both`) call makes the working
tree's runs and compares them with REV's kept runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
NEW_COLUMNS = ("answer",)  # columns the working tree adds to records.parquet on purpose
TABLES = ("records.parquet", "aggregates.parquet", "train_log.parquet")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# On the smoke organism online DPO finds no preference pair (a refusal, the same on both sides):
# the settings tests/test_methods.py runs DPO's smoke run with, as an extra run that trains.
SMOKE_CONFIGS = {"dpo": ("offline pairs", "options: {reward: answer, pairs_from: start}\n")}


PACKAGE = "plasticity_bench"  # the one import name of a tree that has this folder
FOLDERS = ("harness", "tasks", "trainers", "reports")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def extract(commit: str, into: Path) -> None:
    """COMMIT's files into INTO (symbolic links stay links), leaving the repository untouched."""
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def methods_of(tree: Path) -> list[str]:
    """The method names `bench methods` lists for a tree (first column, after the header)."""
    try:
        listing = cli(tree, "methods", env_extra={}).stdout.splitlines()
    except RunFailed as error:
        raise SystemExit(f"`bench methods` failed in {tree}: {error}") from None
    names = [line.split()[0] for line in listing[1:] if line.strip()]
    return [name for name in names if name.isidentifier() and name.islower()]


class RunFailed(Exception):
    """`bench` exited non-zero; the message is its last stderr line (a BenchError is one line)."""


def modules_of(tree: Path) -> list[str]:
    """The names TREE's folders import under: plasticity_bench.<folder> where it has that package, else bare."""
    prefix = f"{PACKAGE}." if (tree / PACKAGE / "__init__.py").is_file() else ""
    return [prefix + folder for folder in FOLDERS]


def cli(tree: Path, *args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m <harness>.app.cli ARGS` with TREE's code: cwd and PYTHONPATH are the tree, which
    sys.path puts ahead of the editable install's finder (appended to sys.meta_path)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        **env_extra,
    }
    done = subprocess.run(
        [sys.executable, "-m", f"{modules_of(tree)[0]}.app.cli", *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise RunFailed(lines[-1])
    return done


def check_imports_from(tree: Path) -> None:
    """Guard the premise: in TREE, the CLI's packages must load from TREE, not from the install."""
    names = modules_of(tree)
    code = f"import importlib; print(*(importlib.import_module(n).__file__ for n in {names!r}))"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    files = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    outside = [f for f in files if not Path(f).resolve().is_relative_to(tree.resolve())]
    if outside:
        raise SystemExit(f"{tree}: imports code from elsewhere: {outside}")


def runs(methods: list[str], default: bool, work: Path) -> list[tuple[str, list[str]]]:
    """(label, CLI arguments) of every run to compare."""
    plan = [("rps (default)", ["run", "--method", "rps"])] if default else []
    for method in methods:
        plan.append((f"{method} (smoke)", ["run", "--method", method, "--preset", "smoke"]))
        if method in SMOKE_CONFIGS:
            what, settings = SMOKE_CONFIGS[method]
            config = work / f"{method}-smoke.yaml"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(settings)
            plan.append(
                (f"{method} (smoke, {what})", ["run", "--method", method, "--preset", "smoke", "-c", str(config)])
            )
    return plan


def folder_name(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def make_runs(tree: Path, base: Path, plan: list[tuple[str, list[str]]], cache: dict[str, str], reuse: bool) -> None:
    for label, args in plan:
        out = base / folder_name(label)
        done_marker = out.with_name(out.name + ".done")
        if reuse and done_marker.exists():
            print(f"  {label}: kept from an earlier call ({out})", flush=True)
            continue
        shutil.rmtree(out, ignore_errors=True)
        done_marker.unlink(missing_ok=True)
        start = time.perf_counter()
        try:
            cli(tree, *args, "--out", str(out), "-q", env_extra=cache)
            failure = ""
        except RunFailed as error:  # compared too: the same refusal on both sides is the same behaviour
            failure = str(error)
        done_marker.write_text(failure)
        print(f"  {label}: {time.perf_counter() - start:.0f} s{'; failed: ' + failure if failure else ''}", flush=True)


def final_weights(run: Path) -> dict[str, str]:
    """sha256 of each weight file of the run's last checkpoint folder (by step)."""
    folders = sorted(p for p in (run / "checkpoints").glob("step-*") if p.is_dir() and not p.name.endswith(".partial"))
    if not folders:
        return {}
    last = folders[-1]
    return {
        f"{last.name}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(last.iterdir())
        if f.suffix in WEIGHT_SUFFIXES
    }


def same_table(before: Path, after: Path) -> tuple[bool, str]:
    if not before.exists() and not after.exists():
        return True, "absent in both"
    if not before.exists() or not after.exists():
        return False, "absent in one"
    old, new = pd.read_parquet(before), pd.read_parquet(after)
    added = [c for c in new.columns if c not in old.columns]
    unexpected = [c for c in added if c not in NEW_COLUMNS]
    if unexpected or [c for c in old.columns if c not in new.columns]:
        return False, f"columns differ: {sorted(set(old.columns) ^ set(new.columns))}"
    new = new.drop(columns=added)
    if not old.equals(new):
        diff = [c for c in old.columns if not old[c].equals(new[c])]
        return False, f"values differ in {diff}" if diff else "shape or index differs"
    return True, f"{len(old)} rows" + (f"; new: {', '.join(added)}" if added else "")


def compare(before: Path, after: Path, plan: list[tuple[str, list[str]]]) -> list[tuple[str, str, bool, str]]:
    rows: list[tuple[str, str, bool, str]] = []
    for label, _ in plan:
        old, new = before / folder_name(label), after / folder_name(label)
        failures = [failure_of(run) for run in (old, new)]
        if None in failures or any(failures):
            same = None not in failures and failures[0] == failures[1]
            notes = ("not made" if f is None else f or "finished" for f in failures)
            rows.append((label, "the run itself", same, "before: {} / after: {}".format(*notes)))
            continue
        for table in TABLES:
            rows.append((label, table, *same_table(old / table, new / table)))
        old_w, new_w = final_weights(old), final_weights(new)
        note = ", ".join(old_w) or "no weight files"
        rows.append((label, "final weights (sha256)", bool(old_w) and old_w == new_w, note))
    return rows


def failure_of(run: Path) -> str | None:
    """The failing run's last stderr line; "" for a run that finished; None for one never made."""
    marker = run.with_name(run.name + ".done")
    return marker.read_text() if marker.exists() else None


def markdown(rows: list[tuple[str, str, bool, str]]) -> str:
    lines = ["| run | file | identical | note |", "|---|---|---|---|"]
    lines += [f"| {run} | {file} | {'yes' if same else '**no**'} | {note} |" for run, file, same, note in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="e15ef5c", help="the revision to compare the working tree with")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-identical")
    parser.add_argument("--methods", nargs="*", help="smoke runs of these methods (default: all `bench methods`)")
    parser.add_argument("--no-default", action="store_true", help="skip the default `bench run --method rps`")
    parser.add_argument(
        "--side",
        choices=("before", "after", "both", "compare"),
        default="both",
        help="before: make only REV's runs; after: make the working tree's and compare them with REV's kept "
        "runs; both: make both and compare; compare: only compare the runs earlier calls made",
    )
    parser.add_argument("--cache", help="organism cache shared by both trees (default: PLASTICITY_BENCH_CACHE)")
    args = parser.parse_args()

    commit = git("rev-parse", args.rev)
    cache = {"PLASTICITY_BENCH_CACHE": args.cache} if args.cache else {}
    methods = args.methods if args.methods is not None else methods_of(ROOT)
    plan = runs(methods, default=not args.no_default, work=args.work)
    before, after = args.work / commit[:12], args.work / "working-tree"
    print(f"rev {args.rev} = {commit[:12]}; runs: {', '.join(label for label, _ in plan)}", flush=True)

    if args.side in ("before", "both"):
        tree = Path(tempfile.mkdtemp(prefix="bench-identical-tree-"))
        try:
            extract(commit, tree)
            check_imports_from(tree)
            print(f"{commit[:12]} (in {tree}, as {modules_of(tree)[0]}):", flush=True)
            make_runs(tree, before, plan, cache, reuse=True)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
    if args.side in ("after", "both"):
        check_imports_from(ROOT)
        print("working tree:", flush=True)
        make_runs(ROOT, after, plan, cache, reuse=False)
    if args.side == "before":
        return
    rows = compare(before, after, plan)
    print()
    print(markdown(rows))
    sys.exit(0 if all(same for _, _, same, _ in rows) else 1)


if __name__ == "__main__":
    main()
