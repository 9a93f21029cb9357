"""The run folder itself: its file names, its format version, its identity and stage marks, its tables."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.interrupt import uninterruptible
from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.store.atomic import write_json_atomic, write_parquet_atomic

# The run folder's format: recorded in run.json (`format`) when a run is created. A folder of another
# format (or none) is refused where a run folder is opened: what its files mean may differ from what
# this version reads and writes. Raise it when a file's layout or meaning changes.
RUN_FORMAT = 1

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


def check_format(root: Path, metadata: dict[str, Any]) -> None:
    """BenchError (one line, naming both versions) unless run.json's `metadata` is of RUN_FORMAT."""
    found = metadata.get("format")
    if found != RUN_FORMAT:
        named = "no format version" if found is None else f"format version {found}"
        raise BenchError(
            f"{root} is a run folder of {named}; this version of plasticity-bench reads format version {RUN_FORMAT} "
            "only: make the run again (another --out) with this version"
        )


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
        """Refuse a folder that holds something other than this same run (in this format), or that
        cannot be written (before writing anything)."""
        if not root.exists():
            check_writable(root)
            return
        if not root.is_dir():
            raise BenchError(f"output path {root} exists and is not a folder")
        run_file = root / RUN_FILE
        if run_file.is_file():
            try:
                existing = json.loads(run_file.read_text())
            except json.JSONDecodeError:
                existing = None
            if isinstance(existing, dict):
                check_format(root, existing)
            if not isinstance(existing, dict) or existing.get("fingerprint") != fingerprint:
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
        """The run folder of `metadata`'s fingerprint: made (items, then run.json with the format
        version and no stage done) unless it exists."""
        cls.check_target(root, metadata["fingerprint"])
        store = cls(root)
        if not (root / RUN_FILE).is_file():
            with uninterruptible():  # run.json last: it makes the folder a run
                root.mkdir(parents=True, exist_ok=True)
                write_parquet_atomic(items_frame(items), root / ITEMS_FILE)
                write_json_atomic(root / RUN_FILE, {**metadata, "format": RUN_FORMAT, "stages": {}})
        return store

    @classmethod
    def open(cls, root: Path) -> RunStore:
        """An existing run of this format (to score, report, compare or gate); a clear error if it is not one."""
        if not (root / RUN_FILE).is_file() or not (root / ITEMS_FILE).is_file():
            raise BenchError(f"{root} is not a run folder (no {RUN_FILE} / {ITEMS_FILE}); make one with `bench run`")
        store = cls(root)
        try:
            metadata = store.metadata()
        except json.JSONDecodeError:
            raise BenchError(f"{root / RUN_FILE} is not valid JSON; the run folder is damaged") from None
        check_format(root, metadata if isinstance(metadata, dict) else {})
        return store

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
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

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
