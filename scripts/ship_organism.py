"""Ship a pre-trained organism folder as a preset's organism in the package (harness/app/organism_weights/ for
the default preset, organism_weights_in_context/ for the in-context preset: organism.SHIPPED_ORGANISMS).

    python scripts/ship_organism.py ORGANISM_FOLDER [--preset default] [--name "organism B (BENCHMARKS §14.1)"]

Copies the folder's files and writes shipped.json beside them: the organism config fingerprint the folder answers
to (checked against the preset's), the sha256 of every file, the weights' digest (run.json's `base_model_sha256`)
and the CPU, torch and transformers it was pre-trained with. Run it in the environment and on the machine that
pre-trained the folder: those are read from here. tests/test_shipped_organism.py pins the hashes, so shipping
other weights means updating that test too (and the README's quoted numbers, which are the shipped organism's).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch
import transformers

from plasticity_bench.harness.app.config import load_config
from plasticity_bench.harness.app.organism import SHIPPED_FILES, SHIPPED_ORGANISMS, SHIPPED_RECORD
from plasticity_bench.harness.app.organism_config import ORGANISM_CODE_VERSION, OrganismConfig
from plasticity_bench.harness.core import provenance
from plasticity_bench.tasks.suites import load_suite


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a pre-trained organism folder (e.g. `bench base --rebuild`'s)")
    parser.add_argument(
        "--preset", default="default", choices=sorted(SHIPPED_ORGANISMS), help="the preset whose organism the folder is"
    )
    parser.add_argument("--name", default="", help="what the docs call this organism")
    args = parser.parse_args()

    run_config = load_config(args.preset, None)
    suite = load_suite(run_config.suite)
    built = json.loads((args.folder / "organism.json").read_text())
    if OrganismConfig(**built["config"]) != run_config.organism or built["suite"] != suite.name:
        sys.exit(f"{args.folder} is not preset {args.preset}'s organism ({built['config']}, suite {built['suite']})")
    shipped = SHIPPED_ORGANISMS[args.preset]
    shipped.mkdir(exist_ok=True)
    for name in SHIPPED_FILES:
        shutil.copyfile(args.folder / name, shipped / name)
    record = {
        "name": args.name,
        "preset": args.preset,
        "suite": suite.name,
        "fingerprint": run_config.organism.fingerprint(suite),
        "organism_code_version": ORGANISM_CODE_VERSION,
        "config": run_config.organism.identity(),
        "weights_sha256": provenance.weights_digest(shipped),
        "files": {name: file_sha256(shipped / name) for name in SHIPPED_FILES},
        "pretrained_with": {
            "cpu": provenance.cpu_description(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "pretrain_seconds": built.get("pretrain_seconds"),
        },
    }
    (shipped / SHIPPED_RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"{shipped}: weights sha256 {record['weights_sha256']}")


if __name__ == "__main__":
    main()
