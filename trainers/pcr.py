"""PCR, Probabilistic Conflict Resolution (arXiv 2602.06453): GRPO whose update resolves the
conflict between the plasticity gradient and the stability gradient, per MLP block.

    g_pla = ∇ L_pla (clipped surrogate),  g_sta = ∇ β·KL        (two backward passes)
    each ~ N(μ, σ²): μ = mean over micro-batches, σ² = trace of the micro-batch gradients'
    covariance (per block);  precision λ = 1/σ²
    if μ_pla·μ_sta < 0 (conflict):
        α      = λ_sta / (λ_pla + λ_sta)
        μ_pla ← μ_pla − α · (μ_pla·μ_sta / ‖μ_sta‖²) · μ_sta       (α → 1: PCGrad's projection)
    update = μ_pla + μ_sta;   non-MLP parameters: the plain sum.

Assumptions where the paper is silent (also recorded in run.json's method_options):
  * micro-batch = one prompt's group of G rollouts, so the variance is the spread across the
    `prompts_per_step` groups (the paper: "trace of intra-group gradients");
  * block = one decoder layer's whole MLP (gate, up and down projections together);
  * μ_sta is added back after the projection (the paper is unclear);
  * each micro-batch's loss is its own token mean, μ is the mean over micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.options import option
from plasticity_bench.trainers.common import TRAINERS, TrainContext
from plasticity_bench.trainers.grpo import GRPO, GRPOOptions, grpo_terms

ASSUMPTIONS = (
    "micro-batch = one prompt's group; variance across groups",
    "block = one decoder layer's MLP (gate+up+down)",
    "mu_sta added back after projection",
)


@dataclass(frozen=True)
class PCROptions(GRPOOptions):
    # GRPO's, but PCR's gradient variance is taken across the groups: it needs >= 2 micro-batches
    prompts_per_step: int = option(
        8, "prompts (groups, PCR's micro-batches) per rollout: the variance needs >= 2", low=2
    )
    assumptions: tuple[str, ...] = option(ASSUMPTIONS, "where the paper is silent, recorded in run.json (not a knob)")


@dataclass(frozen=True)
class Resolution:
    update: torch.Tensor
    cosine: float
    alpha: float  # 0 where there is no conflict
    conflict: bool


def resolve_conflict(mu_pla: torch.Tensor, mu_sta: torch.Tensor, var_pla: float, var_sta: float) -> Resolution:
    """The uncertainty-weighted soft projection for one block (flattened gradients)."""
    dot = torch.dot(mu_pla, mu_sta)
    norms = mu_pla.norm() * mu_sta.norm()
    cosine = float(dot / norms) if norms > 0 else 0.0
    if dot >= 0:
        return Resolution(mu_pla + mu_sta, cosine, 0.0, False)
    precision_pla, precision_sta = 1 / max(var_pla, 1e-30), 1 / max(var_sta, 1e-30)
    alpha = precision_sta / (precision_pla + precision_sta)
    projected = mu_pla - alpha * dot / mu_sta.square().sum() * mu_sta
    return Resolution(projected + mu_sta, cosine, alpha, True)


def mlp_blocks(model: PreTrainedModel) -> list[list[torch.nn.Parameter]]:
    """One block per decoder layer: that layer's trainable MLP weights (with `lora:`, the MLP's
    adapters; a layer whose MLP trains nothing has no block, and no resolution happens there)."""
    unwrap = getattr(model, "get_base_model", None)  # a peft (LoRA) model wraps the transformer
    base = unwrap() if callable(unwrap) else model
    blocks = [[p for p in layer.mlp.parameters() if p.requires_grad] for layer in base.model.layers]
    return [block for block in blocks if block]


class GradientMoments:
    """Running sum and sum of squares of per-micro-batch gradients, per parameter."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.sum = [torch.zeros_like(p) for p in params]
        self.sum_sq = [torch.zeros_like(p) for p in params]
        self.count = 0

    def add(self, grads: tuple[torch.Tensor | None, ...]) -> None:
        for total, total_sq, grad in zip(self.sum, self.sum_sq, grads):
            if grad is not None:
                total += grad
                total_sq += grad.square()
        self.count += 1

    def mean(self, index: int) -> torch.Tensor:
        return self.sum[index] / self.count

    def trace_variance(self, indices: list[int]) -> float:
        """Σ over the block's coordinates of the unbiased variance across micro-batches."""
        n = self.count
        return sum(float(((self.sum_sq[i] - self.sum[i].square() / n) / (n - 1)).clamp(min=0).sum()) for i in indices)


def group_rows(rows: int, group_size: int, ctx: TrainContext) -> tuple[int, int]:
    """The rows of the groups this process takes: all of them alone, else its block of whole groups."""
    if not ctx.dist.active:
        return 0, rows
    groups = rows // group_size
    if groups < ctx.dist.world:
        raise BenchError(
            f"pcr: {groups} groups per rollout cannot be shared by {ctx.dist.world} processes; "
            "raise options.prompts_per_step"
        )
    first, last = ctx.dist.bounds(groups)
    return first * group_size, last * group_size


def reduce_moments(
    ctx: TrainContext,
    plasticity: GradientMoments,
    stability: GradientMoments,
    total_loss: float,
    group_metrics: list[dict[str, float]],
) -> tuple[float, list[dict[str, float]]]:
    """Under N processes: the gradient moments summed over the processes (sums, sums of squares, counts),
    so μ and σ² are those of all groups; the loss and the groups' metrics summed (one entry per group)."""
    for moments in (plasticity, stability):
        ctx.dist.all_reduce_tensors([*moments.sum, *moments.sum_sq])
    sums = {key: sum(m[key] for m in group_metrics) for key in group_metrics[0]}
    totals = ctx.dist.sum_values({**sums, "_loss": total_loss, "_count": float(plasticity.count)})
    plasticity.count = stability.count = int(totals.pop("_count"))
    loss = totals.pop("_loss")
    return loss, [{key: value / plasticity.count for key, value in totals.items()}] * plasticity.count


@TRAINERS.register("pcr", "PCR: GRPO with probabilistic (uncertainty-weighted) gradient-conflict resolution")
class PCR(GRPO[PCROptions]):
    Options = PCROptions

    def update(
        self,
        model: PreTrainedModel,
        batch: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        ctx: TrainContext,
    ) -> dict[str, float]:
        options = self.options
        params = [p for p in model.parameters() if p.requires_grad]
        plasticity, stability = GradientMoments(params), GradientMoments(params)
        first, last = group_rows(batch["input_ids"].shape[0], options.group_size, ctx)
        total_loss, group_metrics = 0.0, []
        for start in range(first, last, options.group_size):  # one micro-batch per prompt group
            micro = {k: (v[start : start + options.group_size] if v.dim() > 0 else v) for k, v in batch.items()}
            pla, sta, terms = grpo_terms(model, micro, options)
            group_metrics.append(terms)
            plasticity.add(torch.autograd.grad(pla, params, retain_graph=True, allow_unused=True))
            stability.add(torch.autograd.grad(sta, params, allow_unused=True))
            total_loss += (pla + sta).item()
        if ctx.dist.active:  # the moments of every process's groups, before the projection
            total_loss, group_metrics = reduce_moments(ctx, plasticity, stability, total_loss, group_metrics)
        index = {id(p): i for i, p in enumerate(params)}
        combined = {i: plasticity.mean(i) + stability.mean(i) for i in range(len(params))}
        cosines, alphas = [], []
        for block in mlp_blocks(model):
            indices = [index[id(p)] for p in block]
            resolution = resolve_conflict(
                torch.cat([plasticity.mean(i).flatten() for i in indices]),
                torch.cat([stability.mean(i).flatten() for i in indices]),
                plasticity.trace_variance(indices),
                stability.trace_variance(indices),
            )
            offset = 0
            for i in indices:
                size = params[i].numel()
                combined[i] = resolution.update[offset : offset + size].view_as(params[i])
                offset += size
            cosines.append(resolution.cosine)
            alphas.append(resolution.alpha)
        for i, p in enumerate(params):
            p.grad = combined[i]
        torch.nn.utils.clip_grad_norm_(params, ctx.loop.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        # every group's kl, clip_fraction, ... averaged (each group is one prompt's G samples)
        metrics = {key: sum(m[key] for m in group_metrics) / len(group_metrics) for key in group_metrics[0]}
        conflicts = [a > 0 for a in alphas]
        per_block = {f"cos_block{b}": c for b, c in enumerate(cosines)}
        alpha_mean = sum(alphas) / max(1, sum(conflicts))
        return {
            "loss": total_loss / plasticity.count,
            **metrics,
            "examples": int(batch["examples"]),
            "conflict_rate": sum(conflicts) / max(1, len(conflicts)),
            "alpha": alpha_mean,
            **per_block,
        }
