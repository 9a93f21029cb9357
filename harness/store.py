"""The run folder: every stage reads what the previous one wrote, so any stage can be re-run.

Layout (all tables are parquet, readable with `pandas.read_parquet`)::

    RUN/run.json                    config, fingerprint, seeds, provenance, eval-set hashes, stage status
                                    backends (and why), rollouts' costs, engines started
    RUN/eval_items.parquet          the evaluation items themselves, raw (re-scoring needs no generator)
    RUN/prompts.parquet             item_id, prompt: each item as the model saw it (chat template and all)
    RUN/checkpoints/manifest.json   one record per checkpoint (step, stage, lr, loss, examples seen, path)
    RUN/checkpoints/step-000000/    Hugging Face model folders; step 0 is the starting model
                                    (`bench eval`: the manifest points at the user's own model folders)
    RUN/checkpoints/step-000050.trainer_state.pt   what resuming training needs besides the weights
                                    (optimizer, schedule position, RNGs, data stream, the method's state);
                                    pruned after training unless keep_checkpoints is `all`
    RUN/rollout-policy/             only while training with --rollout-backend vllm: the weights synced to the engine
    RUN/train_log.parquet           one row per training step: stage, lr, loss, the method's metrics
                                    (`bench eval`: a Trainer's own log_history, harness/app/trainer_history.py)
    RUN/generations/step-000000.parquet   item_id, step, sample, output (+ external_score, lmeval)     (generation)
    RUN/records.parquet             per item, step and sample: output, score, correct, outcome, metrics, answer (scoring)
    RUN/aggregates.parquet          per step, family and slice: score (avg@n), stderr (clustered by item), n,
                                    partial_score, samples, pass_at_n, reliability      (scoring)
    RUN/report.html, RUN/forgetting_curves.png                                         (report)
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.interrupt import uninterruptible
from plasticity_bench.harness.core.items import Item

RUN_FILE = "run.json"
ITEMS_FILE = "eval_items.parquet"
PROMPTS_FILE = "prompts.parquet"  # the rendered prompt of every evaluation item: what the model saw
RECORDS_FILE = "records.parquet"
TRAIN_LOG_FILE = "train_log.parquet"
AGGREGATES_FILE = "aggregates.parquet"
REPORT_FILE = "report.html"
MANIFEST = "manifest.json"  # in RUN/checkpoints/
TRAINER_STATE_SUFFIX = ".trainer_state.pt"  # RUN/checkpoints/step-NNNNNN.trainer_state.pt, next to the model folder
STAGES = ("train", "kl", "generate", "score", "report")  # kl: KL to start (bench run only)


# Every write below goes to a temporary name and is renamed into place, inside `uninterruptible()`:
# a kill leaves at most a *.tmp / *.partial that nothing reads, and SIGINT/SIGTERM wait for the write.


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str)))


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """write(tmp), then rename tmp to path, uninterruptible by SIGINT/SIGTERM: readers see the old
    file or the new one, never half of one; a failed write (a full disk, say) leaves no tmp file."""
    tmp = path.with_name(path.name + ".tmp")
    with uninterruptible():
        try:
            write(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):  # best effort: on a read-only filesystem there is no tmp to remove
                tmp.unlink(missing_ok=True)
            raise


@dataclass(frozen=True)
class CheckpointRecord:
    step: int
    stage: str
    lr: float
    loss: float | None  # mean training loss since the previous checkpoint (None for step 0)
    examples_seen: int
    path: str  # relative to the run folder

    def to_dict(self) -> dict:
        return asdict(self)


def write_manifest(checkpoint_dir: Path, records: Sequence[CheckpointRecord]) -> None:
    write_atomic(
        checkpoint_dir / MANIFEST, lambda tmp: tmp.write_text(json.dumps([r.to_dict() for r in records], indent=2))
    )


def read_manifest(checkpoint_dir: Path) -> list[CheckpointRecord]:
    return [CheckpointRecord(**r) for r in json.loads((checkpoint_dir / MANIFEST).read_text())]


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def trainer_state_path(checkpoint_dir: Path, step: int) -> Path:
    """The training state saved with checkpoint `step`: a file next to its model folder."""
    return checkpoint_dir / (checkpoint_name(step) + TRAINER_STATE_SUFFIX)


def save_trainer_state(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary name, then rename (a kill never leaves half a state file)."""
    import torch

    def write(tmp: Path) -> None:
        # through a Python file object, so a full disk is an OSError (ENOSPC) that the CLI reports
        # in one line; torch's zip writer then adds a RuntimeError on top of it while closing
        with open(tmp, "wb") as handle:
            try:
                torch.save(state, handle)
            except RuntimeError as error:
                if isinstance(error.__context__, OSError):
                    raise error.__context__ from None
                raise

    write_atomic(path, write)


def load_trainer_state(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, weights_only=True)  # tensors and plain Python values only: no code runs on load


@dataclass(frozen=True)
class RunStore:
    root: Path

    # ------------------------------------------------------------ paths
    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def generations(self) -> Path:
        return self.root / "generations"

    def generation_file(self, step: int) -> Path:
        return self.generations / f"step-{step:06d}.parquet"

    # ------------------------------------------------------------ creation and identity
    @classmethod
    def check_target(cls, root: Path, fingerprint: str) -> None:
        """Refuse a folder that holds something other than this same run, or that cannot be
        written (before writing anything)."""
        if not root.exists():
            check_writable(root)
            return
        if not root.is_dir():
            raise BenchError(f"output path {root} exists and is not a folder")
        run_file = root / RUN_FILE
        if run_file.is_file():
            try:
                existing = json.loads(run_file.read_text()).get("fingerprint")
            except json.JSONDecodeError:
                existing = None
            if existing != fingerprint:
                raise BenchError(
                    f"output folder {root} already holds a different run; choose another --out or delete it"
                )
        elif any(not cls.unfinished_creation(path) for path in root.iterdir()):
            raise BenchError(f"output folder {root} is not empty and holds no run; choose another --out")
        check_writable(root)

    @staticmethod
    def unfinished_creation(path: Path) -> bool:
        """What `open_or_create` writes before run.json: a run killed in between may be re-run."""
        return path.name in (ITEMS_FILE, ITEMS_FILE + ".tmp", RUN_FILE + ".tmp")

    @classmethod
    def open_or_create(cls, root: Path, metadata: dict[str, Any], items: Sequence[Item]) -> RunStore:
        cls.check_target(root, metadata["fingerprint"])
        store = cls(root)
        if not (root / RUN_FILE).is_file():
            with uninterruptible():  # run.json last: it makes the folder a run
                root.mkdir(parents=True, exist_ok=True)
                write_parquet_atomic(items_frame(items), root / ITEMS_FILE)
                write_json_atomic(root / RUN_FILE, {**metadata, "stages": {}})
        return store

    @classmethod
    def open(cls, root: Path) -> RunStore:
        """An existing run (for re-scoring or re-reporting); a clear error if it is not one."""
        if not (root / RUN_FILE).is_file() or not (root / ITEMS_FILE).is_file():
            raise BenchError(f"{root} is not a run folder (no {RUN_FILE} / {ITEMS_FILE}); make one with `bench run`")
        return cls(root)

    # ------------------------------------------------------------ metadata
    def metadata(self) -> dict[str, Any]:
        return json.loads((self.root / RUN_FILE).read_text())

    def update_metadata(self, **fields: Any) -> None:
        data = self.metadata()
        data.update(fields)
        write_json_atomic(self.root / RUN_FILE, data)

    def stage_done(self, stage: str) -> bool:
        return bool(self.metadata()["stages"].get(stage, {}).get("done"))

    def mark_stage(self, stage: str, done: bool, **info: Any) -> None:
        data = self.metadata()
        data["stages"][stage] = {"done": done, **info}
        for later in STAGES[STAGES.index(stage) + 1 :]:  # a redone stage invalidates what followed it
            data["stages"].pop(later, None) if not done else None
        write_json_atomic(self.root / RUN_FILE, data)

    # ------------------------------------------------------------ tables
    def items(self) -> list[Item]:
        frame = pd.read_parquet(self.root / ITEMS_FILE)
        return [Item(**{**row, "meta": json.loads(row["meta"])}) for row in frame.to_dict("records")]

    def write_generations(self, step: int, rows: Sequence[dict[str, Any]]) -> None:
        """One checkpoint's completions: item_id, sample (0..n-1), output, and where the generator
        also scored (lm-eval sets) external_score and `lmeval` (JSON: harness/evaluation/lmeval_sets.py)."""
        self.generations.mkdir(exist_ok=True)
        extra = [column for column in ("external_score", "lmeval") if any(column in r for r in rows)]
        frame = pd.DataFrame(list(rows), columns=["item_id", "sample", "output", *extra])
        frame.insert(1, "step", step)
        write_parquet_atomic(frame, self.generation_file(step))

    def read_generations(self) -> pd.DataFrame:
        files = sorted(self.generations.glob("step-*.parquet"))
        if not files:
            raise BenchError(f"{self.root} has no generations to score; run `bench run` first")
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        return frame if "sample" in frame else frame.assign(sample=0)  # runs from before repeated sampling

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        write_parquet_atomic(frame, self.root / name)

    def read_table(self, name: str) -> pd.DataFrame:
        path = self.root / name
        if not path.is_file():
            raise BenchError(f"{self.root} has no {name}; score the run first (`bench score {self.root}`)")
        return pd.read_parquet(path)


def check_writable(root: Path) -> None:
    """BenchError unless `root` (a folder, existing or to be made) can be written: its nearest
    existing folder must be writable and on a writable filesystem. A failure later (a full disk)
    is caught where it happens (`harness.core.errors.writing`)."""
    place = Path(os.path.abspath(root))
    while not place.exists():
        place = place.parent
    if not place.is_dir():
        raise BenchError(f"cannot create {root}: {place} is a file, not a folder")
    if os.statvfs(place).f_flag & os.ST_RDONLY:
        raise BenchError(
            f"cannot write {root}: {place} is on a read-only filesystem; choose a place on a writable filesystem"
        )
    if not os.access(place, os.W_OK | os.X_OK):
        raise BenchError(
            f"cannot write {root}: permission denied on {place}; check its permissions or choose another place"
        )


def items_frame(items: Sequence[Item]) -> pd.DataFrame:
    rows = [{**item.to_dict(), "meta": json.dumps(item.meta, sort_keys=True)} for item in items]
    return pd.DataFrame(rows)


def save_checkpoint(model: Any, tokenizer: Any, folder: Path) -> None:
    """Write a Hugging Face model folder atomically (a crash never leaves half a checkpoint).
    A peft (LoRA) model is written merged, as the full model W + ΔW: a copy is merged, so the
    model being trained keeps its adapters and its weights bit for bit."""
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    with uninterruptible():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
        except BaseException:  # a full disk, say: no half-written step-….partial/ left behind
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
