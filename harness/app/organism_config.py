"""The organism's settings, apart from the code that builds it: reading and checking a run's
configuration (and so every usage error of `bench run`) must not import torch or transformers."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from plasticity_bench.harness.core.errors import BenchError

if TYPE_CHECKING:
    from plasticity_bench.tasks.suites import Suite

# Bump when anything that changes the built model but is not in OrganismConfig changes
# (tokenizer, data rendering, the training loop), so stale caches are not reused. The shipped
# organism answers to this version too: after a bump, ship it again (scripts/ship_organism.py).
ORGANISM_CODE_VERSION = 1
IN_CONTEXT_SHOTS = 3  # the most solved examples an in-context pre-training sequence shows (the probe's largest k)


@dataclass(frozen=True)
class OrganismConfig:
    hidden_size: int = 192
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    max_positions: int = 128
    pretrain_steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    # the share of pre-training sequences that first show 1 to IN_CONTEXT_SHOTS solved examples of the item's own
    # task and level, as the few-shot probe shows them (docs/organism.md): what lets an organism learn in context
    in_context: float = 0.0

    def identity(self) -> dict[str, object]:
        """The settings that define the organism, as its fingerprint and a run's read them: `in_context` only
        when set, so an organism without it has the identity its other settings give it (the shipped default's
        fingerprint, pinned in shipped.json, among them)."""
        values = asdict(self)
        if not self.in_context:
            del values["in_context"]
        return values

    def validate(self) -> None:
        """BenchError for any setting that could not build or train a model (every field is checked)."""
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "intermediate_size",
            "max_positions",
            "pretrain_steps",
            "batch_size",
        ):
            if getattr(self, name) <= 0:
                raise BenchError(f"organism.{name} must be positive, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BenchError(f"organism.lr must be positive, got {self.lr}")
        if self.seed < 0:
            raise BenchError(f"organism.seed must be >= 0, got {self.seed}")
        if not (math.isfinite(self.in_context) and 0 <= self.in_context <= 1):
            raise BenchError(
                f"organism.in_context is a share of the pre-training sequences, from 0 to 1, got {self.in_context}"
            )
        if self.hidden_size % self.num_heads:
            raise BenchError(
                f"organism.num_heads ({self.num_heads}) must divide organism.hidden_size ({self.hidden_size})"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise BenchError(
                "organism.hidden_size / organism.num_heads (the head size, "
                f"{self.hidden_size // self.num_heads}) must be even for rotary position embeddings"
            )
        if self.num_heads % self.num_kv_heads:
            raise BenchError(
                f"organism.num_kv_heads ({self.num_kv_heads}) must divide organism.num_heads ({self.num_heads})"
            )

    def fingerprint(self, suite: Suite) -> str:
        blob = json.dumps(
            {
                "config": self.identity(),
                "suite": suite.name,
                "foundation": suite.foundation,
                "code": ORGANISM_CODE_VERSION,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
