"""`bench wise-ft`: WiSE-FT (Wortsman et al. 2022) weight-space interpolation of one run.

    θ(α) = (1 − α)·θ₀ + α·θ_N,        α ∈ --alphas (default 0, 0.25, 0.5, 0.75, 1)

θ₀ = the run's starting model (checkpoint 0), θ_N = its checkpoint at --step (default the last).
Each θ(α) is written as a model folder (`OUT/interpolated/step-NNNNNN/`, every floating-point
tensor interpolated in float32 and stored in the checkpoint's dtype; the config, tokenizer and
any other file are θ_N's), then the folders are scored as a `bench eval` sweep on the run's
suite, evaluation items, seed and generation backend: a gain-versus-forgetting curve from one
run, with no training. α = 0 is θ₀ and α = 1 is θ_N bit for bit, so their records equal the
run's own records at steps 0 and N.

Steps: the sweep's step of θ(α) is round(1000·α) (α in thousandths: the reports' x-axis reads
α×1000), so α values must differ by at least 0.001. run.json records `wise_ft`: the source run,
N, and α for every step; each model folder holds `wise_ft.json` with its α.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from plasticity_bench.harness.app.evaluate import evaluate_sweep
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.store import RunStore, checkpoint_dir, checkpoint_name, read_manifest, write_folder_atomic
from plasticity_bench.tasks.suites import load_suite

INTERPOLATED = "interpolated"


def alpha_step(alpha: float) -> int:
    """The sweep step of θ(α): α in thousandths."""
    return round(1000 * alpha)


def parse_alphas(text: str) -> list[float]:
    try:
        alphas = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"--alphas must be comma-separated numbers in [0, 1], got {text!r}") from None
    if not alphas:
        raise BenchError("--alphas: give at least one α in [0, 1]")
    outside = [a for a in alphas if not 0 <= a <= 1]
    if outside:
        raise BenchError(f"--alphas: α = {outside[0]} is outside [0, 1]")
    steps = [alpha_step(a) for a in alphas]
    if len(set(steps)) < len(steps):
        raise BenchError(
            "--alphas: two α values round to the same thousandth; give distinct values at least 0.001 apart"
        )
    return sorted(alphas)


def interpolate(start: Path, final: Path, alpha: float, target: Path) -> None:
    """θ(α) = (1 − α)·θ₀ + α·θ_N as a model folder: θ_N's files, its safetensors interpolated."""
    shards = sorted(p.name for p in final.glob("*.safetensors"))
    if not shards:
        raise BenchError(f"wise-ft needs safetensors weights; checkpoint {final} has none")

    def write(partial: Path) -> None:
        shutil.copytree(final, partial, ignore=shutil.ignore_patterns("*.safetensors"))
        for shard in shards:
            save_file(interpolated(start, final, shard, alpha), str(partial / shard), metadata={"format": "pt"})
        (partial / "wise_ft.json").write_text(
            json.dumps({"alpha": alpha, "start": str(start), "end": str(final)}, indent=2)
        )

    write_folder_atomic(target, write)


def interpolated(start: Path, final: Path, shard: str, alpha: float) -> dict[str, torch.Tensor]:
    """One safetensors shard of θ(α): every floating-point tensor mixed in float32, stored in θ_N's dtype."""
    if not (start / shard).is_file():
        raise BenchError(
            f"the start {start} and checkpoint {final} store their weights differently ({shard}); "
            "they cannot be interpolated"
        )
    theta0, theta_n = load_file(start / shard), load_file(final / shard)
    if theta0.keys() != theta_n.keys() or any(theta0[k].shape != theta_n[k].shape for k in theta0):
        raise BenchError(
            f"the start {start} and checkpoint {final} hold different tensors in {shard}; they cannot be interpolated"
        )
    mixed = {}
    for name, end in theta_n.items():
        if not end.is_floating_point() or alpha == 1:
            mixed[name] = end
        elif alpha == 0:
            mixed[name] = theta0[name]
        else:  # θ(α) = (1−α)·θ₀ + α·θ_N
            mixed[name] = ((1 - alpha) * theta0[name].float() + alpha * end.float()).to(end.dtype)
    return mixed


def endpoints(source: RunStore, step: int | None) -> tuple[Path, Path, int]:
    """θ₀'s and θ_N's model folders in the source run, and N (`step`, or the run's last checkpoint)."""
    run_dir = source.root
    try:
        records = read_manifest(source.checkpoints)
    except (OSError, ValueError, TypeError):
        raise BenchError(f"run {run_dir} has no checkpoint manifest: it has not trained") from None
    by_step = {record.step: record for record in records}
    end = records[-1] if step is None else by_step.get(step)
    if end is None:
        raise BenchError(
            f"--step {step}: run {run_dir} has no such checkpoint; "
            f"its checkpoints: {', '.join(str(s) for s in by_step)}"
        )
    if end.step == records[0].step:
        raise BenchError(f"--step {end.step} is the run's start: there is nothing to interpolate towards")
    start_dir, end_dir = checkpoint_dir(source, records[0]), checkpoint_dir(source, end)
    for folder in (start_dir, end_dir):
        if not folder.is_dir():
            raise BenchError(
                f"the model folder {folder} is gone (keep_checkpoints?); wise-ft needs the start and step {end.step}"
            )
    return start_dir, end_dir, end.step


def wise_ft(
    run_dir: Path,
    alphas: Sequence[float],
    step: int | None,
    out: Path,
    backend: str | None,
    quiet: bool,
    refresh: bool = False,
) -> RunStore:
    source = RunStore.open(run_dir)
    meta = source.metadata()
    start_dir, end_dir, end_step = endpoints(source, step)
    config = meta["config"]
    suite = config.get("suite", meta["suite"])
    if load_suite(suite).sha256 != meta.get("suite_sha256"):
        raise BenchError(
            f"suite {suite} has changed since run {run_dir} was made; "
            "its WiSE-FT curve would not be comparable with the run"
        )
    by_alpha = {alpha_step(a): a for a in alphas}
    folders = [out / INTERPOLATED / checkpoint_name(s) for s in by_alpha]
    info = {
        "run": str(run_dir.resolve()),
        "run_fingerprint": meta.get("fingerprint"),
        "from_step": end_step,
        "alphas": {str(s): a for s, a in by_alpha.items()},
        "step_is": "round(1000 * alpha)",
    }

    def make_models(store: RunStore) -> None:
        for folder, alpha in zip(folders, by_alpha.values()):
            if not (folder / "wise_ft.json").is_file():
                interpolate(start_dir, end_dir, alpha, folder)
        store.update_metadata(wise_ft=info)

    return evaluate_sweep(
        folders,
        suite,
        out,
        list(by_alpha),
        None,
        backend or meta["backend"],
        int(meta["seed"]),
        f"{meta['method']}+wise-ft",
        config.get("eval_per_slice"),
        quiet,
        identity_extra={"wise_ft": info},
        make_models=make_models,
        refresh=refresh,
    )
