"""The run, stage by stage: train → generate → score → report.

Each stage reads what the previous one wrote in the run folder and records itself as done in
run.json, so a re-run skips finished stages and `bench score` / `bench report` redo one stage
alone. All input is validated in `prepare` before anything is written.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass, replace
from pathlib import Path

import pandas as pd
from transformers import AutoModelForCausalLM, AutoTokenizer

import tasks  # noqa: F401  (registers the tasks)
import trainers  # noqa: F401  (registers the methods)
from harness.app.config import RunConfig, method_options
from harness.app.organism import OrganismConfig, build_tokenizer, ensure_organism
from harness.backends import BACKENDS, BackendPool, GenerationBackend, SamplingParams
from harness.backends.auto import AUTO, GENERATION, ROLLOUTS, BackendChoice, Workload, resolve_backend
from harness.backends.checkpoint import check_prompts_fit, check_same_tensors, context_length, read_model_config, read_tensor_shapes
from harness.core import provenance
from harness.core.errors import BenchError, writing
from harness.core.progress import progress_bar
from harness.evaluation.scoring import score_run
from harness.store import (
    REPORT_FILE,
    RUN_FILE,
    TRAIN_LOG_FILE,
    CheckpointRecord,
    RunStore,
    checkpoint_name,
    read_manifest,
    save_checkpoint,
    write_manifest,
)
from tasks.base import Item, content_hash, get_task
from tasks.suites import SUITES, Suite, eval_items, training_items
from trainers.common import (
    TRAINERS,
    LoopConfig,
    MethodSettings,
    TrainContext,
    Trainer,
    TrainingData,
    train,
)
from trainers.rollouts import POLICY_FOLDER, PolicySampler


@dataclass(frozen=True)
class PreparedRun:
    config: RunConfig
    out: Path
    suite: Suite
    trainer: Trainer
    items: tuple[Item, ...]
    backend: BackendChoice  # config.backend resolved (auto → hf or vllm)
    rollouts: BackendChoice | None  # config.rollout_backend resolved; None when the method never samples


def prepare(config: RunConfig, out: Path) -> PreparedRun:
    """Resolve every name and check the output folder; raises BenchError, writes nothing."""
    trainer_class = TRAINERS.get(config.method)
    trainer = trainer_class(method_options(trainer_class.Options, config.options, config.method))
    if config.lr is None:  # the method's own default η, resolved before the run is fingerprinted
        config = replace(config, lr=trainer_class.default_lr)
    backend = resolve_backend(config.backend)
    rollouts = resolve_backend(config.rollout_backend, ROLLOUTS) if trainer_class.samples_policy else None
    if config.suite not in SUITES:
        raise BenchError(f"unknown suite {config.suite!r}; known: {', '.join(SUITES)}")
    suite = SUITES[config.suite]
    RunStore.check_target(out, config.fingerprint())
    items = eval_items(suite, config.eval_per_slice)
    if config.model is None:
        check_prompts_fit_organism(config.organism, items)
    return PreparedRun(config, out, suite, trainer, items, backend, rollouts)


def check_prompts_fit_organism(organism: OrganismConfig, items: Sequence[Item]) -> None:
    """organism.max_positions must hold every evaluation prompt and its completion: found now,
    not after pre-training and training (the generate stage checks any model the same way)."""
    tokenizer = build_tokenizer()
    by_task: dict[str, list[int]] = {}
    for item in items:
        by_task.setdefault(item.task, []).append(len(tokenizer.encode(item.prompt, add_special_tokens=False)))
    for task_name, lengths in by_task.items():
        needed = max(lengths) + get_task(task_name).max_new_tokens
        if needed > organism.max_positions:
            raise BenchError(f"organism.max_positions ({organism.max_positions}) is too short for task {task_name}: its longest prompt has "
                             f"{max(lengths)} tokens and {get_task(task_name).max_new_tokens} more are generated; set it to at least {needed}")


def execute(run: PreparedRun, quiet: bool = False) -> RunStore:
    """Every stage not yet done. A foreseeable failure to write the run folder (no permission, a
    full disk) becomes a BenchError naming it; a new run that fails with a BenchError at any stage
    (e.g. a method found nothing to train on) is removed, so no half-made run folder is left."""
    existed, new_run = run.out.exists(), not (run.out / RUN_FILE).is_file()
    try:
        with writing(run.out):
            return execute_stages(run, quiet)
    except BenchError:
        if new_run:
            remove_unfinished(run.out, keep_folder=existed)
        raise


def remove_unfinished(folder: Path, keep_folder: bool) -> None:
    """Delete a failed new run; an (empty) folder the user made beforehand stays, emptied."""
    if not keep_folder:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def execute_stages(run: PreparedRun, quiet: bool) -> RunStore:
    base_model = Path(run.config.model) if run.config.model else ensure_organism(run.config.organism, run.suite, quiet)
    store = RunStore.open_or_create(run.out, run_metadata(run, base_model), run.items)
    with BackendPool() as backends:  # a vLLM engine started for rollouts also generates
        if not store.stage_done("train"):
            timed(store, "train", lambda: train_stage(store, run, base_model, backends, quiet))
        if not store.stage_done("generate"):
            choice = generation_backend(store, run, backends)
            timed(store, "generate", lambda: generate_stage(store, choice, backends.get(choice.name), quiet))
    if not store.stage_done("score"):
        timed(store, "score", lambda: score_run(store))
    timed(store, "report", lambda: report_stage(store))
    return store


def timed(store: RunStore, stage: str, work: Callable[[], object]) -> None:
    """Run one stage and mark it done in run.json with its wall time."""
    started = time.time()
    work()
    store.mark_stage(stage, True, seconds=round(time.time() - started, 2))


def run_metadata(run: PreparedRun, base_model: Path) -> dict:
    by_slice: dict[str, list[Item]] = {}
    for item in run.items:
        by_slice.setdefault(f"{item.task}/{item.level}", []).append(item)
    return {
        "fingerprint": run.config.fingerprint(),
        "method": run.config.method,
        "suite": run.suite.name,
        "seed": run.config.seed,
        "config": run.config.to_dict(),
        "base_model": str(base_model),
        "backend": run.backend.name,
        "backend_reason": run.backend.reason,
        "rollout_backend": run.rollouts and run.rollouts.name,
        "rollout_backend_reason": run.rollouts.reason if run.rollouts else "the method does not sample its policy",
        "eval_sets": {name: {"n": len(items), "sha256": content_hash(items)} for name, items in by_slice.items()},
        "eval_set_sha256": content_hash(run.items),
        "method_options": asdict(run.trainer.options) if is_dataclass(run.trainer.options) and not isinstance(run.trainer.options, type) else {},
        "provenance": provenance.collect(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ---------------------------------------------------------------- stages


def train_stage(store: RunStore, run: PreparedRun, base_model: Path, backends: BackendPool, quiet: bool) -> None:
    """Checkpoint 0 is the starting model; then the method's stages, checkpointing as they go."""
    config = run.config
    for stale in (store.checkpoints, store.generations):  # an unfinished earlier attempt
        shutil.rmtree(stale, ignore_errors=True)
    store.checkpoints.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    records = [CheckpointRecord(0, "start", 0.0, None, 0, f"checkpoints/{checkpoint_name(0)}")]
    save_checkpoint(model, tokenizer, store.checkpoints / checkpoint_name(0))
    write_manifest(store.checkpoints, records)

    def save(step: int, stage: str, lr: float, loss: float, examples_seen: int) -> None:
        save_checkpoint(model, tokenizer, store.checkpoints / checkpoint_name(step))
        records.append(CheckpointRecord(step, stage, lr, loss, examples_seen, f"checkpoints/{checkpoint_name(step)}"))
        write_manifest(store.checkpoints, records)

    data = TrainingData(
        easy=training_items(run.suite, *run.suite.easy, config.train_examples, config.seed),
        hard=training_items(run.suite, *run.suite.hard, config.train_examples, config.seed),
    )
    assert config.lr is not None, "prepare() resolves the method's default learning rate"
    settings = MethodSettings(config.steps, config.lr, config.stage2_lr_ratio, config.stage1_fraction)
    loop = LoopConfig(
        config.batch_size, config.warmup_fraction, config.min_lr_ratio, config.weight_decay, config.grad_clip, config.checkpoint_every, config.seed
    )
    sampler = rollout_sampler(run.rollouts, backends, store.root / POLICY_FOLDER)
    ctx = TrainContext(tokenizer, loop, run_dir=store.root, sampler=sampler)
    try:
        run.trainer.setup(model, data, ctx)
        with progress_bar(config.steps, f"training ({config.method})", quiet) as advance:
            log = train(model, run.trainer, run.trainer.stages(data, settings), ctx, save, lambda _step, loss: advance(loss))
    finally:
        sampler.close()
    store.write_table(TRAIN_LOG_FILE, pd.DataFrame(log))
    if run.rollouts:
        store.update_metadata(rollouts=asdict(sampler.stats))


def rollout_sampler(choice: BackendChoice | None, backends: BackendPool, scratch: Path) -> PolicySampler:
    """In memory where the backend samples a policy in memory (and for methods that never sample);
    else the run's engine of that backend, synced per rollout."""
    if choice is None or BACKENDS.get(choice.name).capabilities.policy_in_memory:
        return PolicySampler()
    return PolicySampler.with_engine(backends.get(choice.name), scratch)


def generation_backend(store: RunStore, run: PreparedRun, backends: BackendPool) -> BackendChoice:
    """The backend `prepare` resolved; `auto` decided now, from the model and what is left to generate."""
    if run.config.backend != AUTO:
        return run.backend
    checkpoints = read_manifest(store.checkpoints)
    pending = sum(not store.generation_file(record.step).exists() for record in checkpoints)
    new_tokens = pending * sum(get_task(item.task).max_new_tokens for item in store.items())
    workload = Workload(store.root / checkpoints[0].path, new_tokens, backends.running_engines())
    return resolve_backend(AUTO, GENERATION, workload)


def generate_stage(store: RunStore, backend_choice: BackendChoice, backend: GenerationBackend, quiet: bool) -> None:
    """Greedy completions of every evaluation item at every checkpoint, one backend for all.

    Each checkpoint's generations are written as soon as they exist, so an error at a later
    checkpoint (corrupt weights, say) keeps the earlier ones and a re-run resumes after them.
    """
    checkpoints = read_manifest(store.checkpoints)
    by_task: dict[str, list[Item]] = {}
    for item in store.items():
        by_task.setdefault(item.task, []).append(item)
    first = store.root / checkpoints[0].path
    reference = read_tensor_shapes(first)  # every checkpoint must store the same tensors as the start
    check_prompts_fit_model(first, by_task)
    store.update_metadata(backend=backend_choice.name, backend_reason=backend_choice.reason)  # what generated, if resumed elsewhere
    with progress_bar(len(checkpoints), f"generating ({backend_choice.name})", quiet) as advance:
        for record in checkpoints:
            if not store.generation_file(record.step).exists():
                check_same_tensors(store.root / record.path, reference, first)
                backend.load(store.root / record.path)
                ids, outputs = [], []
                for task_name, task_items in by_task.items():
                    params = SamplingParams(max_new_tokens=get_task(task_name).max_new_tokens)
                    ids += [item.id for item in task_items]
                    outputs += [samples[0] for samples in backend.generate([item.prompt for item in task_items], params)]
                store.write_generations(record.step, ids, outputs)
            advance()
    # Training's rollouts and this stage share the object: one engine for the whole run is the goal.
    store.update_metadata(engines_started=backend.engines_started)


def check_prompts_fit_model(model_dir: Path, by_task: dict[str, list[Item]]) -> None:
    """BenchError before any generation if some task's prompt + completion exceeds the model's context."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    limit = context_length(read_model_config(model_dir))
    for task_name, task_items in by_task.items():
        lengths = [len(tokenizer.encode(item.prompt, add_special_tokens=False)) for item in task_items]
        check_prompts_fit(lengths, get_task(task_name).max_new_tokens, limit, f"task {task_name} on model {model_dir}")


def report_stage(store: RunStore) -> Path:
    from reports.html import write_report  # matplotlib is imported only when a report is made

    return write_report([store], store.root / REPORT_FILE)
