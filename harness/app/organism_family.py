"""Organism families: `--organism-seed S` starts a run from organism S, the preset's organism pre-trained on
this CPU with pre-training seed S, so a study can treat organisms as its sampling unit (docs/organism.md).

Organism S is always this CPU's own pre-training, single-threaded: the same CPU model and torch kernel level
(`provenance.cpu_description`) pre-train it to the same bytes whatever the thread settings of the command
that asks for it, so it is cached under the config's fingerprint (which holds the seed) and a key of the
CPU, `organisms/<fingerprint>-cpu<key>`, beside the preset's own organism. For the shipped organism's config
and seed (the default preset, seed 0: shipped.json) the pre-training is the shipped recipe: when its bytes
equal the shipped weights the run starts from the shipped folder (run.json `base_model_source: shipped`),
else from this CPU's own (`pre-trained`), which is what makes the family's organisms exchangeable draws of
one recipe on one machine rather than one organism from another CPU among this CPU's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from plasticity_bench.harness.app.organism import (
    check_shipped,
    compare_weights,
    ensure_organism,
    organism_path,
    pretrain,
    shipped_for,
    shipped_record,
)
from plasticity_bench.harness.app.organism_config import OrganismConfig
from plasticity_bench.harness.core import provenance
from plasticity_bench.harness.core.errors import writing
from plasticity_bench.harness.store import check_writable, write_folder_atomic
from plasticity_bench.tasks.suites import Suite

FAMILY_RECORD = "family.json"  # in a family organism's folder: its seed, the CPU that pre-trained it, the comparison
PRETRAIN_THREADS = 1  # the bytes of organism S depend on the CPU and the thread count: one fixed count


def cpu_key() -> str:
    """8 hex digits naming this CPU's model and torch kernel level: what decides a pre-training's bytes here."""
    return hashlib.sha256(json.dumps(provenance.cpu_description(), sort_keys=True).encode()).hexdigest()[:8]


def seeded(config: OrganismConfig, seed: int | None) -> OrganismConfig:
    """The organism config with pre-training seed `seed` (None: unchanged)."""
    return config if seed is None else replace(config, seed=seed)


def family_path(config: OrganismConfig, suite: Suite) -> Path:
    """Where this CPU caches organism `config.seed` of the family."""
    cached = organism_path(config, suite)
    return cached.with_name(f"{cached.name}-cpu{cpu_key()}")


def starting_organism(config: OrganismConfig, suite: Suite, organism_seed: int | None, quiet: bool = False) -> Path:
    """The folder a run starts from: the preset's organism (shipped or cached) without an organism seed, else
    organism `organism_seed` of the family (pre-trained here on first use; the shipped folder when equal)."""
    if organism_seed is None:
        return ensure_organism(config, suite, quiet)
    return ensure_family_organism(seeded(config, organism_seed), suite, quiet)


def ensure_family_organism(config: OrganismConfig, suite: Suite, quiet: bool = False) -> Path:
    folder = family_path(config, suite)
    if not (folder / "config.json").exists():
        with writing(folder.parent):  # a read-only or full cache: one line naming it
            folder.parent.mkdir(parents=True, exist_ok=True)
            check_writable(folder.parent)  # before minutes of pre-training, not after
            write_folder_atomic(folder, lambda partial: pretrain_member(config, suite, partial, quiet))
    shipped = shipped_for(config, suite)
    return shipped if shipped is not None and equals_shipped(config, suite, folder) else folder


def equals_shipped(config: OrganismConfig, suite: Suite, folder: Path) -> bool:
    """Whether `folder` holds a shipped organism's weights byte for byte (its config and seed, and this CPU
    pre-trains it to the bytes the shipped machine did): the run then starts from the shipped folder."""
    shipped = shipped_for(config, suite)
    record = None if shipped is None else shipped_record(shipped)
    if shipped is None or record is None or provenance.weights_digest(folder) != record.get("weights_sha256"):
        return False
    check_shipped(shipped)
    return True


def pretrain_member(config: OrganismConfig, suite: Suite, folder: Path, quiet: bool) -> None:
    """Pre-train organism `config.seed` single-threaded into `folder`, with family.json beside its files."""
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        pretrain(config, suite, folder, quiet)
    finally:
        torch.set_num_threads(threads)
    shipped = shipped_for(config, suite)
    record: dict[str, Any] = {
        "organism_seed": config.seed,
        "cpu": provenance.cpu_description(),
        "threads": PRETRAIN_THREADS,
        "shipped_recipe": shipped is not None,  # the shipped organism's config and seed
        "compared_with_shipped": compare_weights(folder, shipped, "shipped") if shipped else None,
    }
    (folder / FAMILY_RECORD).write_text(json.dumps(record, indent=2))
