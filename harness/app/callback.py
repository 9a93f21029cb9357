"""`BenchCheckpointCallback`: a transformers `TrainerCallback` that tells `bench eval --watch` when a
checkpoint is complete and when training has ended (docs/watch.md).

A watcher cannot tell a half-written checkpoint from a finished one by looking at it: the Trainer writes
the weights, then the optimizer, scheduler, RNG states and trainer_state.json, one file after another.
`on_save` runs once `_save_checkpoint` has returned, so a marker written there is written after every
file of that checkpoint. This module imports only transformers, so a training script can import it
without the rest of the harness.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

# in `<output_dir>/checkpoint-N/`: the checkpoint is complete
COMPLETE_MARKER = ".bench-complete"
# in `<output_dir>/`: the callback is in use (only marked checkpoints count)
WATCHED_MARKER = ".bench-watched"
# in `<output_dir>/`: training has ended, no checkpoint will follow
DONE_MARKER = ".bench-training-done"
CHECKPOINT_PREFIX = "checkpoint"  # transformers' PREFIX_CHECKPOINT_DIR


def _touch(path: Path) -> None:
    """An empty marker file, made by a rename so a reader never sees it before its folder is complete."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text("")
    partial.replace(path)


class BenchCheckpointCallback(TrainerCallback):
    """Pass to `Trainer(callbacks=[BenchCheckpointCallback()])`; only the main process writes markers."""

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        if state.is_world_process_zero:
            output = Path(args.output_dir or ".")
            output.mkdir(parents=True, exist_ok=True)
            (output / DONE_MARKER).unlink(missing_ok=True)  # a new (or resumed) training: not ended
            _touch(output / WATCHED_MARKER)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object) -> None:
        if state.is_world_process_zero:
            folder = Path(args.output_dir or ".") / f"{CHECKPOINT_PREFIX}-{state.global_step}"
            if folder.is_dir():
                _touch(folder / COMPLETE_MARKER)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        if state.is_world_process_zero:
            _touch(Path(args.output_dir or ".") / DONE_MARKER)
