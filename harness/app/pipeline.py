"""The run, stage by stage: train → generate → score → report.

Each stage reads what the previous one wrote in the run folder and records itself as done in
run.json, so a re-run skips finished stages and `bench score` / `bench report` redo one stage
alone. All input is validated in `prepare` before anything is written.

Training resumes too: every checkpoint is a model folder plus a training-state file beside it
(`checkpoints/step-N.trainer_state.pt`, see trainers/common.py), both written before the
manifest names the checkpoint. A re-run of a run stopped during training (a kill, a crash,
SIGINT/SIGTERM) starts from the last checkpoint in the manifest, drops whatever was written
after it, and ends with the same weights, log and records as a run that never stopped.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import plasticity_bench.tasks  # noqa: F401  (registers the tasks)
import plasticity_bench.trainers  # noqa: F401  (registers the methods)
from plasticity_bench.harness.app.config import LoraSettings, RunConfig, lora_settings, method_options
from plasticity_bench.harness.app.organism import (
    OrganismConfig,
    build_model,
    build_tokenizer,
    ensure_organism,
    organism_path,
)
from plasticity_bench.harness.app.refresh import Refresh, check_data
from plasticity_bench.harness.app.refresh import apply as apply_refresh
from plasticity_bench.harness.app.tracking import open_tracking
from plasticity_bench.harness.backends import BACKENDS, BackendPool, GenerationBackend, SamplingParams
from plasticity_bench.harness.backends.auto import AUTO, GENERATION, ROLLOUTS, BackendChoice, Workload, resolve_backend
from plasticity_bench.harness.backends.checkpoint import (
    check_prompts_fit,
    check_same_tensors,
    context_length,
    read_model_config,
    read_tensor_shapes,
)
from plasticity_bench.harness.core import provenance
from plasticity_bench.harness.core.errors import BenchError, warn, writing
from plasticity_bench.harness.core.interrupt import Interrupted, kill_point, uninterruptible
from plasticity_bench.harness.core.progress import progress_bar
from plasticity_bench.harness.evaluation.kl import KL_PROMPTS, kl_to_start
from plasticity_bench.harness.evaluation.scoring import score_run
from plasticity_bench.harness.store import (
    MANIFEST,
    PROMPTS_FILE,
    REPORT_FILE,
    RUN_FILE,
    TRAIN_LOG_FILE,
    TRAINER_STATE_SUFFIX,
    CheckpointRecord,
    RunStore,
    checkpoint_name,
    load_trainer_state,
    read_manifest,
    save_checkpoint,
    save_trainer_state,
    trainer_state_path,
    write_manifest,
)
from plasticity_bench.tasks.base import Item, content_hash
from plasticity_bench.tasks.identity import fingerprinted, suite_identity
from plasticity_bench.tasks.prompting import PromptFormat, render
from plasticity_bench.tasks.suites import SHIPPED as SHIPPED_SUITES
from plasticity_bench.tasks.suites import EvalSet, Sampling, Suite, load_suite
from plasticity_bench.tasks.suites.check import check_training
from plasticity_bench.tasks.suites.items import EvalItems, load_eval_items, training_items
from plasticity_bench.tasks.suites.items import foundation_items as suite_foundation_items
from plasticity_bench.tasks.verify import max_new_tokens
from plasticity_bench.trainers.common import (
    TRAINERS,
    Checkpoint,
    LoopConfig,
    MethodSettings,
    TrainContext,
    Trainer,
    TrainingData,
    train,
)
from plasticity_bench.trainers.device import choose_placement
from plasticity_bench.trainers.rollouts import POLICY_FOLDER, PolicySampler


@dataclass(frozen=True)
class PreparedRun:
    config: RunConfig
    out: Path
    suite: Suite
    trainer: Trainer
    items: tuple[Item, ...]
    evaluation: EvalItems  # the suite's evaluation items as loaded (`items` is its `.items`), the sets skipped here
    backend: BackendChoice  # config.backend resolved (auto → hf or vllm)
    rollouts: BackendChoice | None  # config.rollout_backend resolved; None when the method never samples
    refresh: Refresh | None = None  # --refresh on a folder whose data changed: what to redo (harness/app/refresh.py)


def with_method_defaults(config: RunConfig) -> RunConfig:
    """The config with the method's own default η and run length where it leaves them unset:
    what a run is fingerprinted with."""
    trainer_class = TRAINERS.get(config.method)
    return replace(
        config,
        lr=trainer_class.default_lr if config.lr is None else config.lr,
        steps=trainer_class.default_steps if config.steps is None else config.steps,
    )


def prepare(config: RunConfig, out: Path, refresh: bool = False) -> PreparedRun:
    """Resolve every name and check the output folder; raises BenchError, writes nothing.
    `refresh`: a folder holding this run made on other data is brought up to date, not refused."""
    trainer_class = TRAINERS.get(config.method)
    trainer = trainer_class(method_options(trainer_class.Options, config.options, config.method))
    config = with_method_defaults(config)
    backend = resolve_backend(config.backend)
    rollouts = resolve_backend(config.rollout_backend, ROLLOUTS) if trainer_class.samples_policy else None
    suite = load_suite(config.suite)
    if suite.easy is None or suite.hard is None:
        raise BenchError(
            f"suite {suite.name} has no training sets (`train:`), so `bench run` cannot train on it; "
            "to score checkpoints of another trainer use `bench eval`"
        )
    if not config.model and not suite.foundation:
        raise BenchError(
            f"suite {suite.name} has no organism pre-training mix (`foundation:`); give --model MODEL_FOLDER"
        )
    identity = suite_identity(suite, training=True)
    plan = check_data(
        out,
        run_fingerprint(config, suite, identity),
        identity,
        lambda old: run_fingerprint(config, suite, old),
        refresh,
    )
    if plan is None:
        RunStore.check_target(out, run_fingerprint(config, suite, identity))
    check_disk_space(config, suite, out, rollouts)
    evaluation = load_eval_items(suite, config.eval_per_slice)
    items = evaluation.items
    # training data and golds too, before anything is written
    check_training(suite, config.train_examples, config.seed, evaluation.prompts)
    if config.model is None:
        check_prompts_fit_organism(config.organism, suite, items)
    lora = lora_settings(config)
    if lora is not None:
        check_lora_targets(lora, config, suite)
    return PreparedRun(config, out, suite, trainer, items, evaluation, backend, rollouts, plan)


def module_names(config: RunConfig, suite: Suite) -> set[str]:
    """The last part of every Linear/Embedding module's name in the run's model (what a LoRA
    target names), read from the architecture on the meta device: nothing is loaded."""
    from transformers import AutoConfig

    with torch.random.fork_rng(), torch.device("meta"):
        model = (
            AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config.model))
            if config.model
            else build_model(config.organism, len(build_tokenizer()))
        )
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding))
    }


def check_lora_targets(lora: LoraSettings, config: RunConfig, suite: Suite) -> None:
    known = module_names(config, suite)
    unknown = [target for target in lora.targets if target not in known]
    if unknown:
        raise BenchError(
            f"lora.targets: the model has no module named {unknown[0]!r}; its linear modules: {', '.join(sorted(known))}"
        )


def with_lora(model: Any, lora: LoraSettings, seed: int) -> Any:
    """The model wrapped with fresh LoRA adapters (peft; B = 0, so it starts as the model itself),
    only the adapters trainable. A is initialised from `seed`: the same adapters every time."""
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                target_modules=list(lora.targets),
                lora_dropout=lora.dropout,
                bias="none",
                task_type="CAUSAL_LM",
            ),
        )


def check_prompts_fit_organism(organism: OrganismConfig, suite: Suite, items: Sequence[Item]) -> None:
    """organism.max_positions must hold every evaluation prompt and its completion: found now,
    not after pre-training and training (the generate stage checks any model the same way)."""
    tokenizer = build_tokenizer()
    by_set: dict[str, list[int]] = {}
    for item in items:
        by_set.setdefault(item.slice, []).append(
            len(tokenizer.encode(item.prompt, add_special_tokens=False))
        )
    for slice_, lengths in by_set.items():
        budget = suite.eval_set(slice_).sampling.max_new_tokens
        needed = max(lengths) + budget
        if needed > organism.max_positions:
            raise BenchError(
                f"organism.max_positions ({organism.max_positions}) is too short for evaluation set {slice_}: its longest prompt "
                f"has {max(lengths)} tokens and {budget} more are generated; set it to at least {needed}"
            )


def execute(run: PreparedRun, quiet: bool = False) -> RunStore:
    """Every stage not yet done. A foreseeable failure to write the run folder (no permission, a
    full disk) becomes a BenchError naming it. A new run that fails with a BenchError before its
    training is complete (e.g. a method found nothing to train on) is removed, so no half-made run
    folder is left; once training is done, its checkpoints stay (complete and recorded as such) and
    re-running the command after fixing the cause (e.g. a model context too short to generate)
    resumes at the stage that failed."""
    existed, new_run = run.out.exists(), not (run.out / RUN_FILE).is_file()
    try:
        with writing(run.out):
            return execute_stages(run, quiet)
    except BenchError:
        if new_run and not trained(run.out):
            remove_unfinished(run.out, keep_folder=existed)
        raise


def trained(folder: Path) -> bool:
    try:
        return RunStore(folder).stage_done("train")
    except (OSError, ValueError, KeyError):
        return False


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
    metadata = run_metadata(run, base_model)
    if run.refresh is not None:
        metadata = apply_refresh(run.out, run.refresh, metadata, run.items, metadata["eval_set_sha256"])
    store = RunStore.open_or_create(run.out, metadata, run.items)
    tracking = open_tracking(run.config.report_to, store, run.config.to_dict(), work_left=not store.stage_done("score"))
    try:
        with BackendPool() as backends:  # a vLLM engine started for rollouts also generates
            if not store.stage_done("train"):
                timed(store, "train", lambda: train_stage(store, run, base_model, backends, quiet, tracking.log_step))
            prune_training_state(store, run.config.keep_checkpoints)
            if not store.stage_done("kl"):
                timed(store, "kl", lambda: kl_stage(store, run, base_model))
            generation(store, run.suite, run.backend, run.config.backend, backends, run.config.seed, quiet)
        prune_model_folders(store, run.config.keep_checkpoints)
        scoring_and_report(store, tracking.log_scores)
    except Interrupted as stop:
        raise Interrupted(stop.signum, f"interrupted: {resume_hint(store)}") from None
    finally:
        tracking.close()
    return store


def generation(
    store: RunStore, suite: Suite, backend: BackendChoice, requested: str, backends: BackendPool, seed: int, quiet: bool
) -> None:
    """Generate at every checkpoint the manifest lists (`bench run` and `bench eval`), unless done."""
    if not store.stage_done("generate"):
        choice = generation_backend(store, suite, backend, requested, backends)
        timed(store, "generate", lambda: generate_stage(store, suite, choice, backends.get(choice.name), seed, quiet))


def scoring_and_report(store: RunStore, on_scored: Callable[[], None] | None = None) -> None:
    """`on_scored`: called once the score stage has written the aggregates (experiment trackers)."""
    if not store.stage_done("score"):
        timed(store, "score", lambda: score_run(store))
        if on_scored:
            on_scored()
    timed(store, "report", lambda: report_stage(store))


def resume_hint(store: RunStore) -> str:
    """How a re-run of the same command goes on, from what the run folder holds now."""
    if store.stage_done("train"):
        return "training is done; re-run the same command to finish generating, scoring and reporting"
    records = resumable_checkpoints(store)
    step = records[-1].step if records else 0
    return f"re-run the same command to resume training from step {step}"


def timed(store: RunStore, stage: str, work: Callable[[], object]) -> None:
    """Run one stage and mark it done in run.json with its wall time (and what it returned)."""
    started = time.time()
    info = work()
    store.mark_stage(stage, True, seconds=round(time.time() - started, 2), **(info if isinstance(info, dict) else {}))


def run_fingerprint(config: RunConfig, suite: Suite, identity: dict[str, Any] | None = None) -> str:
    """The config's identity, plus the suite file's content when the suite is a user's file, plus
    its data files' content and its libraries' versions (`identity`, tasks/identity.py; the current
    one when None)."""
    data = fingerprinted(suite_identity(suite, training=True) if identity is None else identity)
    return (
        config.fingerprint(data or None)
        if suite.path.parent == SHIPPED_SUITES
        else config.fingerprint({"suite_sha256": suite.sha256, **data})
    )


def run_metadata(run: PreparedRun, base_model: Path) -> dict:
    by_slice: dict[str, list[Item]] = {}
    for item in run.items:
        by_slice.setdefault(item.slice, []).append(item)
    return {
        "fingerprint": run_fingerprint(run.config, run.suite),
        "data_identity": suite_identity(run.suite, training=True),
        "method": run.config.method,
        "suite": run.suite.name,
        "suite_sha256": run.suite.sha256,
        "suite_spec": run.evaluation.summary(),
        "seed": run.config.seed,
        "config": run.config.to_dict(),
        "base_model": str(base_model),
        "base_model_sha256": provenance.weights_digest(base_model),
        "backend": run.backend.name,
        "backend_reason": run.backend.reason,
        "rollout_backend": run.rollouts and run.rollouts.name,
        "rollout_backend_reason": run.rollouts.reason if run.rollouts else "the method does not sample its policy",
        "eval_sets": {name: {"n": len(items), "sha256": content_hash(items)} for name, items in by_slice.items()},
        "eval_set_sha256": content_hash(run.items),
        "lora": asdict(lora) if (lora := lora_settings(run.config)) else None,
        "method_options": asdict(run.trainer.options)
        if is_dataclass(run.trainer.options) and not isinstance(run.trainer.options, type)
        else {},
        "provenance": provenance.collect(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ---------------------------------------------------------------- stages


def train_stage(
    store: RunStore,
    run: PreparedRun,
    base_model: Path,
    backends: BackendPool,
    quiet: bool,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> dict:
    """Checkpoint 0 is the starting model; then the method's stages, checkpointing as they go.

    Resumes from the last complete checkpoint of an earlier attempt when there is one (the
    method's `setup` runs again on the starting model, then the checkpoint's weights and training
    state are loaded). Returns what run.json records: the step it resumed from, the steps it ran.
    """
    config = run.config
    shutil.rmtree(store.generations, ignore_errors=True)  # generations belong to a finished train stage
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    records = resumable_checkpoints(store, clean=True)
    if not records:  # nothing to resume from beyond the start: start over
        shutil.rmtree(store.checkpoints, ignore_errors=True)
        store.checkpoints.mkdir(parents=True)
        records = [CheckpointRecord(0, "start", 0.0, None, 0, f"checkpoints/{checkpoint_name(0)}")]
        save_checkpoint(model, tokenizer, store.checkpoints / checkpoint_name(0))
        write_manifest(store.checkpoints, records)
    resumed_from = records[-1]
    lora = lora_settings(config)
    if lora is not None:  # from here on the model is the start + adapters; checkpoints are saved merged
        model = with_lora(model, lora, config.seed)

    def save(checkpoint: Checkpoint) -> None:
        """Model folder, then training state, then the manifest that makes the checkpoint count."""
        with uninterruptible():
            save_checkpoint(model, tokenizer, store.checkpoints / checkpoint_name(checkpoint.step))
            kill_point("model", checkpoint.step)
            state = checkpoint.state if lora is None else {**checkpoint.state, "lora": adapter_state(model)}
            save_trainer_state(state, trainer_state_path(store.checkpoints, checkpoint.step))
            records.append(
                CheckpointRecord(
                    checkpoint.step,
                    checkpoint.stage,
                    checkpoint.lr,
                    checkpoint.loss,
                    checkpoint.examples_seen,
                    f"checkpoints/{checkpoint_name(checkpoint.step)}",
                )
            )
            write_manifest(store.checkpoints, records)
            if config.keep_checkpoints != "all":  # resuming needs only the latest training state
                for older in records[1:-1]:
                    trainer_state_path(store.checkpoints, older.step).unlink(missing_ok=True)

    assert run.suite.easy is not None and run.suite.hard is not None, "prepare() checks the suite can train"
    training_prompts = {f"{t.name}/{t.split}": t.prompt for t in (run.suite.easy, run.suite.hard)}
    note_chat_fallback(store, training_prompts, tokenizer, base_model, "training")
    exclude = run.evaluation.prompts
    data = TrainingData(
        easy=rendered(
            training_items(run.suite, run.suite.easy, config.train_examples, config.seed, exclude),
            run.suite.easy.prompt,
            tokenizer,
        ),
        hard=rendered(
            training_items(run.suite, run.suite.hard, config.train_examples, config.seed, exclude),
            run.suite.hard.prompt,
            tokenizer,
        ),
        foundation=foundation_items(run) if run.trainer.needs_foundation else (),
    )
    assert config.lr is not None and config.steps is not None, "prepare() resolves the method's default η and steps"
    settings = MethodSettings(config.steps, config.lr)
    loop = LoopConfig(
        config.batch_size,
        config.warmup_fraction,
        config.min_lr_ratio,
        config.weight_decay,
        config.grad_clip,
        config.checkpoint_every,
        config.seed,
        config.grad_accum,
    )
    sampler = rollout_sampler(run.rollouts, backends, store.root / POLICY_FOLDER)
    placement = choose_placement(config.device)
    model.to(placement.device)  # type: ignore[arg-type]  # transformers' stubs type .to() oddly
    store.update_metadata(training_device=placement.describe())
    ctx = TrainContext(tokenizer, loop, run_dir=store.root, sampler=sampler, placement=placement)
    try:
        run.trainer.setup(model, data, ctx)  # on the starting model, also when resuming (it is deterministic)
        resume = None
        if resumed_from.step > 0:
            resume = load_trainer_state(trainer_state_path(store.checkpoints, resumed_from.step))
            if lora is None:
                model.load_state_dict(
                    AutoModelForCausalLM.from_pretrained(store.root / resumed_from.path).state_dict()
                )  # onto its device
            else:  # the checkpoint's model folder is merged: the adapters themselves are in the training state
                load_adapter_state(model, resume["lora"])
        with progress_bar(config.steps, f"training ({config.method})", quiet) as advance:
            if resumed_from.step:
                advance(n=resumed_from.step)
            log = train(
                model,
                run.trainer,
                run.trainer.stages(data, settings),
                ctx,
                save,
                lambda _step, loss: advance(loss),
                resume,
                on_log,
            )
    finally:
        sampler.close()
    store.write_table(TRAIN_LOG_FILE, pd.DataFrame(log))
    if run.rollouts:
        store.update_metadata(rollouts=asdict(sampler.stats))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "resumed_from_step": resumed_from.step,
        "steps_run": len(log) - resumed_from.step,
        "trained_parameters": trained,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    """The LoRA adapters' weights (what resuming a LoRA run loads; its model folders are merged)."""
    from peft import get_peft_model_state_dict

    return {name: tensor.detach().clone() for name, tensor in get_peft_model_state_dict(model).items()}


def load_adapter_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    unexpected = getattr(set_peft_model_state_dict(model, state), "unexpected_keys", None)
    if unexpected:
        raise BenchError(
            f"the training state's LoRA adapters do not fit this model ({unexpected[0]}): it cannot be resumed"
        )


def foundation_items(run: PreparedRun) -> list[Item]:
    """Items of the organism's pre-training mix (replay): `train_examples` in all, drawn from each
    (task, level) of the suite's `foundation:` at the run's seed; none for a `--model` run."""
    foundation = run.suite.foundation
    if run.config.model or not foundation:
        return []
    return suite_foundation_items(run.suite, run.config.train_examples, run.config.seed, run.evaluation.prompts)


def kl_stage(store: RunStore, run: PreparedRun, base_model: Path) -> dict:
    """KL(π₀‖π_step) at every checkpoint on the hard training prompts (harness/evaluation/kl.py);
    run.json records the final checkpoint's value."""
    assert run.suite.hard is not None, "prepare() checks the suite can train"
    missing = [r.step for r in read_manifest(store.checkpoints) if not checkpoint_dir(store, r).is_dir()]
    if missing:  # a run made before KL existed, whose model folders `keep_checkpoints: last` already pruned
        return {"skipped": f"model folders of steps {', '.join(map(str, missing))} were pruned"}
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    hard = training_items(run.suite, run.suite.hard, run.config.train_examples, run.config.seed, run.evaluation.prompts)
    items = rendered(hard, run.suite.hard.prompt, tokenizer)
    prompts = items[:KL_PROMPTS]
    frame = kl_to_start(
        store,
        [item.prompt for item in prompts],
        max(max_new_tokens(item) for item in prompts),
        run.config.seed,
        lambda path: path if path.is_absolute() else store.root / path,
    )
    return {"final_kl": float(frame.kl.iloc[-1]), "kl_sequences": int(frame.n.iloc[-1])}


def resumable_checkpoints(store: RunStore, clean: bool = False) -> list[CheckpointRecord]:
    """The manifest up to the last checkpoint training can resume from: one the manifest names
    whose model folder and training state both exist. [] when there is none after the start.

    clean: also delete what an interrupted attempt wrote after that checkpoint (model folders,
    state files, *.partial and *.tmp that the manifest does not name) and shorten the manifest.
    """
    try:
        records = read_manifest(store.checkpoints)
    except (OSError, ValueError, TypeError):  # no manifest yet, or not one this version wrote
        return []
    usable = [
        r
        for r in records
        if r.step > 0 and (store.root / r.path).is_dir() and trainer_state_path(store.checkpoints, r.step).is_file()
    ]
    if not usable or not (store.root / records[0].path).is_dir():
        return []
    kept = [r for r in records if r.step <= usable[-1].step]
    if clean:
        names = (
            {MANIFEST}
            | {checkpoint_name(r.step) for r in kept}
            | {checkpoint_name(r.step) + TRAINER_STATE_SUFFIX for r in kept}
        )
        for path in store.checkpoints.iterdir():
            if path.name not in names:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        if len(kept) < len(records):
            write_manifest(store.checkpoints, kept)
    return kept


def prune_training_state(store: RunStore, keep: str) -> None:
    """After training: `evaluated` and `last` keep no training state (only `all` does)."""
    if keep != "all" and store.checkpoints.is_dir():
        for path in store.checkpoints.glob("*" + TRAINER_STATE_SUFFIX):
            path.unlink()


def prune_model_folders(store: RunStore, keep: str) -> None:
    """After generation: `last` keeps the start and the final model folders only (every
    checkpoint's generations and scores stay; the manifest still lists every checkpoint)."""
    if keep != "last" or not store.stage_done("generate"):
        return
    records = read_manifest(store.checkpoints)
    for record in records[1:-1]:
        shutil.rmtree(store.root / record.path, ignore_errors=True)


# ---------------------------------------------------------------- disk


def check_disk_space(config: RunConfig, suite: Suite, out: Path, rollouts: BackendChoice | None) -> None:
    """BenchError (one line) when the output folder's disk cannot hold the run's checkpoints.

    Estimate: each checkpoint is a model folder (the model's weights), and each training state
    kept beside one is about twice that (AdamW's two moments); `all` keeps a state per
    checkpoint, `evaluated` and `last` at most two at a time. A rollout engine that does not
    sample the policy in memory (vLLM) adds one more copy of the weights. What an earlier attempt
    already wrote there counts as written.
    """
    assert config.steps is not None, "prepare() resolves the method's default steps first"
    model_bytes = model_size_bytes(config, suite)
    every = config.checkpoint_every
    checkpoints = 1 + (config.steps // every if every else 0) + 2  # the start, the periodic ones, up to two stage ends
    states = checkpoints if config.keep_checkpoints == "all" else 2
    engine_copy = rollouts is not None and not BACKENDS.get(rollouts.name).capabilities.policy_in_memory
    need = model_bytes * (checkpoints + 2 * states + (1 if engine_copy else 0))
    need = math.ceil(need * 1.1) + 2**20  # tokenizer files, generations, tables
    written = (
        sum(f.stat().st_size for f in (out / "checkpoints").rglob("*") if f.is_file())
        if (out / "checkpoints").is_dir()
        else 0
    )
    parent = out.absolute()
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if need - written > free:
        raise BenchError(
            f"not enough disk space for this run in {parent}: it needs about {mb(need - written)} ({checkpoints} checkpoints of a "
            f"{mb(model_bytes)} model, with optimizer state ~3x per checkpoint kept) and {mb(free)} is free; free some space, choose "
            f"another --out, checkpoint less often (checkpoint_every) or keep less (keep_checkpoints: evaluated)"
        )


def mb(size: float) -> str:
    return f"{size / 2**20:,.0f} MB" if size >= 2**20 else f"{size / 2**10:,.0f} KB"


def model_size_bytes(config: RunConfig, suite: Suite) -> int:
    """The size of one checkpoint's weights: the model folder's weight files, or the organism's
    parameters in float32 (counted on the meta device when it is not built yet)."""
    folder = Path(config.model) if config.model else organism_path(config.organism, suite)
    files = (
        [f for pattern in ("*.safetensors", "*.bin", "*.pt") for f in folder.glob(pattern)] if folder.is_dir() else []
    )
    if files or config.model:
        return sum(f.stat().st_size for f in files)
    with torch.random.fork_rng(), torch.device("meta"):  # build_model seeds torch; nothing is allocated
        return 4 * build_model(config.organism, len(build_tokenizer())).num_parameters()


def rollout_sampler(choice: BackendChoice | None, backends: BackendPool, scratch: Path) -> PolicySampler:
    """In memory where the backend samples a policy in memory (and for methods that never sample);
    else the run's engine of that backend, synced per rollout."""
    if choice is None or BACKENDS.get(choice.name).capabilities.policy_in_memory:
        return PolicySampler()
    return PolicySampler.with_engine(backends.get(choice.name), scratch)


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


def eval_set_of(suite: Suite, item: Item) -> EvalSet:
    return suite.eval_set(item.slice)


def checkpoint_dir(store: RunStore, record: CheckpointRecord) -> Path:
    """A checkpoint's model folder: inside the run folder, or anywhere (`bench eval` of another trainer's sweep)."""
    return Path(record.path) if Path(record.path).is_absolute() else store.root / record.path


def rendered(items: list[Item], prompt: dict, tokenizer: Any) -> list[Item]:
    """Items whose prompt is the exact text the model sees (its chat template, system prompt, few-shot turns)."""
    fmt = prompt_format(prompt, tokenizer)
    return [replace(item, prompt=render(fmt, item, tokenizer)) for item in items]


def prompt_format(prompt: dict, tokenizer: Any) -> PromptFormat:
    """The set's prompt format; `chat` falls back to raw text for a tokenizer without a chat template."""
    fmt = PromptFormat.from_mapping(prompt)
    return (
        replace(fmt, chat=False, enable_thinking=None)
        if fmt.chat and not getattr(tokenizer, "chat_template", None)
        else fmt
    )


def raw_instead_of_chat(prompt: dict, tokenizer: Any) -> str | None:
    """What a set that asks for chat mode gets from a tokenizer without a chat template (None when
    it gets what it asks for): the raw-text rendering, described as the prompts.parquet reader sees it."""
    fmt = PromptFormat.from_mapping(prompt)
    if not fmt.chat or getattr(tokenizer, "chat_template", None):
        return None
    parts = [
        part
        for part, present in (
            ("the system prompt as a first paragraph", fmt.system is not None),
            ("the few-shot turns as plain text", bool(fmt.fewshot)),
        )
        if present
    ]
    return "raw text" + (f" with {' and '.join(parts)}" if parts else "")


def note_chat_fallback(
    store: RunStore, prompts: dict[str, dict], tokenizer: Any, model_dir: Path, what: str = "evaluation"
) -> None:
    """One warning line, and run.json's `chat_fallback` (`chat_fallback_training` for `what`
    "training"), for the sets (name → prompt mapping) whose chat mode the model cannot honour: they
    are scored or trained on another prompt than the suite asked for, which a reader must know."""
    raw = {name: raw_instead_of_chat(prompt, tokenizer) for name, prompt in prompts.items()}
    instead = {name: how for name, how in raw.items() if how is not None}
    if not instead:
        return
    key = "chat_fallback" if what == "evaluation" else f"chat_fallback_{what}"
    store.update_metadata(**{key: {"model": str(model_dir), "sets": instead}})
    by_how: dict[str, list[str]] = {}
    for name, how in instead.items():
        by_how.setdefault(how, []).append(name)
    described = "; ".join(f"{', '.join(names)}: {how}" for how, names in by_how.items())
    warn(
        f"model {model_dir} has no chat template, so the {what} sets that ask for chat mode get raw text instead "
        f"({described}); set `prompt: {{chat: false}}` in the suite to ask for raw text"
    )


def generation_groups(suite: Suite, items: list[Item]) -> dict[tuple[str, Sampling], list[Item]]:
    """Items generated together: one group per task and sampling setting (for the micro suite:
    per task, as every run before suites were data did, so batches and outputs are unchanged)."""
    groups: dict[tuple[str, Sampling], list[Item]] = {}
    for item in items:
        groups.setdefault((item.task, eval_set_of(suite, item).sampling), []).append(item)
    return groups


def write_prompts(store: RunStore, suite: Suite, items: list[Item], model_dir: Path, seed: int = 0) -> dict[str, str]:
    """Render every evaluation prompt once, with the model's own tokenizer, and keep them in the
    run folder (`prompts.parquet`), so a reader can audit exactly what the model saw. lm-eval
    sets (sources that `runs_itself`): the prompt lm-eval sends (its own rendering and few-shot draw at `seed`)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    by_set: dict[str, list[Item]] = {}
    for item in items:
        by_set.setdefault(item.slice, []).append(item)
    prompts: dict[str, str] = {}
    for slice_, set_items in by_set.items():
        eval_set = suite.eval_set(slice_)
        if eval_set.source.runs_itself:
            prompts.update(lmeval_prompts(eval_set, set_items, seed))
            continue
        for item in rendered(set_items, eval_set.prompt, tokenizer):
            prompts[item.id] = item.prompt
    store.write_table(PROMPTS_FILE, pd.DataFrame({"item_id": list(prompts), "prompt": list(prompts.values())}))
    limit = context_length(read_model_config(model_dir))
    for slice_, set_items in by_set.items():
        if suite.eval_set(slice_).source.runs_itself:
            continue  # lm-eval's own budget (max_gen_toks) is checked per request by the adapter
        lengths = [len(tokenizer.encode(prompts[item.id], add_special_tokens=False)) for item in set_items]
        check_prompts_fit(
            lengths,
            suite.eval_set(slice_).sampling.max_new_tokens,
            limit,
            f"evaluation set {slice_} on model {model_dir}",
        )
    # after the checks (a refused run says only why); lm-eval sets are left out: lm-eval renders their prompts itself
    own = {slice_: suite.eval_set(slice_).prompt for slice_ in by_set if not suite.eval_set(slice_).source.runs_itself}
    note_chat_fallback(store, own, tokenizer, model_dir)
    return prompts


def generate_stage(
    store: RunStore, suite: Suite, backend_choice: BackendChoice, backend: GenerationBackend, seed: int, quiet: bool
) -> None:
    """Completions of every evaluation item at every checkpoint (n per item where a set samples),
    one backend for all.

    Each checkpoint's generations are written as soon as they exist, so an error at a later
    checkpoint (corrupt weights, say) keeps the earlier ones and a re-run resumes after them.
    """
    checkpoints = read_manifest(store.checkpoints)
    items = store.items()
    first = checkpoint_dir(store, checkpoints[0])
    reference = read_tensor_shapes(first)  # every checkpoint must store the same tensors as the start
    prompts = write_prompts(store, suite, items, first, seed)
    groups = generation_groups(suite, items)
    store.update_metadata(
        backend=backend_choice.name, backend_reason=backend_choice.reason
    )  # what generated, if resumed elsewhere
    with progress_bar(len(checkpoints), f"generating ({backend_choice.name})", quiet) as advance:
        for record in checkpoints:
            if not store.generation_file(record.step).exists():
                model_dir = checkpoint_dir(store, record)
                check_same_tensors(model_dir, reference, first)
                backend.load(model_dir)
                rows: list[dict[str, Any]] = []
                for (_task, _), group in groups.items():
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
                store.write_generations(record.step, rows)
            advance()
    # Training's rollouts and this stage share the object: one engine for the whole run is the goal.
    store.update_metadata(engines_started=backend.engines_started)


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


def lmeval_prompts(eval_set: EvalSet, items: list[Item], seed: int) -> dict[str, str]:
    """item id → the context lm-eval sends for it (what prompts.parquet stores for an lm-eval set)."""
    from plasticity_bench.harness.evaluation.lmeval_sets import contexts

    limit = max(item.meta["lmeval_doc_id"] for item in items) + 1
    by_doc = contexts(eval_set.source.task_reference(), limit, seed)  # type: ignore[attr-defined]
    return {item.id: by_doc[item.meta["lmeval_doc_id"]] for item in items}


def report_stage(store: RunStore) -> Path:
    from plasticity_bench.reports.html import write_report  # matplotlib is imported only when a report is made

    return write_report([store], store.root / REPORT_FILE)
