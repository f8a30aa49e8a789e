"""Partitions of labelled data across nodes."""

from __future__ import annotations

import numpy as np
import pytest

from fedopt.errors import ConfigError
from fedopt.problems import partition as part

LABELS = np.repeat(np.arange(10), 60)[np.random.default_rng(0).permutation(600)]


def covers_once(parts: list[np.ndarray], n: int) -> bool:
    allidx = np.concatenate(parts)
    return len(allidx) == n and np.array_equal(np.sort(allidx), np.arange(n))


def make(kind: str, num_nodes: int = 8, seed: int = 1, **kw: object) -> list[np.ndarray]:
    config = part.PartitionConfig(kind=kind, **kw)
    return part.partition(config, LABELS, num_nodes, np.random.default_rng(seed))


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "shards"])
def test_every_sample_exactly_once_and_deterministic(kind: str) -> None:
    parts = make(kind)
    assert len(parts) == 8 and covers_once(parts, len(LABELS))
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
    again = make(kind)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = make(kind, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_sizes_are_balanced() -> None:
    parts = part.iid(103, 10, np.random.default_rng(0))
    assert sorted(len(p) for p in parts) == [10] * 7 + [11] * 3
    assert covers_once(parts, 103)


def class_share(parts: list[np.ndarray]) -> float:
    """Mean over nodes of the share of the node's most frequent class."""
    return float(np.mean([np.bincount(LABELS[p]).max() / len(p) for p in parts if len(p)]))


def test_dirichlet_small_alpha_is_skewed() -> None:
    rng = np.random.default_rng(3)
    skewed = part.dirichlet(LABELS, 10, 0.05, rng, min_samples=1)
    mild = part.dirichlet(LABELS, 10, 100.0, np.random.default_rng(3), min_samples=1)
    assert covers_once(skewed, 600) and covers_once(mild, 600)
    assert class_share(skewed) > 0.6
    assert class_share(mild) < 0.25


def test_dirichlet_min_samples_resamples_then_gives_up() -> None:
    parts = part.dirichlet(LABELS, 20, 0.3, np.random.default_rng(0), min_samples=5)
    assert min(len(p) for p in parts) >= 5
    with pytest.raises(ConfigError, match=r"problem\.partition\.min_samples.*100 draws"):
        part.dirichlet(LABELS, 50, 0.001, np.random.default_rng(0), min_samples=10)
    with pytest.raises(ConfigError, match=r"problem\.partition\.min_samples"):
        part.dirichlet(LABELS, 700, 1.0, np.random.default_rng(0), min_samples=1)


def test_shards_give_few_labels_per_node() -> None:
    parts = part.shards(LABELS, 10, 2, np.random.default_rng(0))
    assert covers_once(parts, 600)
    assert all(len(np.unique(LABELS[p])) <= 2 for p in parts)
    assert all(len(p) == 60 for p in parts)
    with pytest.raises(ConfigError, match=r"problem\.partition\.shards_per_node"):
        part.shards(LABELS, 400, 2, np.random.default_rng(0))


def test_partition_enforces_min_samples_for_every_kind() -> None:
    with pytest.raises(ConfigError, match=r"problem\.partition\.min_samples"):
        part.partition(
            part.PartitionConfig(kind="iid", min_samples=2),
            LABELS[:10],
            8,
            np.random.default_rng(0),
        )
    parts = part.partition(
        part.PartitionConfig(kind="iid", min_samples=0), LABELS[:4], 8, np.random.default_rng(0)
    )
    assert sum(len(p) == 0 for p in parts) == 4
