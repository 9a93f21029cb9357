"""The run folder: every stage reads what the previous one wrote, so any stage can be re-run.

Layout (all tables are parquet, readable with `pandas.read_parquet`)::

    RUN/run.json                    format (the folder's format version, RUN_FORMAT), config, fingerprint, seeds,
                                    provenance, eval-set hashes, stage status,
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
    RUN/records.parquet             per item, step and sample: output, score, correct, outcome, metrics, answer
                                    (scoring)
    RUN/aggregates.parquet          per step, family and slice: score (avg@n), stderr (clustered by item), n,
                                    partial_score, samples, pass_at_n, reliability      (scoring)
    RUN/report.html, RUN/forgetting_curves.png                                         (report)

Modules: `folder` (RunStore: the files, run.json, the format version, stage marks), `checkpoints`
(the manifest, model folders, training states, resuming and pruning), `disk` (the space a run
needs), `atomic` (writes that readers never see half of).
"""

from plasticity_bench.harness.store.atomic import (
    PARTIAL_SUFFIX,
    write_atomic,
    write_folder_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from plasticity_bench.harness.store.checkpoints import (
    CheckpointRecord,
    checkpoint_dir,
    checkpoint_name,
    load_trainer_state,
    prune_model_folders,
    prune_training_state,
    read_manifest,
    resumable_checkpoints,
    save_checkpoint,
    save_trainer_state,
    trainer_state_path,
    write_manifest,
)
from plasticity_bench.harness.store.disk import check_disk_space
from plasticity_bench.harness.store.folder import (
    AGGREGATES_FILE,
    ITEMS_FILE,
    MANIFEST,
    PROMPTS_FILE,
    RECORDS_FILE,
    REPORT_FILE,
    RUN_FILE,
    RUN_FORMAT,
    STAGES,
    TRAIN_LOG_FILE,
    TRAINER_STATE_SUFFIX,
    RunStore,
    check_format,
    check_writable,
    items_frame,
)

__all__ = [
    "AGGREGATES_FILE",
    "ITEMS_FILE",
    "MANIFEST",
    "PARTIAL_SUFFIX",
    "PROMPTS_FILE",
    "RECORDS_FILE",
    "REPORT_FILE",
    "RUN_FILE",
    "RUN_FORMAT",
    "STAGES",
    "TRAIN_LOG_FILE",
    "TRAINER_STATE_SUFFIX",
    "CheckpointRecord",
    "RunStore",
    "check_disk_space",
    "check_format",
    "check_writable",
    "checkpoint_dir",
    "checkpoint_name",
    "items_frame",
    "load_trainer_state",
    "prune_model_folders",
    "prune_training_state",
    "read_manifest",
    "resumable_checkpoints",
    "save_checkpoint",
    "save_trainer_state",
    "trainer_state_path",
    "write_atomic",
    "write_folder_atomic",
    "write_json_atomic",
    "write_manifest",
    "write_parquet_atomic",
]
