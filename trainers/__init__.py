"""Post-training methods, one file each. Importing this package registers them in TRAINERS."""

from trainers import dpo, eps, grpo, l2sp, pcr, replay, rps, sft, spot  # noqa: F401  (registration side effects)
from trainers.common import TRAINERS, Trainer

__all__ = ["TRAINERS", "Trainer"]
