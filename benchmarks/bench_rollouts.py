"""Rollout backends for the RL and preference methods: the policy in memory (hf) vs a vLLM engine
synced to it before every rollout (vllm). Writes benchmarks/results/rollouts.md.

1. Per rollout, side by side in one process on the organism, alternating hf and vllm: GRPO's shape
   (4 prompts x G=8 samples, temperature 1, hard math) after an optimiser step each time, and
   DPO's one-shot shape (512 prompts x 8 samples). vllm's time is split into sync (write the
   weights + in-place reload) and generation; the engine start is reported on its own.
2. End to end: `bench run --method M --rollout-backend hf|vllm` on the embedded default, the
   train stage's wall time and what the run learned.

    python benchmarks/bench_rollouts.py [--organism DIR] [--rollouts 20] [--methods grpo dpo] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "rollouts.md"


@dataclass
class Timings:
    hf: list[float] = field(default_factory=list)
    vllm_sync: list[float] = field(default_factory=list)
    vllm_generate: list[float] = field(default_factory=list)


@dataclass
class Workload:
    """The rollouts both backends replay: GRPO-shaped prompt groups, then one DPO-shaped batch."""

    organism: Path
    tokenizer: object
    hard: list
    max_tokens: int
    grpo_prompts: list[list[str]]
    dpo_prompts: list[str]


def per_rollout(organism: Path, rollouts: int, scratch: Path) -> tuple[Timings, Timings, float, dict[str, float]]:
    """(GRPO-shape timings, DPO-shape timings, engine start seconds, training step seconds by engine state).

    hf is timed before any engine exists: a running engine's worker process competes for the
    cores (see `training_steps`). Both phases replay the same updates from the same start, so
    they sample from identical weights.
    """
    from plasticity_bench.harness.backends.base import SamplingParams
    from plasticity_bench.harness.backends.vllm_backend import VLLMBackend
    from plasticity_bench.trainers.rollouts import PolicySampler

    work = workload(organism, rollouts)
    tokenizer, hard = work.tokenizer, work.hard
    steps = {"no engine": training_steps(organism, tokenizer, hard)}
    grpo_hf, dpo_hf = replay(work, PolicySampler(), None)
    engine = VLLMBackend()
    synced = PolicySampler.with_engine(engine, scratch)
    model, _ = trainable(organism, tokenizer, hard)
    started = time.perf_counter()
    synced.sync(model, tokenizer)  # starts the engine
    engine_start = time.perf_counter() - started
    grpo_vllm, dpo_vllm = replay(work, synced, engine)
    engine.generate(work.dpo_prompts[:32], SamplingParams(work.max_tokens))
    steps["engine running, right after a generate"] = training_steps(organism, tokenizer, hard)
    time.sleep(10)
    steps["engine running, idle for 10 s"] = training_steps(organism, tokenizer, hard)
    synced.close()
    engine.close()
    grpo = Timings(grpo_hf.hf, grpo_vllm.vllm_sync, grpo_vllm.vllm_generate)
    dpo = Timings(dpo_hf.hf, dpo_vllm.vllm_sync, dpo_vllm.vllm_generate)
    return grpo, dpo, engine_start, steps


def workload(organism: Path, rollouts: int) -> Workload:
    """`rollouts` groups of 4 hard micro-suite prompts, and 512 such prompts for the DPO shape."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    import plasticity_bench.tasks  # noqa: F401  (registers the tasks)
    from plasticity_bench.tasks.base import get_task
    from plasticity_bench.tasks.suites import load_suite
    from plasticity_bench.tasks.suites.items import load_eval_items, training_items

    hf_logging.disable_progress_bar()  # save_pretrained's per-sync bar
    tokenizer = AutoTokenizer.from_pretrained(organism)
    micro = load_suite("micro")
    assert micro.hard is not None
    hard = training_items(micro, micro.hard, 4000, 0, load_eval_items(micro).prompts)
    max_tokens = get_task(hard[0].task).max_new_tokens
    grpo_prompts = [[hard[(4 * r + k) % len(hard)].prompt for k in range(4)] for r in range(rollouts)]
    dpo_prompts = [item.prompt for item in hard[:512]]
    return Workload(organism, tokenizer, hard, max_tokens, grpo_prompts, dpo_prompts)


def replay(work: Workload, sampler, engine) -> tuple[Timings, Timings]:
    """An update, then a GRPO-shaped rollout, `rollouts` times; then one DPO-shaped rollout."""
    from plasticity_bench.harness.backends.base import SamplingParams

    model, update = trainable(work.organism, work.tokenizer, work.hard)
    grpo, dpo = Timings(), Timings()
    for rollout, prompts in enumerate(work.grpo_prompts):
        update()
        params = SamplingParams(work.max_tokens, temperature=1.0, n=8, seed=rollout)
        timed(sampler, engine, model, work.tokenizer, grpo, prompts, params)
    params = SamplingParams(work.max_tokens, temperature=1.0, n=8, seed=0)
    timed(sampler, engine, model, work.tokenizer, dpo, work.dpo_prompts, params)
    return grpo, dpo


def timed(sampler, engine, model, tokenizer, into: Timings, prompts: list[str], params) -> None:
    """One rollout: sampled in memory where there is no engine, else a sync then the engine's generate."""
    t0 = time.perf_counter()
    if engine is None:
        sampler.sample(model, tokenizer, prompts, params)
        into.hf.append(time.perf_counter() - t0)
        return
    sampler.sync(model, tokenizer)
    t1 = time.perf_counter()
    engine.generate(prompts, params)
    into.vllm_sync.append(t1 - t0)
    into.vllm_generate.append(time.perf_counter() - t1)


def trainable(organism: Path, tokenizer, items) -> tuple[object, Callable[[], None]]:
    """The organism and a deterministic SFT update on it (the same sequence on every call)."""
    import torch
    from transformers import AutoModelForCausalLM

    from plasticity_bench.trainers.common import batches, sft_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(organism)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    stream = batches(tokenizer, items, 32, "bench-rollouts")

    def update() -> None:
        model.train()
        loss = sft_loss(model, next(stream))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return model, update


def training_steps(organism: Path, tokenizer, items, steps: int = 20) -> float:
    """Median seconds of one SFT step (batch 32) of the organism in this process."""
    _model, update = trainable(organism, tokenizer, items)
    update()  # warm-up
    seconds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        update()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds)


def end_to_end(method: str, rollout_backend: str, work: Path) -> dict:
    out = work / f"{method}-{rollout_backend}"
    if not (out / "summary.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "plasticity_bench.harness.app.cli",
                "run",
                "--method",
                method,
                "--rollout-backend",
                rollout_backend,
                "--out",
                str(out),
                "-q",
            ],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
    meta = json.loads((out / "run.json").read_text())
    summary = {f"{r['family']}/{r['slice']}": r for r in json.loads((out / "summary.json").read_text())}
    return {
        "train": meta["stages"]["train"]["seconds"],
        "rollouts": meta["rollouts"],
        "hard": summary["math/chain_sum/hard"]["change"],
        "reasoning": summary["reasoning/all"]["change"],
        "code": summary["code/all"]["change"],
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def base_organism() -> Path:
    """The embedded default organism's folder, as `bench base` prints it (built if needed)."""
    done = subprocess.run(
        [sys.executable, "-m", "plasticity_bench.harness.app.cli", "base", "-q"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(done.stdout.strip().splitlines()[-1])


def per_rollout_section(
    rollouts: int, methods: list[str], organism: Path, grpo: Timings, dpo: Timings, engine_start: float, steps
) -> list[str]:
    """The report's header and section 1: per-rollout times, training steps beside an engine, the break-even."""
    lines = [
        "# Rollouts: the policy in memory (hf) vs a vLLM engine synced to it (vllm)",
        "",
        f"Generated by `python benchmarks/bench_rollouts.py --rollouts {rollouts} --methods {' '.join(methods)}`.",
        "",
        f"## 1. Per rollout, organism `{organism}`",
        "",
        f"One process: first hf, then vllm (the engine's worker competes for the cores, see below), replaying the same updates so both "
        f"sample from the same weights with the same prompts. vllm = sync (write the policy's weights as a model folder, "
        f"then the engine's in-place reload) + generation. Engine start, once per run: **{engine_start:.1f} s**.",
        "",
        "| rollout shape | hf (in memory), median s | vllm sync, median s | vllm generate, median s | vllm total / hf |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, t in (
        (f"GRPO: 4 prompts x 8 samples, after an update ({rollouts} rollouts)", grpo),
        ("DPO/SPoT setup: 512 prompts x 8 samples (once)", dpo),
    ):
        vllm_total = median(t.vllm_sync) + median(t.vllm_generate)
        lines.append(
            f"| {label} | {median(t.hf):.3f} | {median(t.vllm_sync):.3f} | {median(t.vllm_generate):.3f} | {vllm_total / median(t.hf):.2f} |"
        )
    per_rollout_gain = median(grpo.hf) - (median(grpo.vllm_sync) + median(grpo.vllm_generate))
    breakeven = engine_start / per_rollout_gain if per_rollout_gain > 0 else float("inf")
    lines += [
        "",
        "One SFT step of the organism (batch 32, median of 20) in the training process, by the state of a vLLM engine beside it:",
        "",
        "| engine | step (s) |",
        "| --- | --- |",
        *[f"| {state} | {seconds:.3f} |" for state, seconds in steps.items()],
    ]
    if per_rollout_gain > 0:
        verdict = f"the engine start is repaid after **{breakeven:.0f} rollouts** (a default GRPO/PCR run makes 150)"
    else:
        verdict = "vllm is **slower per rollout** than the policy in memory, so its start is never repaid"
    lines += ["", f"GRPO-shaped rollouts: {verdict}.", ""]
    return lines


def end_to_end_section(methods: list[str], work: Path) -> list[str]:
    """Section 2: a `bench run` per method and rollout backend, its train stage split into its parts."""
    lines = [
        "## 2. End to end: `bench run --method M --rollout-backend B` (embedded default, seed 0)",
        "",
        "| method | rollout backend | train stage (s) | rollouts | engine start (s) | syncs total (s) | sampling total (s) | the rest of training (s) | hard change | reasoning change | code change |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in methods:
        for backend in ("hf", "vllm"):
            r = end_to_end(method, backend, work)
            s = r["rollouts"]
            rest = r["train"] - s["engine_start_seconds"] - s["sync_seconds"] - s["generate_seconds"]
            lines.append(
                f"| {method} | {backend} | {r['train']:.0f} | {s['rollouts']} | {s['engine_start_seconds']:.1f} | {s['sync_seconds']:.1f} | "
                f"{s['generate_seconds']:.1f} | {rest:.0f} | {r['hard']:+.1f} | {r['reasoning']:+.1f} | {r['code']:+.1f} |"
            )
    lines += [
        "",
        "The two backends draw different random samples (torch's sampler vs vLLM's), so the runs' scores differ "
        "within seed-to-seed noise; that the synced engine scores text exactly as the policy does after every update is what tests/test_rollouts.py checks.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--organism", type=Path, help="model folder [default: the embedded default organism, built if needed]"
    )
    parser.add_argument("--rollouts", type=int, default=20)
    parser.add_argument("--methods", nargs="*", default=["grpo", "dpo"])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-rollouts")
    args = parser.parse_args()
    started = time.perf_counter()
    organism = args.organism or base_organism()
    from bench_vllm import machine  # the same machine description as the vLLM benchmark (a sibling script)

    header = machine()
    grpo, dpo, engine_start, steps = per_rollout(
        organism, args.rollouts, Path(tempfile.mkdtemp(prefix="bench-rollouts-")) / "policy"
    )
    lines = per_rollout_section(args.rollouts, args.methods, organism, grpo, dpo, engine_start, steps)
    if args.methods:
        lines += end_to_end_section(args.methods, args.work)
    lines += [
        "",
        f"Whole benchmark: {(time.perf_counter() - started) / 60:.0f} min.",
        "",
        "## Machine",
        "",
        *header,
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
