"""A byte-level decoder-only transformer built from plain layers (``byte_lm``).

The architecture of GPT-2 (Radford et al., 2019) at toy size, written with
``torch.nn.Linear``, ``torch.nn.LayerNorm`` and ``torch.nn.Embedding`` only, and the
attention with explicit matrix products, so that ``torch.func.functional_call`` and
``vmap`` over nodes run it without fused kernels (torch's scaled-dot-product attention
has no batching rule on CPU). For a byte sequence ``x_1..x_T`` (tokens ``0..255``)::

    h_0 = E_tok[x_t] + E_pos[t]
    h_l = h_{l-1} + Attn_l(LN(h_{l-1}));  h_l <- h_l + MLP_l(LN(h_l))     (pre-norm)
    logits_t = W_head LN(h_L)_t + b_head                                 ([T, 256])

``Attn``: ``heads`` heads of width ``d_model / heads``, causal (position ``t`` sees
``1..t``), ``softmax(q k^T / sqrt(d_head)) v``; ``MLP``: ``d_model -> mlp_ratio *
d_model -> d_model`` with GELU. No dropout (training randomness stays in the keyed
minibatches). The loss is :func:`sequence_cross_entropy`, the next-byte cross-entropy
averaged over the positions of a sequence.

Parameter tensors (the layout's named blocks, in this order): ``tok.weight``,
``pos.weight``, then per layer ``l``: ``blocks.l.ln1.{weight,bias}``,
``blocks.l.attn.qkv.{weight,bias}``, ``blocks.l.attn.proj.{weight,bias}``,
``blocks.l.ln2.{weight,bias}``, ``blocks.l.mlp.fc1.{weight,bias}``,
``blocks.l.mlp.fc2.{weight,bias}``, and ``ln_f.{weight,bias}``, ``head.{weight,bias}``.
Permutable unit groups: the MLP hidden units of every layer (``mlp{l}``, captured at
``blocks.l.mlp.act``).
"""

from __future__ import annotations

import torch
from torch import nn

from fedopt.errors import ConfigError
from fedopt.models.batched import BatchedModel, cross_entropy
from fedopt.models.layout import unit_group
from fedopt.models.zoo import MODELS

VOCAB = 256
"""Byte vocabulary."""


def sequence_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean next-token cross-entropy: logits ``[..., T, C]``, targets
    ``[..., T]`` -> ``[...]`` (nats per token)."""
    return cross_entropy(logits, targets).mean(dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one ``qkv`` projection and an output ``proj``."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, T, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).split(d, dim=-1)
        q = q.reshape(b, T, h, d // h).transpose(1, 2)
        k = k.reshape(b, T, h, d // h).transpose(1, 2)
        v = v.reshape(b, T, h, d // h).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (d // h) ** -0.5
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        y = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.proj(y.transpose(1, 2).reshape(b, T, d))


class Block(nn.Module):
    """Pre-norm transformer block: attention and MLP, each with a residual connection."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(d_model, mlp_ratio * d_model))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(mlp_ratio * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """Decoder-only byte transformer: inputs ``[b, T]`` int64 bytes, output ``[b, T, 256]``."""

    def __init__(self, layers: int, d_model: int, heads: int, context: int, mlp_ratio: int) -> None:
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads, mlp_ratio) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[-1]
        if T > self.context:
            raise ValueError(
                f"byte_lm: a sequence of {T} tokens exceeds the model's context of "
                f"{self.context} positions; use shorter sequences or a longer context"
            )
        h = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


def _positive(field: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"model.{field}: must be an integer >= 1, got {value!r}.")
    return value


def param_count(layers: int, d_model: int, context: int, mlp_ratio: int = 4) -> int:
    """Number of parameters of :func:`byte_lm` (closed form, for budgets and tests)."""
    d, h = d_model, mlp_ratio * d_model
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d)
    return VOCAB * d + context * d + layers * block + 2 * d + (d * VOCAB + VOCAB)


@MODELS.register("byte_lm")
def byte_lm(
    layers: int = 2,
    d_model: int = 64,
    heads: int = 4,
    context: int = 64,
    mlp_ratio: int = 4,
    *,
    strategy: str = "loop",
) -> BatchedModel:
    """Byte-level decoder-only transformer (see the module docstring).

    Parameters
    ----------
    layers, d_model, heads, mlp_ratio
        Depth, width, attention heads (``d_model`` must be a multiple of ``heads``) and
        MLP expansion. The default has 137,216 parameters (:func:`param_count`).
    context
        Longest sequence (learned positions).
    strategy
        ``"loop"`` (default: one node at a time, the same bits whatever the placement),
        ``"vmap"`` or ``"auto"``.
    """
    layers = _positive("layers", layers)
    d_model = _positive("d_model", d_model)
    heads = _positive("heads", heads)
    context = _positive("context", context)
    mlp_ratio = _positive("mlp_ratio", mlp_ratio)
    if d_model % heads:
        raise ConfigError(
            f"model.d_model: {d_model} is not divisible by heads={heads}; the heads split "
            f"d_model evenly. Use a d_model that is a multiple of {heads} (e.g. "
            f"{heads * max(1, round(d_model / heads))}) or another number of heads."
        )
    module = TinyLM(layers, d_model, heads, context, mlp_ratio)
    groups = [
        unit_group(
            module,
            f"mlp{i}",
            produce=[f"blocks.{i}.mlp.fc1"],
            consume=[f"blocks.{i}.mlp.fc2"],
            point=f"blocks.{i}.mlp.act",
            point_axis=1,  # per-sample activations [T, units]
        )
        for i in range(layers)
    ]
    return BatchedModel(
        module,
        groups,
        name="byte_lm",
        loss_fn=sequence_cross_entropy,
        strategy=strategy,  # type: ignore[arg-type]
        kernel=False,
    )
