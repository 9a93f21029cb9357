"""What a set's `role` means once it is scored: the suite's word, not its family, decides.

A suite gives every evaluation set a role (tasks/suites): `target`, whose gain is plasticity, or
`held-out`, whose drop is forgetting, **in every family**. A family is only what reports group by;
the target's own family may hold held-out sets too (the micro suite's easy math beside its hard
target). So:

* a **held-out family** holds held-out sets only: its change is the out-of-domain change
  (`ood_change`, the report's "out-of-domain change", a study's `held_out:<family>`);
* a held-out set in a family that also holds a target set is **same-skill forgetting**: the study's
  `same_skill_change`, tagged "held-out" in the report, and gated on its own by `bench gate` as the
  unit `FAMILY (held-out)` beside the family's whole (whose change a gain on the target can hide).

Roles come from run.json's suite summary (`suite_spec.sets`) or a baseline file's `roles`; a slice
whose role is not recorded has none here, and nothing is split on a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

TARGET, HELD_OUT, MIXED = "target", "held-out", "mixed"
HELD_OUT_SUFFIX = " (held-out)"


def slice_roles(suite: Mapping[str, Any]) -> dict[str, str]:
    """slice → role, from a suite summary (run.json's `suite_spec`, `Suite.to_summary()`)."""
    sets = [entry for entry in suite.get("sets", ()) if "slice" in entry and "role" in entry]
    return {str(entry["slice"]): str(entry["role"]) for entry in sets}


def group_role(slices: Iterable[str], roles: Mapping[str, str]) -> str:
    """The role of a group of slices (a family): theirs when they agree, `mixed` when not, "" when unknown."""
    found = {roles.get(slice_) for slice_ in slices}
    if not found or None in found:
        return ""
    return found.pop() if len(found) == 1 else MIXED  # type: ignore[return-value]  # None was ruled out above


def held_out_label(family: str) -> str:
    """The name of a family's held-out sets as one unit (`bench gate --max-drop 'math (held-out)=2'`)."""
    return family + HELD_OUT_SUFFIX


def held_out_part(items: pd.DataFrame, family: str, roles: Mapping[str, str]) -> np.ndarray | None:
    """The mask of `family`'s held-out items when the family mixes target and held-out sets (its whole
    then mixes gain and forgetting), else None. `items` has `family` and `slice` columns."""
    in_family = (items.family == family).to_numpy()
    family_roles = {roles.get(str(slice_)) for slice_ in items.slice[in_family].unique()}
    if family_roles != {TARGET, HELD_OUT}:
        return None
    return in_family & items.slice.map(lambda slice_: roles.get(str(slice_)) == HELD_OUT).to_numpy(dtype=bool)


def same_skill_slices(slices_by_family: Mapping[str, Iterable[str]], roles: Mapping[str, str]) -> list[str]:
    """The held-out slices of the families that hold a target set, in the order given."""
    found = []
    for slices in slices_by_family.values():
        listed = list(slices)
        if any(roles.get(s) == TARGET for s in listed):
            found += [s for s in listed if roles.get(s) == HELD_OUT]
    return found


def held_out_families(
    slices_by_family: Mapping[str, Iterable[str]], roles: Mapping[str, str], target_family: str
) -> list[str]:
    """The families none of whose sets is a target, in the order given. Without recorded roles, every
    family but the target's (the rule a suite's roles then cannot contradict)."""
    if not roles:
        return [family for family in slices_by_family if family != target_family]
    return [
        family
        for family, slices in slices_by_family.items()
        if family != target_family and group_role(slices, roles) == HELD_OUT
    ]
