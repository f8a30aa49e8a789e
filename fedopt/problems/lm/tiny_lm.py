"""Federated fine-tuning of a small byte-level language model (``tiny_lm``).

The setting of federated LLM tuning (Ferret, Shu et al., ICML 2025; FedKSeed, Qin et
al., ICML 2024) at a size that runs on a CPU: a decoder-only byte transformer
(:func:`fedopt.models.byte_lm`, about 0.14 M parameters by default) is pre-trained
centrally on text (:mod:`fedopt.problems.lm.pretrain`), then tuned by clients that each
hold other text, and evaluated on topics no client holds.

Data (:mod:`fedopt.problems.lm.corpus`, no download): the topics of ``corpus``
(``pydoc``: CPython's 79 help topics; ``fortunes``: Debian's 40 fortune categories,
optional). ``heldout_topics`` topics (keyed by ``split_seed``) are held out for
evaluation; the others are the training topics, split across the data nodes by
``split.kind`` (:mod:`fedopt.problems.lm.clients`): ``task`` gives each client
``topics_per_client`` whole topics (NI-like), ``dirichlet`` a ``Dir(alpha)`` mixture
over all training topics (Dolly-like). Client ``i`` draws sequences ``s`` of
``seq_len + 1`` bytes from its distribution ``w_i`` and has the objective

.. math::

    f_i(x) = \\frac{1}{V} \\sum_{v=1}^{V} \\frac{1}{T} \\sum_{t=1}^{T}
             -\\log p_x(s_{v,t+1} \\mid s_{v,1..t}),  \\qquad p_i = 1/N,

over a fixed sample of ``V = value_sequences`` windows keyed by
``(seed, "lm/value", rank)`` (an estimate of its expected next-byte loss that does not
change between calls). :meth:`TinyLMOracle.grad` is the gradient of the same loss on a
fresh minibatch of ``batch_size`` windows keyed by ``(seed, "batch", rank, step)``, and
:meth:`TinyLMOracle.batch_value` its value on that same minibatch.

Every node starts from the pre-trained model (``init_params``; random initialisation
with ``pretrain.steps: 0``). Metrics: ``loss`` (``sum_i p_i f_i``), and on the held-out
topics ``test_loss`` (nats per byte) and ``test_accuracy`` (next-byte accuracy, greedy),
over up to ``eval_sequences`` non-overlapping windows, and with ``completion_bytes: c``
``test_exact_match``, the share of those windows whose last ``c`` bytes the model
completes exactly by greedy decoding from the rest.

Capabilities: ``model`` (the layout's named tensors are the parameter blocks; no
buffers), ``batch_values`` (minibatch losses on ``grad``'s minibatch, counted
``forwards``/``backwards``) and ``noisy_queries`` (``f_i`` plus keyed noise, for FedZO).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from fedopt import rng
from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX, Section
from fedopt.models import MODELS, BatchedModel, ParamLayout
from fedopt.models.transformer import param_count
from fedopt.problems._common import DTYPES, DTypeName, check_ranks, coerce_config
from fedopt.problems.base import Oracle, Problem, ProblemConfig, Step
from fedopt.problems.capabilities import Capability, CountedQueries
from fedopt.problems.lm.clients import WindowSampler, dirichlet_weights, task_weights
from fedopt.problems.lm.corpus import heldout_windows, load_corpus, split_topics
from fedopt.problems.lm.pretrain import (
    PretrainResult,
    cache_key,
    cached_pretrain,
    default_cache_dir,
    pretrain,
    pretrain_keys,
)
from fedopt.problems.registry import PROBLEMS


class LMModelConfig(Section):
    """Shape of the byte transformer (:func:`fedopt.models.byte_lm`)."""

    layers: int = Field(2, ge=1, le=64, description="transformer blocks")
    d_model: int = Field(64, ge=1, le=COUNT_MAX, description="width (a multiple of heads)")
    heads: int = Field(4, ge=1, le=COUNT_MAX, description="attention heads")
    context: int = Field(64, ge=1, le=COUNT_MAX, description="longest sequence (positions)")
    mlp_ratio: int = Field(4, ge=1, le=64, description="MLP hidden width / d_model")


class LMSplitConfig(Section):
    """How the training topics are shared among the clients (``problem.split``)."""

    kind: Literal["task", "dirichlet"] = Field(
        "task", description="task: whole topics per client; dirichlet: topic mixtures"
    )
    topics_per_client: int = Field(1, ge=1, le=COUNT_MAX, description="topics per client (task)")
    alpha: float = Field(
        0.5, gt=0, allow_inf_nan=False, description="Dirichlet concentration (dirichlet)"
    )


class PretrainConfig(Section):
    """Centralised pre-training before federated tuning (``problem.pretrain``)."""

    steps: int = Field(300, ge=0, le=1_000_000, description="Adam steps (0: random init)")
    batch_size: int = Field(32, ge=1, le=COUNT_MAX, description="windows per step")
    lr: float = Field(3e-3, gt=0, allow_inf_nan=False, description="Adam learning rate")
    seed: int = Field(0, ge=0, le=2**62, description="seed of the init and the batches")
    cache: bool = Field(True, description="keep the result in cache_dir (keyed by config hash)")
    cache_dir: str | None = Field(
        None, description="cache folder (default $FEDOPT_CACHE_DIR or ~/.cache/fedopt)"
    )


class TinyLMConfig(ProblemConfig):
    """Hyperparameters of ``tiny_lm``."""

    name: Literal["tiny_lm"] = "tiny_lm"
    corpus: Literal["pydoc", "fortunes"] = Field("pydoc", description="text source")
    seq_len: int = Field(64, ge=1, le=COUNT_MAX, description="tokens per training sequence")
    batch_size: int = Field(
        8, ge=0, le=COUNT_MAX, description="sequences per minibatch; 0 = f_i's fixed sample"
    )
    heldout_topics: int = Field(8, ge=1, le=COUNT_MAX, description="topics held out for eval")
    split_seed: int = Field(0, ge=0, le=2**62, description="seed of the held-out draw")
    split: LMSplitConfig = Field(
        default_factory=LMSplitConfig, description="training topics per client (task/dirichlet)"
    )
    value_sequences: int = Field(
        16, ge=1, le=COUNT_MAX, description="fixed windows per client defining f_i"
    )
    eval_sequences: int = Field(
        256, ge=1, le=COUNT_MAX, description="held-out windows in test_loss/test_accuracy"
    )
    completion_bytes: int = Field(
        0,
        ge=0,
        le=COUNT_MAX,
        description="greedy completion length of test_exact_match (0: not measured)",
    )
    model: LMModelConfig = Field(
        default_factory=LMModelConfig, description="shape of the byte transformer"
    )
    pretrain: PretrainConfig = Field(
        default_factory=PretrainConfig, description="centralised pre-training (cached)"
    )
    dtype: DTypeName = Field("float32", description="parameter and compute dtype")

    @model_validator(mode="after")
    def _consistent(self) -> TinyLMConfig:
        if self.seq_len > self.model.context:
            raise ConfigError(
                f"problem.seq_len: {self.seq_len} exceeds model.context={self.model.context} "
                "(learned positions); use seq_len <= model.context or a longer context."
            )
        if self.completion_bytes > self.seq_len:
            raise ConfigError(
                f"problem.completion_bytes: {self.completion_bytes} exceeds seq_len="
                f"{self.seq_len}; the prompt and its completion fill one window of seq_len + 1 "
                "bytes. Use completion_bytes <= seq_len (e.g. 8)."
            )
        build_model(self)  # heads dividing d_model, ...
        return self


def build_model(config: TinyLMConfig) -> BatchedModel:
    """The :func:`~fedopt.models.byte_lm` of ``config.model`` (one node at a time)."""
    try:
        return MODELS.get("byte_lm")(**config.model.model_dump(), strategy="loop")
    except ConfigError as exc:
        raise ConfigError(f"problem.{exc}") from None


def _pretrain_spec(config: TinyLMConfig) -> dict[str, Any]:
    p = config.pretrain
    return {
        "corpus": config.corpus,
        "heldout_topics": config.heldout_topics,
        "split_seed": config.split_seed,
        "seq_len": config.seq_len,
        "model": config.model.model_dump(),
        "pretrain": {"steps": p.steps, "batch_size": p.batch_size, "lr": p.lr, "seed": p.seed},
        "dtype": config.dtype,
    }


class TinyLMOracle(CountedQueries, Oracle):
    """Oracle of ``tiny_lm`` for the hosted clients (see the module docstring).

    Attributes
    ----------
    model
        The :class:`~fedopt.models.BatchedModel` (``layout``: named parameter blocks).
    weights_over_topics
        ``float64 [k, n_train]``: each hosted client's distribution over the training
        topics (rows sum to 1).
    topics
        ``{"train": [...], "heldout": [...], "too_short": [...]}`` topic names.
    forwards, backwards
        Model passes over one row's minibatch (or fixed sample) served so far.
    pretrained
        The :class:`~fedopt.problems.lm.pretrain.PretrainResult` (None with 0 steps).
    info
        Facts for records: topic counts, windows, pre-training losses and source.
    """

    capabilities = frozenset({Capability.MODEL, Capability.BATCH_VALUES, Capability.NOISY_QUERIES})
    buf_dim: int = 0
    forwards: int = 0
    backwards: int = 0

    def __init__(
        self,
        config: TinyLMConfig,
        seed: int,
        data_ranks: torch.Tensor,
        num_data_nodes: int,
        device: torch.device,
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.device = device
        self.dtype = DTYPES[config.dtype]
        self.forwards = 0
        self.backwards = 0
        self.queries = 0
        self.model = build_model(config)
        self.dim = self.model.dim
        self.data_ranks = ranks = check_ranks(data_ranks, num_data_nodes, device)
        k = len(ranks)
        L = config.seq_len
        corpus = load_corpus(config.corpus)
        split = split_topics(corpus, config.heldout_topics, L + 1, config.split_seed)
        self.corpus = corpus
        self.split = split
        self.topics = {
            part: [corpus.topics[j] for j in getattr(split, part).tolist()]
            for part in ("train", "heldout", "too_short")
        }
        texts = [corpus.texts[j] for j in split.train.tolist()]
        self.sampler = WindowSampler(texts, L, device)
        np_ranks = ranks.cpu().numpy()
        sc = config.split
        if sc.kind == "task":
            W = task_weights(np_ranks, self.sampler.windows, sc.topics_per_client, self.seed)
        else:
            W = dirichlet_weights(np_ranks, len(texts), sc.alpha, self.seed)
        self.weights_over_topics = torch.from_numpy(W).to(device)
        self._cdf = torch.cumsum(self.weights_over_topics, dim=1)
        self.weights = torch.full((k,), 1.0 / num_data_nodes, dtype=torch.float64, device=device)
        self.num_samples = torch.ones(k, dtype=torch.float64, device=device)
        value_keys = rng.node_keys(self.seed, "lm/value", ranks, 0)
        self._value_windows = self.sampler.sample(self._cdf, value_keys, config.value_sequences)
        test = heldout_windows(corpus, split.heldout, L + 1, config.eval_sequences)
        self._test_windows = torch.from_numpy(test.astype(np.int64)).to(device)

    @functools.cached_property
    def pretrained(self) -> PretrainResult | None:
        """The pre-training, run (or read from its cache) on first use: validating an
        experiment builds the oracle without it."""
        return self._pretrain()

    @functools.cached_property
    def info(self) -> dict[str, object]:
        """Facts for records (class doc); reading it runs the pre-training."""
        split = self.split
        info: dict[str, object] = {
            "train_topics": len(split.train),
            "heldout_topics": len(split.heldout),
            "too_short_topics": len(split.too_short),
            "test_sequences": int(self._test_windows.shape[0]),
            "pretrain_source": self.pretrained.source if self.pretrained else "none",
        }
        if self.pretrained is not None:
            n = len(self.pretrained.losses)
            tail = self.pretrained.losses[max(0, n - 20) :]
            info["pretrain_first_loss"] = float(self.pretrained.losses[0])
            info["pretrain_last20_loss"] = float(tail.mean())
            info["pretrain_key"] = self.pretrained.key
        return info

    # ------------------------------------------------------------------ pre-training

    def _pretrain(self) -> PretrainResult | None:
        cfg = self.config
        p = cfg.pretrain
        if p.steps == 0:
            return None
        pooled = torch.cumsum(torch.from_numpy(self.sampler.windows).double(), 0)
        pooled = pooled.to(self.device).unsqueeze(0)
        x0 = self.model.init_params(p.seed, [0], self.dtype)[0].to(self.device)

        def sample(step: int) -> torch.Tensor:
            keys = pretrain_keys(p.seed, step).to(self.device)
            return self.sampler.sample(pooled, keys, p.batch_size)

        def run() -> tuple[torch.Tensor, torch.Tensor]:
            return pretrain(self.model, sample, steps=p.steps, lr=p.lr, x0=x0)

        folder = None
        if p.cache:
            folder = default_cache_dir() if p.cache_dir is None else Path(p.cache_dir).expanduser()
        spec = {**_pretrain_spec(cfg), "device": self.device.type}  # CPU and GPU bits differ
        return cached_pretrain(spec, run, folder)

    # ------------------------------------------------------------------ helpers

    @property
    def layout(self) -> ParamLayout:
        """The model's :class:`~fedopt.models.ParamLayout`: one named block per tensor."""
        return self.model.layout

    def _ranks(self, rows: torch.Tensor) -> torch.Tensor:
        return self.data_ranks.index_select(0, rows)

    def batch(self, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """``int64 [k, batch_size, seq_len + 1]``: the rows' minibatch windows at ``step``
        (``batch_size: 0``: the fixed sample of ``f_i``, whatever the step)."""
        if self.config.batch_size == 0:
            return self._value_windows.index_select(0, rows)
        keys = rng.node_keys(self.seed, "batch", self._ranks(rows), step)
        return self.sampler.sample(self._cdf.index_select(0, rows), keys, self.config.batch_size)

    def _losses(
        self, X: torch.Tensor, windows: torch.Tensor, differentiable: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row mean loss ``[k]`` float64 and next-byte accuracy ``[k]`` on
        ``windows [k, m, seq_len + 1]`` (not counted; autograd only if
        ``differentiable``)."""
        W = X.to(self.dtype)
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            logits = self.model.forward(W, windows[..., :-1], differentiable=differentiable)
        target = windows[..., 1:]
        logp = torch.log_softmax(logits.double(), dim=-1)
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        acc = (logits.argmax(dim=-1) == target).double()
        return nll.mean(dim=(1, 2)), acc.mean(dim=(1, 2))

    # ------------------------------------------------------------------ oracle core

    def init_params(self, rows: torch.Tensor) -> torch.Tensor:
        """The pre-trained model on every row (the layout's init with ``steps: 0``)."""
        k = len(rows)
        if self.pretrained is None:
            x = self.model.init_params(self.config.pretrain.seed, [0], self.dtype)[0]
        else:
            x = self.pretrained.params.to(self.dtype)
        return x.to(self.device).unsqueeze(0).repeat(k, 1)

    def grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """Minibatch gradient ``[k, dim]`` (one forward and one backward pass per row)."""
        win = self.batch(rows, step)
        _, G = self.model.value_and_grad(X.to(self.dtype), win[..., :-1], win[..., 1:])
        self.forwards += len(rows)
        self.backwards += len(rows)
        return G

    def value_and_grad(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch_value [k] float64, grad [k, dim])`` from one forward and backward pass."""
        win = self.batch(rows, step)
        loss, G = self.model.value_and_grad(X.to(self.dtype), win[..., :-1], win[..., 1:])
        self.forwards += len(rows)
        self.backwards += len(rows)
        return loss.double(), G

    def batch_value(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """Minibatch loss ``[k]`` float64 on :meth:`grad`'s minibatch (one forward pass)."""
        win = self.batch(rows, step)
        with torch.no_grad():
            loss = self.model.loss(X.to(self.dtype), win[..., :-1], win[..., 1:])
        self.forwards += len(rows)
        return loss.double()

    def full_grad(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Exact gradient of ``f_i`` (its fixed sample of ``value_sequences`` windows)."""
        win = self._value_windows.index_select(0, rows)
        _, G = self.model.value_and_grad(X.to(self.dtype), win[..., :-1], win[..., 1:])
        self.forwards += len(rows)
        self.backwards += len(rows)
        return G

    def value(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``f_i(X[k])``: the mean loss on each row's fixed sample, ``[k]`` float64
        (differentiable in ``X``)."""
        self.forwards += len(rows)
        return self._losses(X, self._value_windows.index_select(0, rows), True)[0]

    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        """``{"loss": sum_i p_i f_i(x)}`` over the hosted clients (not counted)."""
        k = len(self.data_ranks)
        loss, _ = self._losses(x.reshape(1, -1).expand(k, -1), self._value_windows)
        return {"loss": float((loss * self.weights).sum())}

    def evaluate_test(self, x: torch.Tensor) -> dict[str, float]:
        """Held-out loss (nats per byte) and next-byte accuracy of ``x`` (not counted)."""
        loss, acc = self._losses(x.reshape(1, -1), self._test_windows.unsqueeze(0))
        out = {"test_loss": float(loss[0]), "test_accuracy": float(acc[0])}
        if self.config.completion_bytes:
            out["test_exact_match"] = float(self.exact_match(x).double().mean())
        return out

    def exact_match(self, x: torch.Tensor) -> torch.Tensor:
        """Greedy completions of the held-out windows: ``bool [m]``, whether all of them
        are right.

        Each window of ``seq_len + 1`` bytes is split into a prompt and its last ``c =
        completion_bytes`` bytes. Then ``c`` greedy steps follow (the argmax byte, appended
        to the prompt), each one forward pass over the whole prefix.
        """
        c = self.config.completion_bytes
        win = self._test_windows
        seq = win[:, : win.shape[1] - c].unsqueeze(0)
        W = x.to(self.dtype).reshape(1, -1)
        with torch.no_grad():
            for _ in range(c):
                nxt = self.model.forward(W, seq)[:, :, -1].argmax(dim=-1, keepdim=True)
                seq = torch.cat([seq, nxt], dim=2)
        return (seq[0, :, -c:] == win[:, -c:]).all(dim=1)

    # ------------------------------------------------------------------ capability: model

    def buffers(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """No buffers (``{}``)."""
        return {}

    def get_buffers(self, rows: torch.Tensor) -> torch.Tensor:
        """``[k, 0]``: the model keeps no running statistics."""
        return torch.zeros(len(rows), 0, dtype=self.dtype, device=self.device)

    def set_buffers(self, rows: torch.Tensor, B: torch.Tensor) -> None:
        """Accept ``[k, 0]`` rows (nothing to keep)."""
        if B.shape != (len(rows), 0):
            raise ValueError(f"set_buffers: expected [{len(rows)}, 0] rows, got {list(B.shape)}")

    def reset_buffers(
        self, X: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Nothing to reset: ``([k, 0], zeros [k])``."""
        return self.get_buffers(rows), torch.zeros(len(rows), dtype=torch.int64)

    def evaluate_nodes(
        self, X: torch.Tensor, rows: torch.Tensor, buffers: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Row ``j``'s own model: ``loss`` (``f_i``), ``accuracy`` on its fixed sample,
        ``test_loss``, ``test_accuracy`` on the held-out windows (``[k]`` float64)."""
        loss, acc = self._losses(X, self._value_windows.index_select(0, rows))
        test = self._test_windows.unsqueeze(0).expand(len(rows), -1, -1)
        tl, ta = self._losses(X, test)
        return {"loss": loss, "accuracy": acc, "test_loss": tl, "test_accuracy": ta}

    def activations(
        self,
        X: torch.Tensor,
        rows: torch.Tensor,
        points: Sequence[str] | None = None,
        data: str | torch.Tensor = "train",
        samples: int | None = None,
        buffers: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """MLP hidden activations ``{mlp<l>: [k, samples x seq_len, units]}``.

        ``data``: ``"train"`` (each row's fixed sample), ``"test"`` (the held-out windows,
        the same for all rows) or ``int64 [k, b, seq_len]`` inputs; ``samples`` keeps the
        first windows.
        """
        if isinstance(data, torch.Tensor):
            inputs = data.to(self.device)
        elif data == "train":
            inputs = self._value_windows.index_select(0, rows)[..., :-1]
        elif data == "test":
            inputs = self._test_windows[:, :-1].unsqueeze(0).expand(len(rows), -1, -1)
        else:
            raise ValueError(f"activations: data={data!r}; use 'train', 'test' or a tensor")
        if samples is not None:
            inputs = inputs[:, : int(samples)]
        return self.model.capture(X.to(self.dtype), inputs, None, points)


@PROBLEMS.register("tiny_lm")
class TinyLM(Problem):
    """Byte-level transformer LM, pre-trained, tuned by clients on text topics."""

    Config = TinyLMConfig
    oracle_class = TinyLMOracle

    @classmethod
    def param_dim(cls, config: ProblemConfig) -> int | None:
        m = coerce_config(config, TinyLMConfig, "problem").model
        return param_count(m.layers, m.d_model, m.context, m.mlp_ratio)

    @classmethod
    def param_itemsize(cls, config: ProblemConfig) -> int:
        return 8 if coerce_config(config, TinyLMConfig, "problem").dtype == "float64" else 4

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        cfg = coerce_config(config, TinyLMConfig, "problem")
        corpus_bytes = 8 * 470_000  # the pydoc topics as int64 (fortunes: 2.5 MB more)
        rows = num_nodes * (cfg.value_sequences * (cfg.seq_len + 1) * 8 + 8 * 80)
        act = cfg.eval_sequences * cfg.seq_len * (256 + 8 * cfg.model.d_model) * 8
        total = corpus_bytes + rows + act
        return total, f"corpus {corpus_bytes:,} B + {num_nodes:,} clients + eval {act:,} B"

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        cfg = coerce_config(config, TinyLMConfig, "problem")
        m = cfg.model
        corpus = load_corpus(cfg.corpus)
        split = split_topics(corpus, cfg.heldout_topics, cfg.seq_len + 1, cfg.split_seed)
        key = _pretrain_spec(cfg) | {"device": "cpu"}
        return {
            "dim": param_count(m.layers, m.d_model, m.context, m.mlp_ratio),
            "corpus": cfg.corpus,
            "train_topics": len(split.train),
            "heldout_topics": len(split.heldout),
            "split": cfg.split.kind,
            "pretrain_steps": cfg.pretrain.steps,
            "pretrain_cache_file_cpu": f"tiny_lm-{cache_key(key)[:16]}.pt",
        }


__all__ = ["TinyLM", "TinyLMConfig", "TinyLMOracle", "build_model"]
