"""One training process of a run trained by N processes (started by train_launch.py through torchrun
or `accelerate launch`; not a command for users):

    python -m plasticity_bench.harness.app.stages.train_worker RUN_FOLDER BASE_MODEL

It reads the run's settings (written by the launching process) and the run folder the prepare stage
made, joins the process group, and runs the ordinary train stage (train.py `train_stage`) as one of
N data-parallel processes, holding whole models or, for a sharded `strategy` (or an accelerate FSDP
config), shards of it (harness/app/sharding.py, trainers/fsdp.py): the main process writes checkpoints,
training state and train_log.parquet, and what run.json records of the stage; a BenchError is written
for the launching process to show.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from plasticity_bench.harness.app.config import RunConfig, backend_settings
from plasticity_bench.harness.app.sharding import sharding_from_environment
from plasticity_bench.harness.app.stages.prepare import prepare
from plasticity_bench.harness.app.stages.train import train_stage
from plasticity_bench.harness.app.stages.train_launch import (
    ERROR_FILE,
    PROGRESS_FILE,
    RESULT_FILE,
    SETTINGS_FILE,
    die_with_parent,
    report_progress,
)
from plasticity_bench.harness.backends import BackendPool
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.interrupt import Interrupted, stop_on_signals
from plasticity_bench.harness.core.options import build
from plasticity_bench.harness.store import RunStore, write_json_atomic
from plasticity_bench.trainers.device import choose_placement
from plasticity_bench.trainers.distributed import Sharding, close, from_environment


def work(root: Path, base_model: Path) -> dict[str, Any]:
    """Train this process's share; the main process returns what run.json records."""
    config: RunConfig = build(RunConfig, json.loads((root / SETTINGS_FILE).read_text()), "")
    sharding = sharding_from_environment(config.strategy, os.environ)  # accelerate's FSDP_* when it launched us
    run = prepare(config, root)
    dist = from_environment(cuda=choose_placement(config.device).device == "cuda", sharding=sharding)
    try:
        if dist.world != config.num_processes:
            raise BenchError(
                f"the launcher started {dist.world} training process(es), not num_processes {config.num_processes}; "
                "an accelerate config file on a CPU must not say MULTI_CPU (it needs mpirun): give none"
            )
        with BackendPool(backend_settings(config)) as backends:
            # the main process reports each step for the launching process's progress bar
            on_log = report_progress(root / PROGRESS_FILE) if dist.main else None
            info = train_stage(RunStore.open(root), run, base_model, backends, quiet=True, on_log=on_log, dist=dist)
        if dist.main:
            info = {**info, **sharding_record(sharding)}
            write_json_atomic(root / RESULT_FILE, info)
        return info
    finally:
        close(dist)


def sharding_record(sharding: Sharding | None) -> dict[str, Any]:
    """run.json's train stage: how the model was sharded (nothing for whole models)."""
    if sharding is None:
        return {}
    if sharding.by_deepspeed:
        return {"sharding": {"engine": f"DeepSpeed ZeRO-{sharding.zero_stage}", "strategy": sharding.strategy}}
    fsdp = {k: v for k, v in asdict(sharding).items() if k not in ("engine", "zero_stage")}
    return {"sharding": {"engine": "torch FSDP2", **fsdp, "layers": list(sharding.layers) or "default"}}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    root, base_model = Path(args[0]), Path(args[1])
    die_with_parent()
    try:
        with stop_on_signals():
            work(root, base_model)
    except BenchError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        (root / ERROR_FILE).write_text(message + "\n")
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as stop:
        sys.exit(stop.exit_status)


if __name__ == "__main__":
    main()
