"""How a sparse FFN's chosen experts run: grouped kernels (only the chosen experts' matmuls) or the masked
dense form, and the measured CPU crossover between them (`argen.nn.moe.MoEFFN` picks through it).

Shape legend: N tokens, C width, H hidden units, E experts, M hidden units per expert (H/E),
A (token, expert) assignments, P padded slots per expert.
"""

from __future__ import annotations

import torch
from torch import nn

from argen.nn.layers import gelu_tanh, linear_gelu_tanh
from argen.nn.moe_config import MoEConfig


def grouped_expert_ffn(
    x_NC: torch.Tensor,
    w1_EMC: torch.Tensor,
    b1_EM: torch.Tensor,
    w2_EMC: torch.Tensor,
    tok_A: torch.Tensor,
    exp_A: torch.Tensor,
    weight_A: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """Sum over assignments of `weight * fc2_e(gelu(fc1_e(x_tok)))`, without fc2's bias.

    Assignments are sorted by expert (one sort, no per-token work), then either
      * "padded": laid out as (E, P, C), P = the busiest expert's load, and run as two batched matmuls: a
        fixed number of kernels whatever E, best on GPU where launches dominate; or
      * "segment": each expert gathers its contiguous slice of the sorted tokens, multiplies it and adds
        the result back (E matmul pairs, no padding): 20-30% faster on CPU, where launches are cheap and
        padded rows are real work.
    "auto" picks "padded" on CUDA and "segment" elsewhere.

    Args:
        x_NC: expert inputs.
        w1_EMC, b1_EM: fc1 rows and bias per expert. w2_EMC: fc2 columns per expert, (E, M, C).
        tok_A, exp_A, weight_A: token index, expert index and combine weight of each assignment.
        backend: "auto", "padded" or "segment" (see above).
    Returns:
        (N, C) summed expert outputs.
    """
    num_experts = w1_EMC.shape[0]
    out_NC = torch.zeros_like(x_NC)
    if tok_A.numel() == 0:
        return out_NC
    exp_sorted, order = torch.sort(exp_A, stable=True)
    tok_sorted = tok_A[order]
    counts_E = torch.bincount(exp_sorted, minlength=num_experts)
    if backend == "auto":
        backend = "padded" if x_NC.is_cuda else "segment"
    if backend == "segment":
        return _segment_ffn(x_NC, w1_EMC, b1_EM, w2_EMC, tok_sorted, counts_E, weight_A[order], out_NC)
    if backend != "padded":
        raise ValueError(f"grouped expert backend must be 'auto', 'padded' or 'segment', got {backend!r}")
    cap = int(counts_E.max())
    starts_E = torch.cumsum(counts_E, 0) - counts_E
    slot_A = exp_sorted * cap + (torch.arange(len(exp_sorted), device=x_NC.device) - starts_E[exp_sorted])
    x_PC = x_NC.new_zeros(num_experts * cap, x_NC.shape[1])
    x_PC.index_copy_(0, slot_A, x_NC.index_select(0, tok_sorted))
    h_EPM = torch.baddbmm(b1_EM[:, None, :], x_PC.view(num_experts, cap, -1), w1_EMC.transpose(1, 2))
    y_EPC = torch.bmm(gelu_tanh(h_EPM), w2_EMC)
    y_AC = y_EPC.reshape(num_experts * cap, -1)[slot_A] * weight_A[order, None].to(x_NC.dtype)
    return out_NC.index_add(0, tok_sorted, y_AC)


def _segment_ffn(
    x_NC: torch.Tensor,
    w1_EMC: torch.Tensor,
    b1_EM: torch.Tensor,
    w2_EMC: torch.Tensor,
    tok_A: torch.Tensor,
    counts_E: torch.Tensor,
    weight_A: torch.Tensor,
    out_NC: torch.Tensor,
) -> torch.Tensor:
    """Expert-sorted assignments, one contiguous slice per expert (E iterations, not per token).

    Each expert gathers its own tokens' rows, runs fc1, GELU and fc2 on them and adds them into the output
    while they are still in cache; no (A, C) buffer of every assignment is made (at VAR-d16, batch 16 with
    CFG, that buffer alone is 320 MB).
    """
    # straight-through weights are exactly 1 in the forward pass: no multiply needed in inference
    unit = not torch.is_grad_enabled() and bool((weight_A == 1).all())
    start = 0
    for e, count in enumerate(counts_E.tolist()):
        if count:
            tok = tok_A[start : start + count]
            h = torch.addmm(b1_EM[e], x_NC.index_select(0, tok), w1_EMC[e].T)
            y = gelu_tanh(h) @ w2_EMC[e]
            if not unit:
                y = y * weight_A[start : start + count, None].to(y.dtype)
            out_NC.index_add_(0, tok, y.to(out_NC.dtype))  # (autocast: bf16 rows into fp32)
        start += count
    return out_NC


def masked_expert_ffn(
    x_NC: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear, gate_NE: torch.Tensor
) -> torch.Tensor:
    """The dense FFN with each token's hidden units of expert e scaled by gate_NE[n, e] (0 = not chosen).

    Same function as the grouped kernels (sum over chosen experts of weight * expert output, plus fc2's
    bias) at the dense FFN's cost: the form that wins where expert matmuls are too small to run fast.
    """
    h_NH = linear_gelu_tanh(x_NC, fc1)
    gate_NE1 = gate_NE[..., None].to(h_NH.dtype)
    if torch.is_grad_enabled():
        h_NH = (h_NH.unflatten(1, (gate_NE.shape[1], -1)) * gate_NE1).flatten(1)
    else:  # inference: scale the hidden units in place (one pass, no second (N, H) buffer)
        h_NH.unflatten(1, (gate_NE.shape[1], -1)).mul_(gate_NE1)
    return fc2(h_NH)


# Grouped (segment) expert FFN time over the dense FFN's time at the same token count, per unit of the
# FLOPs fraction k/E it computes, by hidden units per expert M, and the masked form's time over dense (its
# routing and mask). Measured by `python -m benchmarks moe_crossover --threads 1`
# (results/cpu/moe_crossover.json): fp32, one thread, process CPU time, freed memory kept, idle 2-core AVX2
# EPYC, widths 128-1024, k/E 0.25-0.75, against the dense FFN as VAR runs it. The table keeps the largest
# cost measured per M, so grouped runs only where it paid in every measurement at that width (with median
# costs, 8 of 16 32-unit experts ran grouped in actvar_fast_fmnist and lost 6%). Grouped runs where
# (k / E) * cost(M) < the masked cost.
GROUPED_COST_CPU = {32: 2.28, 64: 1.86, 128: 1.43, 256: 1.21, 512: 1.11}
MASKED_COST_CPU = 1.1


def grouped_pays(config: MoEConfig, k: int, device: torch.device) -> bool:
    """Whether running only the chosen experts beats the masked dense form for this layer shape."""
    if device.type == "cuda":
        return True
    m = config.expert_hidden
    sizes = sorted(GROUPED_COST_CPU)
    cost = GROUPED_COST_CPU[max([s for s in sizes if s <= m], default=sizes[0])]
    return k / config.num_experts * cost < MASKED_COST_CPU
