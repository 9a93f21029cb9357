"""The default organism ships with the package: its files are pinned here, every machine starts the default
preset's runs from them without pre-training, and `bench base --rebuild` says whether a pre-training here
reproduces the weights it compares with (docs/organism.md)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from plasticity_bench.harness.app.config import load_config
from plasticity_bench.harness.app.organism import SHIPPED, SHIPPED_FILES, SHIPPED_ORGANISMS, SHIPPED_RECORD, shipped_for
from plasticity_bench.tasks.suites import load_suite
from tests.helpers import cli_with_cache

# Organism B (BENCHMARKS.md §14.1), whose default `bench run --method rps` the README quotes. Shipping other
# weights changes these pins, the README's numbers and docs/organism.md together.
WEIGHTS_SHA256 = "ca7a44b712311a8df70818021320de58c267610d39274d9fcb59d79f7989b79b"  # run.json's base_model_sha256
SAFETENSORS_SHA256 = "f0d734cd4527967e6e8e31051926d749f0cb1a780e4a2c0073c8b770f22c37ed"
FINGERPRINT = "cefc603662f3b7dc"  # the default preset's OrganismConfig on the micro suite
# every shipped organism by preset: (fingerprint, model.safetensors sha256, weights sha256); the in-context preset's
# is the organism of BENCHMARKS.md §30 (docs/few-shot.md)
PINS = {
    "default": (FINGERPRINT, SAFETENSORS_SHA256, WEIGHTS_SHA256),
    "in-context": (
        "69a0016c396298f5",
        "758f6f68c0af79e0260d617b12edd995ab93f2557fa384db20f6214e63c71fe6",
        "27c9b18a085f435d20a8cfe6a6e1190f7d22267140ed850dd98a7d26a67ea9af",
    ),
}
# a run on the default organism cut to seconds: two steps, four items of each evaluation set
TINY_RUN = "steps: 2\nbatch_size: 4\ncheckpoint_every: 2\ntrain_examples: 16\n"


def record(preset: str = "default") -> dict:
    return json.loads((SHIPPED_ORGANISMS[preset] / SHIPPED_RECORD).read_text())


def cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    """The real CLI with its own organism cache (the session's shared one may already hold organisms)."""
    return cli_with_cache(cache, *args, timeout=600, OMP_NUM_THREADS="1")


@pytest.mark.parametrize("preset", sorted(PINS))
def test_the_shipped_files_are_the_pinned_ones(preset: str) -> None:
    shipped, folder = record(preset), SHIPPED_ORGANISMS[preset]
    assert sorted(shipped["files"]) == sorted(SHIPPED_FILES)
    for name, digest in shipped["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert shipped["files"]["model.safetensors"] == PINS[preset][1]
    assert shipped["weights_sha256"] == PINS[preset][2]
    assert shipped["pretrained_with"]["cpu"]["torch_capability"] and shipped["pretrained_with"]["torch"]


@pytest.mark.parametrize("preset", sorted(PINS))
def test_each_shipped_organism_is_its_presets(preset: str) -> None:
    """A change to a preset's organism settings, its suite's foundation mix or ORGANISM_CODE_VERSION makes the
    shipped weights another config's: this fails until the organism is shipped again (scripts/ship_organism.py)."""
    config = load_config(preset, None)
    suite = load_suite(config.suite)
    assert config.organism.fingerprint(suite) == record(preset)["fingerprint"] == PINS[preset][0]
    assert json.loads((SHIPPED_ORGANISMS[preset] / "organism.json").read_text())["config"] == record(preset)["config"]
    assert shipped_for(config.organism, suite) == SHIPPED_ORGANISMS[preset]


@pytest.mark.e2e
def test_bench_base_finds_the_shipped_organism_with_an_empty_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for preset, folder in SHIPPED_ORGANISMS.items():
        done = cli(cache, "base", "--preset", preset, "-q")
        assert done.returncode == 0, done.stderr[-3000:]
        assert Path(done.stdout.strip()).resolve() == folder.resolve()
    assert not cache.exists(), "bench base pre-trained or cached something for a shipped organism"


@pytest.mark.e2e
def test_a_default_run_starts_from_the_shipped_weights_without_pre_training(tmp_path: Path) -> None:
    cache, config = tmp_path / "cache", tmp_path / "tiny.yaml"
    config.write_text(TINY_RUN)
    out = tmp_path / "run"
    done = cli(cache, "run", "--method", "sft", "-c", str(config), "--limit", "4", "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["base_model_source"] == "shipped"
    assert "<th>base model source</th><td>shipped</td>" in (out / "report.html").read_text()
    assert meta["base_model_sha256"] == WEIGHTS_SHA256
    assert Path(meta["base_model"]).resolve() == SHIPPED.resolve()
    assert not (cache / "organisms").exists(), sorted(p.name for p in cache.rglob("*"))


@pytest.mark.e2e
def test_another_organism_is_pre_trained_here_and_its_rebuild_compared_with_the_cache(tmp_path: Path) -> None:
    """The smoke preset's organism ships nowhere: the first --rebuild has nothing to compare with, a second one
    reproduces it byte for byte (same machine, same threads), and a changed cached weight is reported by size."""
    cache = tmp_path / "cache"
    first = cli(cache, "base", "--preset", "smoke", "--rebuild", "-q")
    assert first.returncode == 0, first.stderr[-3000:]
    folder, verdict = first.stdout.strip().splitlines()
    assert Path(folder).parent == cache / "organisms" and (Path(folder) / "model.safetensors").is_file()
    assert verdict.startswith("nothing shipped or cached to compare with")

    again = cli(cache, "base", "--preset", "smoke", "--rebuild", "-q")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines()[0] == folder
    assert again.stdout.splitlines()[1].startswith(f"equal to the cached organism ({folder}): byte-identical weights")

    built = (Path(folder) / "model.safetensors").read_bytes()
    weights = load_file(Path(folder) / "model.safetensors")
    weights["lm_head.weight"] = weights["lm_head.weight"] + 0.25
    save_file(weights, Path(folder) / "model.safetensors", metadata={"format": "pt"})
    moved = cli(cache, "base", "--preset", "smoke", "--rebuild", "-q")
    assert moved.returncode == 0, moved.stderr[-3000:]
    assert moved.stdout.splitlines()[1].startswith(
        f"differs from the cached organism ({folder}): largest absolute weight difference 0.25 (lm_head.weight)"
    )
    assert (Path(folder) / "model.safetensors").read_bytes() == built  # the rebuild replaced the changed weights

    run = cli(cache, "run", "--preset", "smoke", "--out", str(tmp_path / "run"), "-q")
    assert run.returncode == 0, run.stderr[-3000:]
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["base_model_source"] == "pre-trained" and meta["base_model"] == folder

    # a folder begun from other starting weights (a machine's own pre-training of what now ships) never resumes
    (tmp_path / "run" / "run.json").write_text(json.dumps({**meta, "base_model_sha256": "0" * 64}))
    resumed = cli(cache, "run", "--preset", "smoke", "--out", str(tmp_path / "run"), "-q")
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert resumed.stderr.strip().count("\n") == 0 and "began from other starting weights" in resumed.stderr
