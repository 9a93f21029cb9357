"""Post-training methods, one file each. Importing this package registers them in TRAINERS."""

from plasticity_bench.trainers import dpo, eps, grpo, l2sp, pcr, replay, rps, sft, spot  # noqa: F401  (registration side effects)
from plasticity_bench.trainers.common import TRAINERS, Trainer

__all__ = ["TRAINERS", "Trainer"]
