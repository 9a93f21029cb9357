"""Where the preference and RL methods' samples come from: the policy as it is *now*.

Two kinds of backend can sample a policy, by what they declare (`Capabilities`):
    policy_in_memory (hf): generate with the policy object itself; nothing to sync.
    policy_sync (vllm):    generate with an engine kept in sync with the policy. Before every
          rollout the policy's current weights are written to a scratch model folder and swapped
          into the running engine (`load`: for vLLM an in-place reload, verified for tied heads);
          the engine starts once, at the first rollout, and the pipeline hands the same engine to
          the generate stage afterwards. Where the trainer shares the engine's GPU the engine
          sleeps after each rollout (`sleep_during_updates`; vLLM's sleep mode frees its memory
          for the optimizer update) and wakes at the next sync.

A stale engine would be silent (it still samples fluent text), so `tests/test_rollouts.py`
checks that the engine's log-probabilities equal the in-memory policy's after every update.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from plasticity_bench.harness.backends import GenerationBackend, SamplingParams, backends_with
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.store import save_checkpoint

POLICY_FOLDER = "rollout-policy"  # scratch folder in the run folder while training (removed after)


@dataclass
class RolloutStats:
    """Recorded in run.json: how many rollouts, and what keeping an engine in sync cost."""

    backend: str
    rollouts: int = 0
    engine_start_seconds: float = (
        0.0  # the first sync: writing the weights and starting the engine (summed over resumed processes)
    )
    sync_seconds: float = 0.0  # every later sync: writing the policy's weights + swapping them in
    generate_seconds: float = 0.0


@dataclass
class PolicySampler:
    """Samples completions from the policy through `engine`, or in memory when `engine` is None."""

    engine: GenerationBackend | None = None
    scratch: Path | None = None  # where the policy's weights are written for the engine
    stats: RolloutStats = field(default_factory=lambda: RolloutStats("hf"))  # restored when training resumes
    synced: bool = False  # whether this process has synced the engine yet (the first sync starts it)
    # The trainer shares the engine's device: after each rollout the engine frees its memory for the
    # update (where its settings allow: vLLM's sleep mode), and the next sync wakes it.
    sleep_during_updates: bool = False

    @classmethod
    def with_engine(cls, engine: GenerationBackend, scratch: Path) -> PolicySampler:
        if not engine.capabilities.policy_sync:
            raise BenchError(
                f"backend {engine.name!r} cannot be kept in sync with a training policy; use one that can "
                f"({', '.join(b.name for b in backends_with('policy_sync')) or 'none installed'}) or sample in memory"
            )
        return cls(engine, scratch, RolloutStats(engine.name))

    def sample(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], params: SamplingParams
    ) -> list[list[str]]:
        """params.n completions per prompt from `model` with its current weights."""
        was_training = model.training
        model.eval()
        try:
            if self.engine is None:
                started = time.perf_counter()
                completions = (
                    backends_with("policy_in_memory")[0].from_model(model, tokenizer).generate(prompts, params)
                )
            else:
                synced = time.perf_counter()
                self.sync(model, tokenizer)
                started = time.perf_counter()
                if not self.synced:
                    self.stats.engine_start_seconds += started - synced
                    self.synced = True
                else:
                    self.stats.sync_seconds += started - synced
                completions = self.engine.generate(prompts, params)
        finally:
            model.train(was_training)
        self.stats.generate_seconds += time.perf_counter() - started
        self.stats.rollouts += 1
        if self.engine is not None and self.sleep_during_updates:
            self.engine.sleep()  # the update that follows gets the engine's memory
        return completions

    def sync(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """Make the engine generate with the policy's current weights (writes a model folder:
        the in-place reload reads safetensors files; see harness/backends/vllm_backend.py)."""
        assert self.engine is not None and self.scratch is not None
        save_checkpoint(model, tokenizer, self.scratch)
        self.engine.load(self.scratch)

    def close(self) -> None:
        """Remove the scratch weights (the engine itself belongs to whoever made it)."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
