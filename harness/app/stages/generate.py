"""The generate stage: completions of every evaluation item at every checkpoint the manifest
lists (n per item where a set samples), one backend for all; `generations/step-N.parquet` each.

Each checkpoint's generations are written as soon as they exist, so an error at a later
checkpoint (corrupt weights, say) keeps the earlier ones and a re-run resumes after them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plasticity_bench.harness.app.stages import timed
from plasticity_bench.harness.app.stages.prompts import eval_set_of, write_prompts
from plasticity_bench.harness.backends import BackendPool, GenerationBackend, SamplingParams
from plasticity_bench.harness.backends.auto import AUTO, GENERATION, BackendChoice, Workload, resolve_backend
from plasticity_bench.harness.backends.checkpoint import check_same_tensors, read_tensor_shapes
from plasticity_bench.harness.core.progress import progress_bar
from plasticity_bench.harness.store import RunStore, checkpoint_dir, read_manifest
from plasticity_bench.tasks.base import Item
from plasticity_bench.tasks.suites import EvalSet, Sampling, Suite


def generate(
    store: RunStore,
    suite: Suite,
    backend: BackendChoice,
    requested: str,
    backends: BackendPool,
    seed: int,
    quiet: bool,
    engines: int = 1,
) -> None:
    """Generate at every checkpoint the manifest lists (`bench run` and `bench eval`), unless done.
    `backend`: what `requested` (the config's backend) resolved to; `auto` is decided here.
    `engines`: independent engines sharing the checkpoints out (harness/app/engines.py)."""
    if not store.stage_done("generate"):
        choice = generation_backend(store, suite, backend, requested, backends)
        if engines > 1:
            from plasticity_bench.harness.app.engines import generate_spread  # it builds on this module

            timed(store, "generate", lambda: generate_spread(store, suite, choice, backends, seed, quiet, engines))
            return
        timed(store, "generate", lambda: generate_all(store, suite, choice, backends.get(choice.name), seed, quiet))


def generation_backend(
    store: RunStore, suite: Suite, requested: BackendChoice, config_backend: str, backends: BackendPool
) -> BackendChoice:
    """The backend `prepare` resolved; `auto` decided now, from the model and what is left to generate."""
    if config_backend != AUTO:
        return requested
    checkpoints = read_manifest(store.checkpoints)
    pending = sum(not store.generation_file(record.step).exists() for record in checkpoints)
    samplings = [eval_set_of(suite, item).sampling for item in store.items()]
    per_checkpoint = sum(sampling.max_new_tokens * sampling.n for sampling in samplings)
    workload = Workload(checkpoint_dir(store, checkpoints[0]), pending * per_checkpoint, backends.running_engines())
    return resolve_backend(AUTO, GENERATION, workload)


def generation_groups(suite: Suite, items: list[Item]) -> dict[tuple[str, Sampling], list[Item]]:
    """Items generated together, in one call to the backend: one group per task and sampling setting."""
    groups: dict[tuple[str, Sampling], list[Item]] = {}
    for item in items:
        groups.setdefault((item.task, eval_set_of(suite, item).sampling), []).append(item)
    return groups


def generate_all(
    store: RunStore, suite: Suite, backend_choice: BackendChoice, backend: GenerationBackend, seed: int, quiet: bool
) -> None:
    checkpoints = read_manifest(store.checkpoints)
    items = store.items()
    first = checkpoint_dir(store, checkpoints[0])
    reference = read_tensor_shapes(first)  # every checkpoint must store the same tensors as the start
    prompts = write_prompts(store, suite, items, first, seed)
    groups = generation_groups(suite, items)
    # what generated, if resumed elsewhere
    store.update_metadata(backend=backend_choice.name, backend_reason=backend_choice.reason)
    with progress_bar(len(checkpoints), f"generating ({backend_choice.name})", quiet) as advance:
        for record in checkpoints:
            if not store.generation_file(record.step).exists():
                model_dir = checkpoint_dir(store, record)
                check_same_tensors(model_dir, reference, first)
                backend.load(model_dir)
                store.write_generations(record.step, checkpoint_rows(backend, model_dir, suite, groups, prompts, seed))
            advance()
    # Training's rollouts and this stage share the object: one engine for the whole run is the goal.
    store.update_metadata(engines_started=backend.engines_started)
    if backend.engine_settings():  # what the engine reports it ran with (a run's `vllm:` settings, resolved)
        store.update_metadata(engine_settings=backend.engine_settings())


def checkpoint_rows(
    backend: GenerationBackend,
    model_dir: Path,
    suite: Suite,
    groups: dict[tuple[str, Sampling], list[Item]],
    prompts: dict[str, str],
    seed: int,
) -> list[dict[str, Any]]:
    """One loaded checkpoint's generations, group by group: item_id, sample, output (and lm-eval's scores)."""
    rows: list[dict[str, Any]] = []
    for group in groups.values():
        eval_set = eval_set_of(suite, group[0])
        if eval_set.source.runs_itself:
            rows += lmeval_generations(backend, model_dir, eval_set, group, seed)
            continue
        sampling = eval_set.sampling
        params = SamplingParams(
            sampling.max_new_tokens, sampling.temperature, sampling.top_p, sampling.n, seed, sampling.stop
        )
        completions = backend.generate([prompts[item.id] for item in group], params)
        rows += [
            {"item_id": item.id, "sample": k, "output": text}
            for item, texts in zip(group, completions)
            for k, text in enumerate(texts)
        ]
    return rows


def lmeval_generations(
    backend: GenerationBackend, model_dir: Path, eval_set: EvalSet, items: list[Item], seed: int
) -> list[dict[str, Any]]:
    """One lm-eval task on the loaded checkpoint: lm-eval renders, generates (through `backend`)
    and scores each document; every per-document metric is stored (harness/evaluation/lmeval_sets.py)."""
    from plasticity_bench.harness.evaluation.lmeval_adapter import evaluate_documents
    from plasticity_bench.harness.evaluation.lmeval_sets import generation_rows

    limit = max(item.meta["lmeval_doc_id"] for item in items) + 1
    reference = eval_set.source.task_reference()  # type: ignore[attr-defined]
    samples = evaluate_documents(backend, model_dir, reference, limit, seed)
    return generation_rows(samples, items)
