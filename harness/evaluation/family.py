"""Intervals across a family of organisms, post-training seeds nested inside each (`bench study --organism-seeds`).

A study over organisms O and seeds S has two sources of variation: which organism (its pre-training seed) and
which post-training seed. A claim about a method should hold for the recipe, not for one organism, so the
sampling unit is the organism: each organism's value is the mean over its seeds. For a balanced design the
variance of one arm's family mean is σ²_organism/O + σ²_seed/(O·S), and the sample variance of the organism
means / O estimates exactly that, so seed noise is in every ± too, at its nested weight.

Two arms that ran from the same organisms are compared organism by organism (a paired design, organisms as
blocks): per organism d_o = mean_a(o) − mean_b(o), and the interval is the t interval of the d_o with O − 1
degrees of freedom (harness/evaluation/claims.py, paired_difference_interval). What an organism adds to both arms
(an organism that starts stronger, or learns this target faster) cancels in d_o; an unpaired interval would
count it twice, as noise. With the runs of at most one organism there is no organism variance to see: the units
are the runs themselves, as in a study without organisms, and every number is what such a study gives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from plasticity_bench.harness.evaluation.claims import Units, difference_interval, paired_difference_interval

Organism = int | None  # a run's organism seed; None: the preset's own organism


def is_family(organisms: Mapping[str, Sequence[Organism]]) -> bool:
    """Whether a study's runs (method → each run's organism) come from more than one organism."""
    return len({organism for runs in organisms.values() for organism in runs}) > 1


def organism_means(values: Sequence[float], organisms: Sequence[Organism]) -> dict[Organism, float]:
    """Per organism, the mean of its runs' finite values (an organism with none is left out), in run order."""
    groups: dict[Organism, list[float]] = {}
    for organism, value in zip(organisms, values, strict=True):
        if value is not None and not math.isnan(value):
            groups.setdefault(organism, []).append(value)
    return {organism: sum(group) / len(group) for organism, group in groups.items()}


def unit_values(values: Sequence[float], organisms: Sequence[Organism], family: bool) -> Units:
    """The sampling units' values: in a family study the organism means keyed by organism (claims pair two arms by
    organism), else the runs' values unchanged."""
    return organism_means(values, organisms) if family else list(values)


def nested_difference_interval(
    a: Mapping[int, Sequence[float]], b: Mapping[int, Sequence[float]] | None
) -> tuple[float, float, float]:
    """(difference, low, high) across organisms, each organism's value the mean of its seeds (organism → seed
    values): the paired t interval of mean_a(o) − mean_b(o) over the organisms both ran; b None: a's family mean
    and its t interval."""

    def means(runs: Mapping[int, Sequence[float]]) -> dict[Organism, float]:
        organisms = [organism for organism, values in runs.items() for _ in values]
        return organism_means([value for values in runs.values() for value in values], organisms)

    if b is None:
        return difference_interval(list(means(a).values()), None)
    return paired_difference_interval(means(a), means(b))
