"""Partitions of a labelled training set across data nodes.

Every function is pure: given the labels (or the sample count), the number of nodes and
a ``numpy.random.Generator``, it returns one sorted ``int64`` index array per node, and
the arrays together hold every sample exactly once (except ``classes``, which drops the
samples its trimming rule removes). The same generator state always
gives the same partition, so each worker recomputes the global partition and keeps its
own nodes' share.

Kinds
-----
``iid``
    A uniform random permutation cut into ``num_nodes`` near-equal parts.
``dirichlet``
    Label skew (Hsu, Qi & Brown, 2019): for each class ``c`` the proportions
    ``q_c ~ Dir(alpha * 1)`` over nodes decide how many of that class's samples each
    node receives. Small ``alpha`` gives nodes dominated by few classes; large ``alpha``
    approaches ``iid``.
``shards``
    Pathological skew (McMahan et al., 2017): samples sorted by label are cut into
    ``num_nodes * shards_per_node`` contiguous shards and each node gets
    ``shards_per_node`` shards at random.
``stratified``
    DIMAT's ``iid`` split (Saadati et al., CVPR 2024; spec ``dimat.md`` 3.6): each class's
    samples, in random order, are cut into ``num_nodes`` near-equal parts, one per node
    (so every node holds every class in the same proportion, to one sample).
``classes``
    DIMAT's ``non-iid`` split: whole classes dealt round-robin, class ``c`` (the ``c``-th
    smallest label) to node ``c mod num_nodes``, after **trimming every class to the
    smallest class's count** (a random subset of each larger class is kept, the rest is
    dropped). Ten classes over five nodes give two classes per node (``{k, k + 5}``).
    Nodes beyond the number of classes get nothing (refused unless ``min_samples: 0``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX, Section

PartitionKind = Literal["iid", "dirichlet", "shards", "stratified", "classes"]
MAX_TRIES = 100


class PartitionConfig(Section):
    """How training samples are split across data nodes (``problem.partition``)."""

    kind: PartitionKind = Field(
        "iid", description="iid | dirichlet | shards | stratified | classes"
    )
    alpha: float = Field(
        0.5,
        gt=0,
        allow_inf_nan=False,
        description="Dirichlet concentration (dirichlet only); smaller is more skewed",
    )
    shards_per_node: int = Field(
        2, ge=1, le=COUNT_MAX, description="label-sorted shards per node (shards)"
    )
    min_samples: int = Field(
        1,
        ge=0,
        le=COUNT_MAX,
        description="fewest samples a node may get; dirichlet resamples until every node "
        "has this many (up to 100 tries), other kinds raise an error",
    )


def _check_nodes(num_nodes: int) -> None:
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")


def iid(num_samples: int, num_nodes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Uniformly random split of ``range(num_samples)`` into near-equal parts.

    Node sizes differ by at most one (the first ``num_samples % num_nodes`` nodes get
    the extra sample); nodes beyond ``num_samples`` are empty.
    """
    _check_nodes(num_nodes)
    perm = rng.permutation(int(num_samples)).astype(np.int64)
    return [np.sort(part) for part in np.array_split(perm, num_nodes)]


def _dirichlet_once(
    labels: np.ndarray, num_nodes: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    parts: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c)).astype(np.int64)
        q = np.nan_to_num(rng.dirichlet(np.full(num_nodes, float(alpha))), nan=0.0)
        total = q.sum()
        if not total > 0:  # every component underflowed (tiny alpha): one node takes all
            q = np.zeros(num_nodes)
            q[rng.integers(num_nodes)] = 1.0
            total = 1.0
        cuts = np.minimum((np.cumsum(q / total)[:-1] * len(idx)).astype(np.int64), len(idx))
        for node, chunk in enumerate(np.split(idx, cuts)):
            parts[node].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def dirichlet(
    labels: np.ndarray,
    num_nodes: int,
    alpha: float,
    rng: np.random.Generator,
    min_samples: int = 0,
) -> list[np.ndarray]:
    """Label-skewed split: per-class proportions over nodes drawn from ``Dir(alpha)``.

    Parameters
    ----------
    labels
        ``[n]`` integer class labels.
    num_nodes
        Number of parts.
    alpha
        Dirichlet concentration (> 0).
    rng
        Source of randomness; the result is a function of its state.
    min_samples
        Redraw the whole partition until every node has at least this many samples.

    Raises
    ------
    ConfigError
        When ``min_samples`` cannot be met (impossible, or not met in 100 draws).
    """
    _check_nodes(num_nodes)
    if not alpha > 0:
        raise ConfigError(f"problem.partition.alpha: must be > 0 (got {alpha!r}); use e.g. 0.5.")
    labels = np.asarray(labels)
    if min_samples * num_nodes > len(labels):
        raise ConfigError(
            f"problem.partition.min_samples: {num_nodes} nodes x {min_samples} samples "
            f"exceeds the {len(labels)} training samples; lower min_samples (0 allows "
            "empty nodes) or use fewer nodes."
        )
    for _ in range(MAX_TRIES):
        parts = _dirichlet_once(labels, num_nodes, alpha, rng)
        if min(len(p) for p in parts) >= min_samples:
            return parts
    raise ConfigError(
        f"problem.partition.min_samples: no Dirichlet(alpha={alpha}) partition of "
        f"{len(labels)} samples over {num_nodes} nodes gave every node >= {min_samples} "
        f"samples in {MAX_TRIES} draws; raise problem.partition.alpha, lower "
        "problem.partition.min_samples (0 allows empty nodes) or use fewer nodes."
    )


def shards(
    labels: np.ndarray, num_nodes: int, shards_per_node: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Sort by label, cut into ``num_nodes * shards_per_node`` shards, deal them out.

    Shards have near-equal sizes (``numpy.array_split``); ties in the label sort keep
    the original order, so the result depends only on the labels and ``rng``.
    """
    _check_nodes(num_nodes)
    labels = np.asarray(labels)
    num_shards = num_nodes * shards_per_node
    if shards_per_node < 1 or num_shards > len(labels):
        raise ConfigError(
            f"problem.partition.shards_per_node: {num_nodes} nodes x {shards_per_node} "
            f"shards exceeds the {len(labels)} training samples; use fewer shards per node "
            "(>= 1) or fewer nodes."
        )
    order = np.argsort(labels, kind="stable").astype(np.int64)
    pieces = np.array_split(order, num_shards)
    deal = rng.permutation(num_shards)
    return [
        np.sort(
            np.concatenate(
                [pieces[j] for j in deal[i * shards_per_node : (i + 1) * shards_per_node]]
            )
        )
        for i in range(num_nodes)
    ]


def stratified(labels: np.ndarray, num_nodes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Every class split evenly over the nodes (DIMAT's ``iid``; see the module doc)."""
    _check_nodes(num_nodes)
    labels = np.asarray(labels)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c)).astype(np.int64)
        for node, chunk in enumerate(np.array_split(idx, num_nodes)):
            parts[node].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def class_round_robin(
    labels: np.ndarray, num_nodes: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Whole classes round-robin after trimming each to the smallest class (module doc)."""
    _check_nodes(num_nodes)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(num_nodes)]
    keep = min(int((labels == c).sum()) for c in classes)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
    for ci, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == c)).astype(np.int64)[:keep]
        parts[ci % num_nodes].append(idx)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]


def partition(
    config: PartitionConfig, labels: np.ndarray, num_nodes: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Apply ``config`` to ``labels``; every node gets at least ``config.min_samples``.

    Raises
    ------
    ConfigError
        When a node would get fewer than ``min_samples`` samples.
    """
    labels = np.asarray(labels)
    if config.kind == "iid":
        parts = iid(len(labels), num_nodes, rng)
    elif config.kind == "dirichlet":
        parts = dirichlet(labels, num_nodes, config.alpha, rng, config.min_samples)
    elif config.kind == "shards":
        parts = shards(labels, num_nodes, config.shards_per_node, rng)
    elif config.kind == "stratified":
        parts = stratified(labels, num_nodes, rng)
    elif config.kind == "classes":
        parts = class_round_robin(labels, num_nodes, rng)
    else:  # pragma: no cover - excluded by the config model
        raise ConfigError(
            f"problem.partition.kind: unknown kind {config.kind!r}; use iid, dirichlet, "
            "shards, stratified or classes."
        )
    smallest = min(len(p) for p in parts)
    if smallest < config.min_samples:
        raise ConfigError(
            f"problem.partition.min_samples: the {config.kind} partition of {len(labels)} "
            f"samples over {num_nodes} nodes gives a node only {smallest} samples "
            f"(< {config.min_samples}); use fewer nodes or lower min_samples (0 allows "
            "empty nodes)."
        )
    return parts
