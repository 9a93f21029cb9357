"""Organism families (`--organism-seed`, `bench study --organism-seeds`): organisms pre-trained per seed and CPU,
recorded in every run, the claims' intervals across organisms with seeds nested inside, and the study report's
per-organism points. One smoke study of 2 organisms × 2 seeds × 2 methods serves the end-to-end tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from plasticity_bench.harness.app.config import RunConfig, load_config
from plasticity_bench.harness.app.organism import SHIPPED, OrganismConfig
from plasticity_bench.harness.app.organism_family import cpu_key, equals_shipped
from plasticity_bench.harness.evaluation.claims import (
    Check,
    Claim,
    difference_interval,
    evaluate_claims,
    paired_difference_interval,
)
from plasticity_bench.harness.evaluation.family import nested_difference_interval, unit_values
from plasticity_bench.tasks.suites import load_suite
from tests.helpers import cli, rejected

pytestmark = pytest.mark.xdist_group("organism_family")  # one worker builds the module's shared study/runs once

ORGANISMS = (3, 4)  # pre-training seeds of the study's two organisms
CLAIM = "RPS moves less far from the start than SFT"
CLAIMS = f"- claim: {CLAIM}\n  a: rps\n  b: sft\n  tests:\n    - {{metric: kl_to_start, direction: less}}\n"


# ---------------------------------------------------------------- the nested interval, by hand


def test_nested_interval_on_numbers_checked_by_hand() -> None:
    # a: organism 0 seeds 1, 3 (mean 2), organism 1 seeds 5, 7 (mean 6); b: organism means 0 and 3.
    # paired by organism: d = (2, 3), mean 2.5, sd 0.7071, SE 0.5, t(1) = 12.706: half-width 6.353.
    diff, low, high = nested_difference_interval({0: [1, 3], 1: [5, 7]}, {0: [0, 0], 1: [2, 4]})
    assert diff == pytest.approx(2.5)
    assert low == pytest.approx(2.5 - 6.353) and high == pytest.approx(2.5 + 6.353)
    # unpaired (Welch across organism means) the organisms' own spread (2 vs 6, 0 vs 3) would be noise:
    # SE_a = 2, SE_b = 1.5, half-width 12.706 · 2.5 = 31.8
    assert difference_interval([2, 6], [0, 3])[2] - 2.5 == pytest.approx(31.765)
    # against zero: a's family mean 4 ± t(1) · 2
    assert nested_difference_interval({0: [1, 3], 1: [5, 7]}, None) == pytest.approx((4, 4 - 25.412, 4 + 25.412))


def test_pairs_use_the_organisms_both_arms_ran() -> None:
    # b lacks organism 2: the pairs are organisms 0 and 1 only (d = 1, 3: mean 2, SE 1, half-width 12.706)
    a, b = {0: 1.0, 1: 5.0, 2: 100.0}, {0: 0.0, 1: 2.0}
    assert paired_difference_interval(a, b) == pytest.approx((2, 2 - 12.706, 2 + 12.706))
    claim = Claim("a beats b", "a", "b", (Check("m", "greater"),))
    test = evaluate_claims([claim], {"a": {"m": a}, "b": {"m": b}})[0]["tests"][0]
    assert test["pairs"] == 2 and test["difference"] == pytest.approx(2)
    # seeds as units (plain lists) stay unpaired Welch, with no pairs recorded
    welch = evaluate_claims([claim], {"a": {"m": [1.0, 5.0]}, "b": {"m": [0.0, 2.0]}})[0]["tests"][0]
    assert "pairs" not in welch and welch["low"] == pytest.approx(difference_interval([1, 5], [0, 2])[1])


def test_one_organism_keeps_the_seed_intervals() -> None:
    values = [1.0, 4.0, 2.5]
    assert unit_values(values, [None, None, None], family=False) == values
    assert unit_values(values, [3, 3, 5], family=True) == {3: 2.5, 5: 2.5}
    assert difference_interval(unit_values(values, [None] * 3, False), None) == difference_interval(values, None)


# ---------------------------------------------------------------- the run's identity


def test_no_organism_seed_leaves_every_fingerprint_as_it_was() -> None:
    # the identities of the code before organism families (the same values computed at its commit)
    config = RunConfig()
    assert config.fingerprint() == "779ac978c3e3e732"
    assert load_config("smoke").fingerprint() == "2073a8b789fa7010"
    assert load_config("default", None, {"method": "sft"}).fingerprint() == "fe48a3c2d1582de2"
    seeded = load_config("smoke", None, {"organism_seed": 1})
    assert seeded.organism.seed == 1 and seeded.organism_seed == 1
    assert (
        len(
            {config.fingerprint(), seeded.fingerprint(), load_config("smoke", None, {"organism_seed": 2}).fingerprint()}
        )
        == 3
    )


def test_the_shipped_seed_reuses_the_shipped_weights_only_when_equal(tmp_path: Path) -> None:
    micro = load_suite("micro")
    copy = tmp_path / "copy"
    shutil.copytree(SHIPPED, copy)
    assert equals_shipped(OrganismConfig(), micro, copy)  # this CPU pre-trained the shipped bytes: start from them
    assert not equals_shipped(OrganismConfig(seed=1), micro, copy)  # another recipe, whatever its bytes
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    assert not equals_shipped(OrganismConfig(), micro, copy)  # other bytes: this CPU's own organism


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("study", "--methods", "sft", "--organism-seeds", "a,b"), "--organism-seeds"),
        (("study", "--methods", "sft", "--organism-seeds", "0,-1"), ">= 0"),
        (("study", "--methods", "sft", "--organism-seeds", "1,1"), "twice"),
        (("run", "--preset", "smoke", "--organism-seed", "-1"), "organism_seed must be >= 0"),
        (("base", "--preset", "smoke", "--organism-seed", "1", "--rebuild"), "--rebuild"),
    ],
)
def test_bad_organism_seeds_are_one_line(args: tuple[str, ...], fragment: str, tmp_path: Path) -> None:
    out = ("--out", str(tmp_path / "x")) if args[0] == "study" else ()
    rejected(cli(*args, *out), fragment)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- a family study, end to end


@pytest.fixture(scope="module")
def family_study(bench, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 methods × 2 organisms × 2 seeds on the smoke preset (organisms pre-trained in seconds), each run two
    steps long (one checkpoint after the start) to keep the eight runs cheap."""
    root = tmp_path_factory.mktemp("family")
    (root / "claims.yaml").write_text(CLAIMS)
    (root / "short.yaml").write_text("steps: 2\ncheckpoint_every: 2\neval_per_slice: 2\n")
    args = (
        "--methods",
        "sft,rps",
        "--seeds",
        "0,1",
        "--organism-seeds",
        ",".join(map(str, ORGANISMS)),
        "--preset",
        "smoke",
        "--jobs",
        "2",
    )
    files = ("--claims", str(root / "claims.yaml"), "--config", str(root / "short.yaml"))
    done = bench("study", *args, *files, "--out", str(root / "study"), "-q")
    assert done.returncode == 0, done.stderr
    assert CLAIM in done.stdout
    return root / "study"


def run_json(study: Path, name: str) -> dict:
    return json.loads((study / name / "run.json").read_text())


def test_every_run_records_its_organism_and_seed(family_study: Path) -> None:
    for method in ("sft", "rps"):
        for organism in ORGANISMS:
            for seed in (0, 1):
                meta = run_json(family_study, f"{method}-o{organism}-seed{seed}")
                assert (meta["organism_seed"], meta["seed"]) == (organism, seed)
                assert meta["config"]["organism"]["seed"] == organism
                assert meta["base_model_source"] == "pre-trained"
                assert meta["base_model"].endswith(f"-cpu{cpu_key()}")
    three, four = (run_json(family_study, f"sft-o{o}-seed0") for o in ORGANISMS)
    assert three["fingerprint"] != four["fingerprint"]  # the organism is part of the run's identity
    assert three["base_model_sha256"] != four["base_model_sha256"]  # and starts it from other weights
    assert run_json(family_study, f"rps-o{ORGANISMS[0]}-seed1")["base_model_sha256"] == three["base_model_sha256"]


def test_the_claims_are_intervals_across_organisms(family_study: Path) -> None:
    data = json.loads((family_study / "study.json").read_text())
    assert data["sampling_unit"] == "organism"
    runs = {m: data["methods"][m]["runs"] for m in ("rps", "sft")}
    kl = {m: {o: [r["metrics"]["kl_to_start"] for r in runs[m] if r["organism"] == o] for o in ORGANISMS} for m in runs}
    assert all(len(seeds) == 2 for m in kl for seeds in kl[m].values())
    test = next(c for c in data["claims"] if c["claim"] == CLAIM)["tests"][0]
    expected = nested_difference_interval(kl["rps"], kl["sft"])
    assert (test["difference"], test["low"], test["high"]) == pytest.approx(expected)
    assert test["pairs"] == len(ORGANISMS)  # paired organism by organism
    differences = [sum(kl["rps"][o]) / 2 - sum(kl["sft"][o]) / 2 for o in ORGANISMS]
    assert test["difference"] == pytest.approx(sum(differences) / len(differences))
    pooled = difference_interval([v for o in kl["rps"].values() for v in o], [v for o in kl["sft"].values() for v in o])
    assert (test["low"], test["high"]) != pytest.approx(pooled[1:])  # not the 4 runs as if independent
    organisms, metric = data["methods"]["sft"]["organisms"], data["methods"]["sft"]["metrics"]["kl_to_start"]
    assert set(organisms) == {str(o) for o in ORGANISMS} and (metric["organisms"], metric["seeds"]) == (2, 4)
    means = [organisms[str(o)]["kl_to_start"] for o in ORGANISMS]
    assert means == pytest.approx([sum(kl["sft"][o]) / 2 for o in ORGANISMS])
    assert metric["mean"] == pytest.approx(sum(means) / 2)


def test_the_report_shows_each_organism_beside_the_family_mean(family_study: Path) -> None:
    page = (family_study / "study.html").read_text()
    assert 'id="headline-organisms-sft"' in page and 'id="headline-organisms-rps"' in page
    assert "standard error across organisms" in page and "<h2 id=organisms>" in page
    # every ± and interval on the page is across organisms, and says so: nothing claims to be across seeds
    assert "<h2 id=methods>Methods across organisms</h2>" in page and "the mean across organisms" in page
    assert f"(paired over {len(ORGANISMS)} organisms)" in page and "paired organism by organism" in page
    assert "Welch" not in page  # the family's claims are paired, not Welch across organism means
    assert "across seeds" not in page.replace("mean over its seeds", "").replace("means over their seeds", "")
    headline = json.loads((family_study / "headline.json").read_text())
    assert {o["organism"] for o in headline["points"][0]["organisms"]} == {str(o) for o in ORGANISMS}


def test_bench_base_names_the_cached_organism(bench, family_study: Path) -> None:
    done = bench("base", "--preset", "smoke", "--organism-seed", str(ORGANISMS[0]), "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == run_json(family_study, f"sft-o{ORGANISMS[0]}-seed0")["base_model"]
