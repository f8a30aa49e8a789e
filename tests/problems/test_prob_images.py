"""Image data for DIMAT: keyed synthetic images, Fashion-MNIST (IDX files), DIMAT's splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import experiment, run

from fedopt.config import validate
from fedopt.errors import ConfigError
from fedopt.problems.image_data import (
    FASHION_DIR,
    FASHION_FILES,
    fashion_mnist_paths,
    read_idx,
    synthetic_images,
    write_idx,
)
from fedopt.problems.partition import PartitionConfig, partition

FASHION_MISSING = fashion_mnist_paths(FASHION_DIR) is None


# ------------------------------------------------------------------ synthetic images


def test_synthetic_images_are_keyed_balanced_and_in_range():
    a = synthetic_images(0)
    b = synthetic_images(0, 8, 100, 30, 0.3)
    c = synthetic_images(1)
    Xtr, ytr, Xte, yte = a
    assert Xtr.shape == (1000, 64) and Xte.shape == (300, 64) and Xtr.dtype == np.float32
    assert np.array_equal(np.bincount(ytr), [100] * 10) and np.array_equal(
        np.bincount(yte), [30] * 10
    )
    assert Xtr.min() >= 0 and Xtr.max() <= 1
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(Xtr, c[0])
    assert synthetic_images(0, size=12)[0].shape == (1000, 144)


def test_image_model_learns_synthetic_images_with_the_digits_mlp():
    raw = experiment(
        topology={"name": "ring", "n": 5},
        algorithm={"name": "cdmsgd", "lr": 0.05},
        problem={"name": "image_model", "batch_size": 32, "model": {"name": "digits_mlp"}},
        stop={"rounds": 150},
        eval={"every": 150},
    )
    _, result, _ = run(raw)
    assert result.records[0]["test_accuracy"] < 0.15
    assert result.records[-1]["test_accuracy"] > 0.6  # measured 0.729; logistic regression 0.79


# ------------------------------------------------------------------ IDX / Fashion-MNIST


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_round_trip(tmp_path, suffix):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / f"x{suffix}", a)
    assert np.array_equal(read_idx(tmp_path / f"x{suffix}"), a)
    raw = (tmp_path / "x").read_bytes() if not suffix else None
    if raw is not None:
        assert raw[:4] == bytes([0, 0, 8, 3]) and raw[4:8] == (2).to_bytes(4, "big")


def test_idx_refuses_other_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match=r"announces \(5,\)"):
        read_idx(tmp_path / "short")


def fake_fashion(root, train=60, test=20):
    gen = np.random.default_rng(0)
    data = {
        "train_images": gen.integers(0, 256, (train, 28, 28)),
        "train_labels": np.arange(train) % 10,
        "test_images": gen.integers(0, 256, (test, 28, 28)),
        "test_labels": np.arange(test) % 10,
    }
    for key, stem in FASHION_FILES.items():
        write_idx(root / f"{stem}.gz", data[key])
    return data


FASHION_PROBLEM = {
    "name": "image_model",
    "dataset": "fashion_mnist",
    "batch_size": 8,
    "model": {"name": "synthetic_mlp", "in_features": 784, "hidden": 16},
}


def test_fashion_mnist_reader_on_files_in_the_debian_layout(tmp_path):
    data = fake_fashion(tmp_path)
    raw = experiment(
        topology={"name": "ring", "n": 5},
        algorithm={"name": "sgp"},
        problem={**FASHION_PROBLEM, "data_dir": str(tmp_path), "partition": {"kind": "classes"}},
        stop={"rounds": 2},
    )
    _, result, worker = run(raw)
    oracle = worker.oracle
    assert oracle.num_features == 784 and oracle.info["train_samples"] == 60
    assert torch.equal(oracle.y_test, torch.from_numpy(data["test_labels"]))
    pixels = torch.from_numpy(data["test_images"].reshape(20, 784) / 255.0).float()
    assert torch.equal(oracle.X_test, pixels)
    assert np.isfinite(result.records[-1]["loss"])


def test_fashion_mnist_absent_names_the_debian_package(tmp_path):
    raw = experiment(problem={**FASHION_PROBLEM, "data_dir": str(tmp_path / "none")})
    with pytest.raises(ConfigError) as err:
        validate(raw)
    text = str(err.value)
    assert "dataset-fashion-mnist" in text and "apt-get install" in text
    assert "problem.data_dir" in text and "train-images-idx3-ubyte" in text


@pytest.mark.skipif(FASHION_MISSING, reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_has_60k_and_10k_images():
    from fedopt.problems.image_data import load_fashion_mnist

    Xtr, ytr, Xte, yte = load_fashion_mnist()
    assert Xtr.shape == (60000, 784) and Xte.shape == (10000, 784)
    assert np.array_equal(np.bincount(ytr), [6000] * 10)
    assert np.array_equal(np.bincount(yte), [1000] * 10)


# ------------------------------------------------------------------ DIMAT's splits


def test_stratified_split_gives_every_node_every_class_evenly():
    labels = np.repeat(np.arange(10), [145, 150, 140, 146, 150, 149, 148, 147, 141, 142])
    parts = partition(PartitionConfig(kind="stratified"), labels, 5, np.random.default_rng(0))
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    for c in range(10):
        per_node = [int((labels[p] == c).sum()) for p in parts]
        assert max(per_node) - min(per_node) <= 1


def test_class_split_is_round_robin_with_trimming():
    counts = [145, 150, 140, 146, 150, 149, 148, 147, 141, 142]
    labels = np.repeat(np.arange(10), counts)
    parts = partition(PartitionConfig(kind="classes"), labels, 5, np.random.default_rng(0))
    for k, p in enumerate(parts):
        assert set(labels[p].tolist()) == {k, k + 5}
        assert np.array_equal(np.bincount(labels[p], minlength=10)[[k, k + 5]], [140, 140])
    assert len(np.unique(np.concatenate(parts))) == 10 * 140  # the surplus is dropped
    three = partition(PartitionConfig(kind="classes"), labels, 3, np.random.default_rng(0))
    assert [sorted(set(labels[p].tolist())) for p in three] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_class_split_refuses_more_nodes_than_classes():
    labels = np.repeat(np.arange(10), 20)
    with pytest.raises(ConfigError, match=r"problem\.partition\.min_samples"):
        partition(PartitionConfig(kind="classes"), labels, 12, np.random.default_rng(0))


def test_node_classes_and_own_class_accuracy_on_digits():
    raw = experiment(
        topology={"name": "ring", "n": 5},
        algorithm={"name": "local_training", "lr": 0.003},
        problem={"name": "digits_mlp", "batch_size": 32, "partition": {"kind": "classes"}},
        stop={"rounds": 100},
        eval={"every": 100},
    )
    _, result, worker = run(raw)
    oracle, rows = worker.oracle, worker.ctx.data_rows
    held = oracle.node_classes(rows)
    assert [torch.nonzero(h).squeeze(1).tolist() for h in held] == [[k, k + 5] for k in range(5)]
    assert oracle.info["partitioned_samples"] == 10 * oracle.info["min_node_samples"] // 2
    assert float(oracle.weights.sum()) == pytest.approx(1.0, abs=1e-15)
    figures = oracle.evaluate_nodes(worker.state["x"], rows)
    logits = oracle._logits(worker.state["x"], oracle.X_test.unsqueeze(0).expand(5, -1, -1))
    pred = logits.argmax(dim=2)
    for k in range(5):
        mask = (oracle.y_test == k) | (oracle.y_test == k + 5)
        own = (pred[k][mask] == oracle.y_test[mask]).double().mean()
        assert float(figures["own_classes_test_accuracy"][k]) == pytest.approx(
            float(own), abs=1e-12
        )
    last = result.records[-1]
    assert last["own_classes_test_accuracy"] > 0.9 and last["test_accuracy"] < 0.25


def test_image_model_refuses_test_fraction():
    raw = experiment(problem={"name": "image_model", "test_fraction": 0.3})
    with pytest.raises(ConfigError, match=r"problem\.test_fraction.*test_per_class"):
        validate(raw)
