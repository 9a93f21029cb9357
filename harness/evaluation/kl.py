"""KL to start: how far each checkpoint's policy has moved from the starting model, KL(π₀‖π_step),
on the training distribution (RL's Razor, arXiv 2509.04259, finds forgetting tracks it).

Estimate (Monte Carlo, one completion per prompt): the starting model π₀ samples a completion y
for each of the first `KL_PROMPTS` hard training prompts (temperature 1, the run's seed), and

    KL(π₀‖π) ≈ (1/N) Σ_y Σ_t [log π₀(y_t | x, y_<t) − log π(y_t | x, y_<t)]

over the N sequences, the sum running over each sampled completion's tokens (its EOS included
when it produced one). Samples
from π₀ rather than the items' reference targets: only samples from π₀ make this an unbiased
estimate of KL(π₀‖π) (on reference targets it would be a difference of cross-entropies, which
can be negative and measures fit to the targets, not movement of the policy). The samples are
drawn once, from checkpoint 0, so every checkpoint is measured on the same sequences; at step 0
the estimate is exactly 0. The sampled token ids themselves are scored (not re-tokenised text, which
would score sequences π₀ did not draw).

Written to `kl_to_start.parquet` (step, kl, n) in the run folder; needs the checkpoints' model
folders, so it runs after training and before `keep_checkpoints: last` prunes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from plasticity_bench.harness.store import RunStore, read_manifest
from plasticity_bench.trainers.policy import token_logprobs

KL_FILE = "kl_to_start.parquet"
KL_PROMPTS = 64  # hard training prompts sampled (one completion each)
KL_BATCH = 16  # sequences per forward pass


@torch.no_grad()
def completion_logprobs(model: PreTrainedModel, sequences: Sequence[tuple[list[int], list[int]]]) -> torch.Tensor:
    """log π(y|x) (summed over the completion's tokens) of every (prompt ids, completion ids), shape [N].
    The token log-probabilities are trainers/policy.py's, in float64; each sum runs over the completion's
    tokens alone (no padding zeros), so a sequence's float64 sum does not depend on the batch it is in."""
    parts = []
    for start in range(0, len(sequences), KL_BATCH):
        logp, mask = token_logprobs(model, completion_batch(sequences[start : start + KL_BATCH]), torch.float64)
        parts += [row[completion].sum() for row, completion in zip(logp, mask)]
    return torch.stack(parts) if parts else torch.zeros(0, dtype=torch.float64)


def completion_batch(sequences: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """The sampled token ids themselves, right-padded, with labels on the completion tokens only."""
    width = max(len(p) + len(c) for p, c in sequences)
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    labels = torch.full((len(sequences), width), -100, dtype=torch.long)
    for row, (p, c) in enumerate(sequences):
        ids[row, : len(p) + len(c)] = torch.tensor(p + c)
        mask[row, : len(p) + len(c)] = 1
        labels[row, len(p) : len(p) + len(c)] = torch.tensor(c)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def sample_from_start(
    model_dir: Path, prompts: Sequence[str], max_new_tokens: int, seed: int
) -> list[tuple[list[int], list[int]]]:
    """One completion per prompt from the starting model (temperature 1, no top-p/top-k), as
    (prompt ids, sampled ids): the sampled tokens themselves, up to and including EOS when the
    model produced it, so each is scored exactly as it was drawn. KL_BATCH prompts are sampled
    together, left-padded (a row that ended keeps receiving padding, cut at its EOS), because
    `generate`'s per-token overhead, not the model, dominates a small model's sampling."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    sequences = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for start in range(0, len(prompts), KL_BATCH):
            batch = [
                tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts[start : start + KL_BATCH]
            ]
            width = max(len(ids) for ids in batch)
            out = model.generate(
                torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch]),
                attention_mask=torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch]),
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            for prompt_ids, completion in zip(batch, out[:, width:].tolist()):
                if eos in completion:
                    completion = completion[: completion.index(eos) + 1]
                sequences.append((prompt_ids, completion or [eos]))
    return sequences


def kl_to_start(
    store: RunStore,
    prompts: Sequence[str],
    max_new_tokens: int,
    seed: int,
    checkpoint_dir: Callable[[Path], Path] | None = None,
) -> pd.DataFrame:
    """KL(π₀‖π_step) at every checkpoint the manifest lists; writes and returns kl_to_start.parquet."""
    records = read_manifest(store.checkpoints)
    folder = checkpoint_dir or (lambda path: path if path.is_absolute() else store.root / path)
    start_dir = folder(Path(records[0].path))
    sequences = sample_from_start(start_dir, list(prompts[:KL_PROMPTS]), max_new_tokens, seed)
    reference = completion_logprobs(AutoModelForCausalLM.from_pretrained(start_dir).eval(), sequences)
    rows = []
    for record in records:
        if record.step == records[0].step:
            kl = 0.0  # π = π₀: the same weights, exactly 0
        else:
            logp = completion_logprobs(
                AutoModelForCausalLM.from_pretrained(folder(Path(record.path))).eval(), sequences
            )
            kl = float((reference - logp).mean())
        rows.append({"step": int(record.step), "kl": kl, "n": len(sequences)})
    frame = pd.DataFrame(rows, columns=["step", "kl", "n"])
    store.write_table(KL_FILE, frame)
    return frame


def read_kl(root: Path) -> pd.DataFrame | None:
    """The run's kl_to_start.parquet, or None when the run has none (`bench eval` runs)."""
    path = root / KL_FILE
    return pd.read_parquet(path) if path.is_file() else None
