"""`bench`: the command line. Every user error is one line on stderr and exit status 2."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from plasticity_bench.harness.app.process_exit import end_process, is_entry_point
from plasticity_bench.harness.core.errors import BenchError, writing
from plasticity_bench.harness.core.interrupt import Interrupted, stop_on_signals

if TYPE_CHECKING:
    from plasticity_bench.harness.app.config import RunConfig
    from plasticity_bench.harness.app.watch import WatchSettings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Measure what post-training methods gain in-domain and forget elsewhere, step by step.",
)

PRESET_HELP = (
    "a shipped preset (tasks/presets: default, the embedded organism, minutes on a CPU; in-context, an organism "
    "pre-trained to learn from examples in its prompt; smoke, a few steps on tiny sets, for tests) or a preset "
    "YAML file"
)
REFRESH_HELP = (
    "the --out folder holds this run made on other data files or scorer versions: redo only what that affects "
    "(docs/data-identity.md)"
)
LIMIT_HELP = (
    "score only the first N items of each evaluation set (lm-eval's --limit; recorded in run.json and the run's "
    "identity)"
)
WATCH_HELP = (
    "follow one training output folder: score each checkpoint as it is complete, until training ends (docs/watch.md)"
)
REPORT_TO_HELP = (
    "experiment trackers, comma-separated: tensorboard, wandb (offline), mlflow (file store in the run folder); "
    "none: off (docs/tracking.md)"
)


ORGANISM_SEED_HELP = (
    "start from organism S of the family: the preset's organism pre-trained on this CPU with seed S (cached; "
    "docs/organism.md) [default: the preset's organism, shipped for the default preset]"
)


VLLM_SETTING_HELP = (
    "a vLLM engine argument as KEY=VALUE, repeatable (dtype=bfloat16, max_model_len=4096, ...): the keys of a run's "
    "`vllm:` block (docs/vllm-settings.md); with --backend vllm or auto"
)
ENGINES_HELP = (
    "independent generation engines sharing the checkpoints out, records identical to one engine: processes on a "
    "CPU, one GPU each on GPUs (docs/scale.md)"
)


def check_engines(engines: int | None, watch: bool = False) -> int | None:
    """--engines N: a positive number of generation engines (None: the config's); one with --watch."""
    if engines is not None and engines < 1:
        raise BenchError(f"--engines must be a positive number of generation engines, got {engines}")
    if watch and engines is not None and engines > 1:
        raise BenchError("--watch scores each checkpoint as it appears, with one engine: leave out --engines")
    return engines


PROCESSES_HELP = "training processes, data parallel (docs/scale.md) [default: the config's, 1]"
ACCELERATE_CONFIG_HELP = "accelerate's own config file, with --launcher accelerate (configs/accelerate/)"
STRATEGY_HELP = "ddp (whole models) or fsdp, zero3, zero2 (sharded by FSDP2, docs/scale.md) [default: ddp]"


def check_limit(limit: int | None) -> int | None:
    """--limit N: a positive number of items per evaluation set (None: every item)."""
    if limit is not None and limit <= 0:
        raise BenchError(f"--limit must be a positive number of items per evaluation set, got {limit}")
    return limit


@app.command()
def run(
    method: Optional[str] = typer.Option(
        None, "--method", "-m", help="post-training method (see `bench methods`) [default: the config file's, else rps]"
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run folder [default: runs/<method>-seed<seed>]"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML/JSON file of settings (docs/commands.md)"),
    preset: str = typer.Option("default", help=PRESET_HELP),
    seed: Optional[int] = typer.Option(None, help="seed for data order, initialisation and sampling"),
    organism_seed: Optional[int] = typer.Option(None, "--organism-seed", help=ORGANISM_SEED_HELP),
    steps: Optional[int] = typer.Option(
        None, help="post-training steps (default: the method's own: 300; GRPO, PCR and DPO 600; see `bench methods`)"
    ),
    model: Optional[str] = typer.Option(
        None, help="a Hugging Face model folder or hub id (org/name[@revision]) to start from instead of the organism"
    ),
    backend: Optional[str] = typer.Option(None, help="generation backend: hf, vllm or auto"),
    rollout_backend: Optional[str] = typer.Option(
        None, help="backend that samples the policy while training (grpo, pcr, dpo, spot): hf, vllm or auto"
    ),
    suite: Optional[str] = typer.Option(
        None, "--suite", "-s", help="a shipped suite (see `bench suites`) or a suite YAML file [default: micro]"
    ),
    limit: Optional[int] = typer.Option(None, "--limit", help=LIMIT_HELP),
    engines: Optional[int] = typer.Option(None, "--engines", help=ENGINES_HELP + " [default: the config's, 1]"),
    num_processes: Optional[int] = typer.Option(None, "--num-processes", help=PROCESSES_HELP),
    launcher: Optional[str] = typer.Option(None, "--launcher", help="torchrun or accelerate [default: torchrun]"),
    accelerate_config: Optional[str] = typer.Option(None, "--accelerate-config", help=ACCELERATE_CONFIG_HELP),
    strategy: Optional[str] = typer.Option(None, "--strategy", help=STRATEGY_HELP),
    refresh: bool = typer.Option(False, "--refresh", help=REFRESH_HELP),
    report_to: Optional[str] = typer.Option(None, "--report-to", help=REPORT_TO_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="print the device memory estimate per process and exit; nothing is written"
    ),
) -> None:
    """Train with METHOD on the suite's training sets, score every checkpoint (start included) on its
    evaluation sets, write the report."""
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.tracking import parse_report_to

    overrides = {
        "method": method,
        "seed": seed,
        "organism_seed": organism_seed,
        "steps": steps,
        "model": model,
        "backend": backend,
        "rollout_backend": rollout_backend,
        "suite": suite,
        "eval_per_slice": check_limit(limit),
        "engines": check_engines(engines),
        "report_to": parse_report_to(report_to),
        **{"num_processes": num_processes, "launcher": launcher, "accelerate_config": accelerate_config},
        "strategy": strategy,
    }
    run_config = load_config(preset, config, overrides)
    if dry_run:
        print_memory_estimate(run_config)
        return
    execute_run(run_config, out or Path("runs") / f"{run_config.method}-seed{run_config.seed}", refresh, quiet)


def execute_run(run_config: RunConfig, folder: Path, refresh: bool, quiet: bool) -> None:
    """`bench run` once its settings are checked: the run, then its summary table."""
    from plasticity_bench.harness.app.sharding import check_sharded_training  # --dry-run plans it all; training not

    check_sharded_training(run_config)  # what sharded training cannot do: one line before anything is written
    # torch and transformers: after the settings are checked
    from plasticity_bench.harness.app.run import execute
    from plasticity_bench.harness.app.stages.prepare import prepare

    started = time.time()
    with stop_on_signals():  # SIGINT/SIGTERM: stop with only complete files written, say how to resume
        store = execute(prepare(run_config, folder, refresh), quiet)
    summary = json.loads((store.root / "summary.json").read_text())
    typer.echo(format_summary(summary))
    typer.echo(f"run folder: {store.root}  ({time.time() - started:.0f} s)\nreport: {store.root / 'report.html'}")


def print_memory_estimate(run_config: RunConfig) -> None:
    """`bench run --dry-run`: the estimate's table (docs/gpu-recipes.md); exit 2 when it does not fit."""
    from plasticity_bench.harness.app.memory import dry_run

    lines, plan = dry_run(run_config)
    typer.echo("\n".join(lines))
    plan.check()


def format_summary(rows: list[dict]) -> str:
    width = max(
        [16, *(len(r["slice"]) for r in rows)]
    )  # every family's slices are listed: the longest name sets the column
    lines = [f"{'family':<10} {'slice':<{width}} {'start':>6} {'final':>6} {'change':>7}"]
    for r in rows:
        lines.append(
            f"{r['family']:<10} {r['slice']:<{width}} {r['start']:6.1f} {r['final']:6.1f} {r['change']:+7.1f}"
            f"{' *' if r['significant'] else ''}"
        )
    return "\n".join(lines + ["(* : the 95% interval of the change excludes 0)"])


@app.command()
def study(
    methods: Optional[str] = typer.Option(None, "--methods", help="comma-separated methods, e.g. sft,rps,eps"),
    arms: Optional[Path] = typer.Option(
        None, "--arms", help="a YAML file of labelled variants, label: {method: sft, lr: 1e-4} (docs/studies.md)"
    ),
    seeds: str = typer.Option("0,1,2", "--seeds", help="comma-separated seeds"),
    organism_seeds: Optional[str] = typer.Option(
        None,
        "--organism-seeds",
        help="comma-separated organisms (pre-training seeds) crossed with --seeds; the claims' intervals then "
        "treat organisms as the sampling unit (docs/studies.md) [default: the preset's organism]",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="study folder: one run folder per method and seed, study.html, study.json"
    ),
    preset: str = typer.Option("default", help=PRESET_HELP),
    suite: Optional[str] = typer.Option(
        None, "--suite", "-s", help="a shipped suite or a suite YAML file [default: micro]"
    ),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML/JSON file of settings for every run"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="runs in parallel (each one torch thread)"),
    claims: Optional[Path] = typer.Option(
        None, "--claims", help="a YAML file of more claims to check (docs/studies.md)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    ray: bool = typer.Option(False, "--ray", help="each run a task on a local Ray instance of --jobs CPUs"),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="each run a task on this Ray cluster (shared filesystem: docs/studies.md)"
    ),
    ray_cpus: float = typer.Option(1.0, "--ray-cpus-per-run", help="CPUs Ray reserves for each run"),
    ray_gpus: Optional[float] = typer.Option(
        None, "--ray-gpus-per-run", help="GPUs Ray gives each run [default: 1 when the run trains on a GPU, else 0]"
    ),
) -> None:
    """Run every method (or arm) × seed, resuming unfinished runs and skipping finished ones, then one
    comparison report with the claims' verdicts."""
    from plasticity_bench.harness.app.study import study as run_study
    from plasticity_bench.harness.app.study_ray import ray_options

    on_ray = ray_options(ray, ray_address, ray_cpus, ray_gpus)
    with writing(out):
        page, data = run_study(
            methods, seeds, out, preset, suite, config, jobs, claims, typer.echo, quiet, arms, on_ray, organism_seeds
        )  # positional to the end: ray, then organisms_text
    for claim in json.loads(data.read_text())["claims"]:
        typer.echo(f"{claim['verdict']:<13} {claim['claim']}")
    typer.echo(f"report: {page}\ndata: {data}")


@app.command()
def base(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML/JSON file of settings"),
    preset: str = typer.Option("default", help=PRESET_HELP),
    rebuild: bool = typer.Option(
        False,
        help="pre-train it on this machine again and say whether the weights equal the shipped (default preset) "
        "or the cached ones",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    organism_seed: Optional[int] = typer.Option(None, "--organism-seed", help=ORGANISM_SEED_HELP),
) -> None:
    """Print the organism's folder: shipped for the default preset, else cached (pre-trained on first use);
    with --organism-seed S, organism S of the family (pre-trained on this CPU on first use)."""
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.organism import rebuild as rebuild_organism
    from plasticity_bench.harness.app.organism_family import starting_organism
    from plasticity_bench.tasks.suites import load_suite

    run_config = load_config(preset, config, {"organism_seed": organism_seed})
    suite = load_suite(run_config.suite)
    if rebuild and organism_seed is not None:
        raise BenchError("bench base: --rebuild rebuilds the preset's organism; organism seeds are built once per CPU")
    if rebuild:
        folder, verdict = rebuild_organism(run_config.organism, suite, quiet)
        typer.echo(f"{folder}\n{verdict}")
    else:
        typer.echo(starting_organism(run_config.organism, suite, run_config.organism_seed, quiet))


@app.command()
def methods(
    options: Optional[str] = typer.Option(
        None, "--options", metavar="METHOD", help="list METHOD's options: type, default, allowed values, help"
    ),
) -> None:
    """List the post-training methods with their default η and run length; --options METHOD: its options."""
    if options is not None:
        from plasticity_bench.harness.app.methods import option_lines

        typer.echo("\n".join(option_lines(options)))
        return
    import plasticity_bench.trainers

    typer.echo(f"{'method':<6} {'η':>6} {'steps':>5}  description")
    for entry in plasticity_bench.trainers.TRAINERS:
        typer.echo(f"{entry.name:<6} {entry.obj.default_lr:>6g} {entry.obj.default_steps:>5}  {entry.description}")


@app.command()
def suites(
    check: Optional[str] = typer.Option(
        None,
        "--check",
        metavar="FILE",
        help="check a suite file (or shipped suite) without running it: every set's items, "
        "scorer and ignored settings, and every problem (exit 2)",
    ),
) -> None:
    """List the shipped suites: name, evaluation sets (family, role), and whether each set works offline;
    with --check FILE, check one suite file before any run (docs/suites.md)."""
    from plasticity_bench.tasks.suites import load_suite, shipped_suites

    if check is not None:
        raise typer.Exit(check_suite_file(check))
    for name in shipped_suites():
        suite = load_suite(name)
        typer.echo(f"{name:<12} {suite.description}")
        for eval_set in suite.eval_sets:
            typer.echo(
                f"    {eval_set.slice:<28} {eval_set.family:<10} {eval_set.role:<9} {eval_set.source.name:<13} "
                f"scorer {eval_set.scorer}"
                f"{f', {eval_set.sampling.n} samples' if eval_set.sampling.n > 1 else ''}"
                f"{' (optional)' if eval_set.optional else ''}"
            )


def check_suite_file(name_or_path: str) -> int:
    """`bench suites --check`: the sets on stdout, every problem on stderr (one line each); the exit status."""
    from plasticity_bench.tasks.suites.check import check_suite, format_check

    report = check_suite(name_or_path)
    if report.sets:
        typer.echo("\n".join(format_check(report)))
    for problem in report.problems:
        typer.echo(f"error: {problem}", err=True)
    if report.problems:
        return 2
    parts = [s.part for s in report.sets]
    typer.echo(f"ok: {parts.count('eval')} evaluation and {parts.count('train')} training sets")
    return 0


@app.command("eval")
def evaluate(
    checkpoints: list[Path] = typer.Argument(
        ...,
        help="model folders or hub ids (org/name[@revision]), checkpoint-N folders, training output folders "
        "holding them, or LoRA adapters",
    ),
    suite: str = typer.Option(..., "--suite", "-s", help="a shipped suite (see `bench suites`) or a suite YAML file"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder to write (the ordinary run-folder format)"),
    steps: Optional[str] = typer.Option(
        None, help="comma-separated training steps, one per plain model folder (e.g. 0,100,200)"
    ),
    base_model: Optional[Path] = typer.Option(
        None, "--base", help="the starting model (step 0) and LoRA base: a folder or hub id (org/name[@revision])"
    ),
    backend: str = typer.Option("hf", help="generation backend: hf, vllm or auto (one engine for the whole sweep)"),
    seed: int = typer.Option(0, help="seed for sampled evaluation sets"),
    label: str = typer.Option("eval", help="the name shown for this sweep in reports (as a method's would be)"),
    limit: Optional[int] = typer.Option(None, "--limit", "--eval-per-slice", help=LIMIT_HELP),
    engines: int = typer.Option(1, "--engines", help=ENGINES_HELP),
    refresh: bool = typer.Option(False, "--refresh", help=REFRESH_HELP),
    report_to: Optional[str] = typer.Option(None, "--report-to", help=REPORT_TO_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    watch: bool = typer.Option(False, "--watch", help=WATCH_HELP),
    watch_timeout: Optional[float] = typer.Option(None, help="--watch: end after this many seconds with no checkpoint"),
    watch_settle: float = typer.Option(30.0, help="--watch, no callback: seconds a checkpoint must stay unchanged"),
    vllm_setting: Optional[list[str]] = typer.Option(None, "--vllm-setting", help=VLLM_SETTING_HELP),
) -> None:
    """Score a sweep of checkpoints written by any trainer on a suite: records, report, compare and gate
    as for `bench run`."""
    step_list = parse_steps(steps)
    from plasticity_bench.harness.app.eval_vllm import parse_vllm_settings

    vllm = parse_vllm_settings(vllm_setting or [], backend)
    from plasticity_bench.harness.app.tracking import check_report_to, parse_report_to

    trackers = check_report_to(parse_report_to(report_to) or [])
    check_sweep_arguments(suite, engines, watch)
    if watch:  # follow one training output folder until its trainer ends (harness/app/watch.py)
        target = watch_target(checkpoints, step_list, refresh, trackers, watch_settle, watch_timeout)
        return watch_folder(target, suite, out, base_model, backend, seed, label, check_limit(limit), quiet, vllm)
    from plasticity_bench.harness.app.evaluate import evaluate_sweep  # torch, transformers: after the checks

    started = time.time()
    store = evaluate_sweep(
        checkpoints,
        suite,
        out,
        step_list,
        base_model,
        backend,
        seed,
        label,
        check_limit(limit),
        quiet,
        refresh=refresh,
        report_to=trackers,
        engines=engines,
        vllm=vllm,
    )
    echo_result(store.root, started)


def check_sweep_arguments(suite: str, engines: int, watch: bool) -> None:
    """What `bench eval` checks before torch & co. are imported (seconds): a suite that is neither shipped
    nor a file, and --engines. Checkpoint paths wait for the sweep: a malformed suite is reported first."""
    from plasticity_bench.harness.app.names import check_suite

    check_suite(suite)
    check_engines(engines, watch)


def echo_result(folder: Path, started: float) -> None:
    """A finished run folder's summary table, where it is and how long it took."""
    typer.echo(format_summary(json.loads((folder / "summary.json").read_text())))
    typer.echo(f"run folder: {folder}  ({time.time() - started:.0f} s)\nreport: {folder / 'report.html'}")


def watch_target(
    checkpoints: list[Path],
    steps: list[int] | None,
    refresh: bool,
    trackers: tuple[str, ...],
    settle: float,
    timeout: float | None,
) -> tuple[Path, WatchSettings]:
    """`bench eval --watch`: the folder it follows and how, checked before torch is imported."""
    from plasticity_bench.harness.app.watch import check_settings, check_watch

    return check_watch(checkpoints, steps, refresh, trackers), check_settings(settle, timeout)


def watch_folder(
    target: tuple[Path, WatchSettings],
    suite: str,
    out: Path,
    base_model: Optional[Path],
    backend: str,
    seed: int,
    label: str,
    limit: Optional[int],
    quiet: bool,
    vllm: object = None,
) -> None:
    from plasticity_bench.harness.app.watch import watch_sweep

    started = time.time()
    folder, settings = target
    store = watch_sweep(folder, suite, out, base_model, backend, seed, label, limit, quiet, settings, vllm)
    typer.echo(format_summary(json.loads((store.root / "summary.json").read_text())))
    typer.echo(f"run folder: {store.root}  ({time.time() - started:.0f} s)\nreport: {store.root / 'report.html'}")


@app.command("wise-ft")
def wise_ft(
    run_dir: Path = typer.Argument(
        ..., help="a `bench run` folder with its start and the checkpoint to interpolate towards"
    ),
    alphas: str = typer.Option("0,0.25,0.5,0.75,1", help="comma-separated α in [0, 1]: θ(α) = (1−α)·θ₀ + α·θ_N"),
    step: Optional[int] = typer.Option(None, help="the checkpoint θ_N (default: the run's last)"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder to write: the interpolated models and their scores"),
    backend: Optional[str] = typer.Option(None, help="generation backend: hf, vllm or auto (default: the run's)"),
    refresh: bool = typer.Option(False, "--refresh", help=REFRESH_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """WiSE-FT: score weight-space interpolations between a run's start and a checkpoint (step = 1000·α),
    a gain-vs-forgetting curve without training."""
    from plasticity_bench.harness.app.wiseft import parse_alphas
    from plasticity_bench.harness.app.wiseft import wise_ft as interpolate_and_score

    started = time.time()
    store = interpolate_and_score(run_dir, parse_alphas(alphas), step, out, backend, quiet, refresh)
    summary = json.loads((store.root / "summary.json").read_text())
    typer.echo(format_summary(summary))
    typer.echo(f"run folder: {store.root}  ({time.time() - started:.0f} s)\nreport: {store.root / 'report.html'}")


def parse_steps(text: str | None) -> list[int] | None:
    from plasticity_bench.harness.app.steps import (
        parse_steps as checked_steps,
    )  # the rule (increasing, distinct, >= 0) lives there

    return checked_steps(text)


@app.command()
def score(run_dir: Path = typer.Argument(..., help="a run folder")) -> None:
    """Re-score a run's stored generations (no generation), then re-write its report."""
    from plasticity_bench.harness.app.stages.report import report as report_stage
    from plasticity_bench.harness.app.stages.score import score as score_stage
    from plasticity_bench.harness.store import RunStore

    store = RunStore.open(run_dir)
    with writing(run_dir):
        score_stage(store, again=True)
        report_stage(store)
    typer.echo(f"scored: {run_dir / 'aggregates.parquet'}")


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="one or more scored run folders (the same suite and eval sets)"),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="HTML file [default: RUN/report.html for one run]"
    ),
) -> None:
    """Write one self-contained HTML report comparing the runs, from stored scores (no scoring)."""
    from plasticity_bench.harness.store import RunStore
    from plasticity_bench.reports.html import write_report

    stores = [RunStore.open(d) for d in run_dirs]
    if output is None and len(stores) > 1:
        raise BenchError("several runs need --output FILE for the combined report")
    with writing(output or stores[0].root, named_by_user=output is not None):
        typer.echo(write_report(stores, output or stores[0].root / "report.html"))


@app.command()
def compare(
    a: Path = typer.Argument(..., help="run folder or baseline file (the reference)"),
    b: Path = typer.Argument(..., help="run folder or baseline file"),
    step_a: Optional[int] = typer.Option(None, help="checkpoint step of A [default: its last]"),
    step_b: Optional[int] = typer.Option(None, help="checkpoint step of B [default: its last]"),
    json_file: Optional[Path] = typer.Option(None, "--json", help="also write the comparison as JSON to FILE"),
) -> None:
    """Per family, B − A on the same items: paired McNemar test (accuracy) and paired bootstrap (graded score)."""
    from plasticity_bench.harness.evaluation import gate as gating
    from plasticity_bench.harness.evaluation.runs import load_results

    first, second = load_results(a, step_a), load_results(b, step_b)
    rows = gating.compare(first, second)
    if json_file:
        with writing(json_file, named_by_user=True):
            json_file.write_text(json.dumps(gating.compare_json(first, second, rows), indent=2))
    typer.echo(gating.compare_summary(first, second, rows))


@app.command()
def gate(
    baseline: Path = typer.Option(
        ..., "--baseline", "-b", help="run folder or baseline file from `bench export-baseline`"
    ),
    candidate: Path = typer.Option(..., "--candidate", "-c", help="run folder (or baseline file) to check"),
    max_drop: list[str] = typer.Option(
        [], "--max-drop", help="allowed drop in points: POINTS (every family) or FAMILY=POINTS; repeatable [default: 5]"
    ),
    candidate_step: Optional[int] = typer.Option(None, help="checkpoint step of the candidate [default: its last]"),
    json_file: Optional[Path] = typer.Option(
        None, "--json", help="write the verdict as JSON to FILE ('-': to stdout, instead of the summary)"
    ),
    strict: bool = typer.Option(False, help="fail on an inconclusive family too"),
) -> None:
    """Exit 1 if any family of the candidate dropped beyond its allowed drop vs the baseline, else 0."""
    from plasticity_bench.harness.evaluation import gate as gating
    from plasticity_bench.harness.evaluation.runs import load_results

    result = gating.gate(load_results(baseline), load_results(candidate, candidate_step), max_drop, strict)
    verdict = json.dumps(gating.gate_json(result), indent=2)
    if json_file and str(json_file) == "-":
        typer.echo(verdict)
    else:
        if json_file:
            with writing(json_file, named_by_user=True):
                json_file.write_text(verdict + "\n")
        typer.echo(gating.gate_summary(result))
    if result.exit_status:
        sys.exit(result.exit_status)


@app.command("export-baseline")
def export_baseline(
    run_dir: Path = typer.Argument(..., help="a scored run folder"),
    output: Path = typer.Option(..., "--output", "-o", help="baseline JSON file to write (commit it for `bench gate`)"),
    step: Optional[int] = typer.Option(None, help="checkpoint step [default: the last]"),
) -> None:
    """Write a checkpoint's per-item results, suite and eval-set hashes: a baseline for `bench gate`."""
    from plasticity_bench.harness.evaluation.gate import export_baseline as write_baseline

    with writing(output, named_by_user=True):
        typer.echo(write_baseline(run_dir, output, step))


def silence_libraries() -> None:
    """Our own progress bars are enough: hide the libraries' bars (transformers' per-file load/save
    bars, lm-eval's per-task bars) and their notices. Environment variables only, so `--help` and
    usage errors import nothing heavy; the libraries read them when they are imported later."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars follow huggingface_hub's switch
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # tqdm reads TQDM_* once, when it is imported, as defaults for every bar: third-party bars (lm-eval's)
    # stay hidden, ours pass `disable=quiet` explicitly and still show unless -q
    os.environ.setdefault("TQDM_DISABLE", "1")
    if "transformers" in sys.modules:  # already imported (the CLI called inside another program): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


NETWORK_COMMANDS = frozenset(
    {"run", "eval", "suites", "study", "base", "wise-ft", "score"}
)  # may reach the Hugging Face hub


def main() -> None:
    silence_libraries()
    if NETWORK_COMMANDS & set(sys.argv[1:2]) and "--help" not in sys.argv:
        from plasticity_bench.harness.app.offline import go_offline_without_network

        go_offline_without_network()  # before any Hugging Face library is imported: they read it once
    try:
        # standalone_mode=False: typer *returns* an exit status instead of exiting (130 on Ctrl-C
        # outside `bench run`, or a command's typer.Exit(code)); pass it on.
        status = app(standalone_mode=False)
    except BenchError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except Interrupted as stop:  # `bench run` stopped by SIGINT/SIGTERM: one line, 130 / 143
        typer.echo(stop.message, err=True)
        sys.exit(stop.exit_status)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as error:  # click's usage errors carry their own exit code
        # duck-typed: typer >= 0.2x raises its vendored copy of click's exceptions, not click's own
        if hasattr(error, "show") and hasattr(error, "exit_code"):
            error.show()
            sys.exit(error.exit_code)
        raise
    if isinstance(status, int) and status:
        if status == 130:
            typer.echo("interrupted", err=True)
        sys.exit(status)
    if is_entry_point(main):  # skip the interpreter's teardown of torch & co: seconds, every run
        end_process(0)


if __name__ == "__main__":
    main()
