"""tiny_lm: corpus split, client distributions, pre-training and its cache, gradients,
minibatch values, counters, bad input, and FedAvg lowering the held-out loss."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import experiment, run

import fedopt.problems as P
from fedopt.errors import ConfigError
from fedopt.problems.lm import pretrain as pre
from fedopt.problems.lm.clients import (
    WindowSampler,
    dirichlet_weights,
    task_topics,
    task_weights,
)
from fedopt.problems.lm.corpus import (
    fortunes_available,
    heldout_windows,
    load_corpus,
    split_topics,
)

# a 2-layer transformer of width 16 (13,184 parameters) on windows of 17 bytes
TINY_MODEL = {"layers": 2, "d_model": 16, "heads": 2, "context": 16, "mlp_ratio": 2}
TINY: dict[str, object] = {
    "name": "tiny_lm",
    "seq_len": 16,
    "batch_size": 4,
    "value_sequences": 4,
    "eval_sequences": 64,
    "model": TINY_MODEL,
    "pretrain": {"steps": 0},
}


def build(spec: dict, ranks: list[int], n: int, seed: int = 3) -> P.Oracle:
    cfg = P.parse_problem_config(spec)
    return P.PROBLEMS.get("tiny_lm").build(
        cfg,
        seed=seed,
        data_ranks=torch.tensor(ranks, dtype=torch.int64),
        num_data_nodes=n,
        device=torch.device("cpu"),
    )


def spec(**changes: object) -> dict:
    out = copy.deepcopy(TINY)
    for key, value in changes.items():
        out[key] = value
    return out


# ----------------------------------------------------------------------------- corpus


def test_pydoc_corpus_and_held_out_split_sizes() -> None:
    corpus = load_corpus("pydoc")
    assert len(corpus.topics) == 79 and int(corpus.sizes.sum()) == 466_117
    assert int(corpus.sizes.min()) == 202
    split = split_topics(corpus, 8, 65, split_seed=0)
    assert len(split.heldout) == 8 and len(split.train) == 71 and len(split.too_short) == 0
    everything = np.concatenate([split.train, split.heldout, split.too_short])
    assert sorted(everything.tolist()) == list(range(79))
    assert [corpus.topics[j] for j in split.heldout] == [
        "bitwise",
        "class",
        "continue",
        "dict",
        "formatstrings",
        "integers",
        "operator-summary",
        "yield",
    ]
    # keyed: same seed same split, another seed another split
    assert np.array_equal(split_topics(corpus, 8, 65, 0).heldout, split.heldout)
    assert not np.array_equal(split_topics(corpus, 8, 65, 1).heldout, split.heldout)
    # windows longer than the shortest topics set them aside
    long = split_topics(corpus, 8, 400, 0)
    assert len(long.train) + len(long.too_short) == 71 and len(long.too_short) == 6


def test_held_out_windows_are_the_held_out_text() -> None:
    corpus = load_corpus("pydoc")
    split = split_topics(corpus, 8, 17, 0)
    every = sum(int(corpus.sizes[j]) // 17 for j in split.heldout)
    full = heldout_windows(corpus, split.heldout, 17, 10**9)
    assert full.shape == (every, 17)
    first = int(split.heldout[0])
    assert bytes(full[0]) == bytes(corpus.texts[first][:17])
    some = heldout_windows(corpus, split.heldout, 17, 64)
    assert some.shape == (64, 17) and bytes(some[0]) == bytes(full[0])
    assert bytes(some[-1]) == bytes(full[-1])


# ----------------------------------------------------------------------------- clients


def test_task_split_gives_every_client_its_topics() -> None:
    # 10 clients x 3 topics = 30 <= 71: disjoint, exactly 3 each
    owned = [set(task_topics(r, 71, 3, seed=5).tolist()) for r in range(10)]
    assert all(len(o) == 3 for o in owned)
    assert len(set().union(*owned)) == 30
    # 30 clients x 3 = 90 > 71: every topic owned, 19 of them twice
    owned = [task_topics(r, 71, 3, seed=5) for r in range(30)]
    counts = np.bincount(np.concatenate(owned), minlength=71)
    assert sorted(np.unique(counts).tolist()) == [1, 2] and int((counts == 2).sum()) == 19
    windows = np.arange(1, 72, dtype=np.int64)
    W = task_weights(np.arange(10), windows, 3, seed=5)
    assert np.allclose(W.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    for r in range(10):
        own = task_topics(r, 71, 3, seed=5)
        assert set(np.flatnonzero(W[r]).tolist()) == set(own.tolist())
        assert np.allclose(W[r, own], windows[own] / windows[own].sum())


def test_a_task_client_sees_only_its_own_topics() -> None:
    oracle = build(spec(split={"kind": "task", "topics_per_client": 2}), [0, 5], 10)
    train = oracle.split.train
    for row, rank in enumerate([0, 5]):
        own = task_topics(rank, len(train), 2, seed=3)
        texts = [bytes(oracle.corpus.texts[int(train[j])]) for j in own]
        names = {oracle.corpus.topics[int(train[j])] for j in own}
        assert len(names) == 2
        for step in (0, 1):
            for w in oracle.batch(torch.tensor([row]), step)[0]:
                assert any(bytes(w.to(torch.uint8).tolist()) in t for t in texts)


def test_dirichlet_mixtures_sum_to_one_and_are_keyed_by_client() -> None:
    W = dirichlet_weights(np.arange(6), 71, 0.5, seed=2)
    assert W.shape == (6, 71) and (W >= 0).all()
    assert np.abs(W.sum(axis=1) - 1).max() < 1e-12
    alone = dirichlet_weights(np.array([4]), 71, 0.5, seed=2)
    assert np.array_equal(alone[0], W[4])  # a client's row does not depend on the others
    assert not np.array_equal(dirichlet_weights(np.array([4]), 71, 0.5, seed=3)[0], W[4])
    oracle = build(spec(split={"kind": "dirichlet", "alpha": 0.5}), [1, 4], 6, seed=2)
    assert torch.equal(oracle.weights_over_topics, torch.from_numpy(W[[1, 4]]))


def test_windows_are_substrings_drawn_by_the_topic_weights() -> None:
    texts = [np.frombuffer(bytes([j]) * (30 + 10 * j), dtype=np.uint8) for j in range(4)]
    sampler = WindowSampler(texts, 8, torch.device("cpu"))
    w = torch.tensor([[0.0, 0.5, 0.0, 0.5]], dtype=torch.float64)
    from fedopt import rng

    keys = rng.node_keys(0, "t", torch.tensor([0]), 0)
    win = sampler.sample(torch.cumsum(w, 1), keys, 4000)
    assert win.shape == (1, 4000, 9)
    topic = win[0, :, 0]
    assert bool((win[0] == topic.unsqueeze(1)).all())  # one topic per window
    assert set(topic.tolist()) == {1, 3}  # weight-0 topics never drawn
    assert abs(float((topic == 1).double().mean()) - 0.5) < 0.03
    # starts stay inside the topic: a real text's windows are its substrings
    corpus = load_corpus("pydoc")
    real = [corpus.texts[j] for j in range(3)]
    s2 = WindowSampler(real, 16, torch.device("cpu"))
    got = s2.sample(torch.tensor([[0.2, 0.5, 1.0]], dtype=torch.float64), keys, 50)
    for row in got[0]:
        b = bytes(row.to(torch.uint8).tolist())
        assert any(b in bytes(t) for t in real)


# ----------------------------------------------------------------------------- pre-training


def test_pretraining_lowers_the_loss_and_its_cache_returns_the_same_bits(tmp_path) -> None:
    s = spec(pretrain={"steps": 60, "batch_size": 16, "lr": 0.01, "cache_dir": str(tmp_path)})
    pre.clear_memo()
    first = build(s, [0, 1], 4)
    res = first.pretrained
    assert res is not None and res.source == "trained"
    assert 5.4 < float(res.losses[0]) < 5.8  # about ln(256) = 5.545 at the start
    assert float(res.losses[-10:].mean()) < 3.3  # measured 3.075 (60 steps, width 16)
    files = list(tmp_path.glob("tiny_lm-*.pt"))
    assert [f.name for f in files] == [f"tiny_lm-{res.key[:16]}.pt"]
    summary = P.PROBLEMS.get("tiny_lm").summary(P.parse_problem_config(s))
    assert summary["pretrain_cache_file_cpu"] == files[0].name  # named before it exists
    x0 = first.init_params(torch.arange(2))
    assert torch.equal(x0[0], res.params) and torch.equal(x0[1], res.params)
    scratch = build(spec(), [0], 4).evaluate_test(first.model.init_params(0, [0])[0])
    assert first.evaluate_test(res.params)["test_loss"] < scratch["test_loss"] - 1.5
    # in-process memo, then the disk file after the memo is cleared: the same bits
    assert build(s, [2], 4).pretrained.source == "memo"
    pre.clear_memo()
    hit = build(s, [3], 4).pretrained
    assert hit.source == "disk" and torch.equal(hit.params, res.params)
    # training again from scratch (no cache) is deterministic: the same bits
    pre.clear_memo()
    again = build(s | {"pretrain": {**s["pretrain"], "cache": False}}, [0], 4).pretrained
    assert again.source == "trained" and torch.equal(again.params, res.params)
    # another configuration is another key (and another file)
    pre.clear_memo()
    other = build(s | {"pretrain": {**s["pretrain"], "steps": 2}}, [0], 4).pretrained
    assert other.key != res.key and len(list(tmp_path.glob("tiny_lm-*.pt"))) == 2


def test_a_cache_file_with_another_key_is_not_used(tmp_path) -> None:
    s = spec(pretrain={"steps": 3, "batch_size": 4, "cache_dir": str(tmp_path)})
    pre.clear_memo()
    res = build(s, [0], 2).pretrained
    path = tmp_path / f"tiny_lm-{res.key[:16]}.pt"
    blob = torch.load(path, weights_only=True)
    torch.save({**blob, "key": "0" * 64, "params": blob["params"] + 1}, path)
    pre.clear_memo()
    redo = build(s, [0], 2).pretrained
    assert redo.source == "trained" and torch.equal(redo.params, res.params)


def test_exact_match_is_teacher_forced_accuracy_on_every_completion_byte(tmp_path) -> None:
    # greedy decoding reproduces the last c bytes iff every teacher-forced argmax there is right
    s = spec(
        completion_bytes=2,
        pretrain={"steps": 60, "batch_size": 16, "lr": 0.01, "cache_dir": str(tmp_path)},
    )
    oracle = build(s, [0], 1)
    x = oracle.pretrained.params
    got = oracle.exact_match(x)
    win = oracle._test_windows
    logits = oracle.model.forward(x.unsqueeze(0), win[:, :-1].unsqueeze(0))[0]
    right = (logits.argmax(-1) == win[:, 1:])[:, -2:].all(dim=1)
    assert got.shape == (64,) and torch.equal(got, right)
    assert 10 <= int(got.sum()) <= 20  # of 64; 15 measured
    m = oracle.evaluate_test(x)
    assert m["test_exact_match"] == float(got.double().mean())
    assert "test_exact_match" not in build(spec(), [0], 1).evaluate_test(x)
    with pytest.raises(ConfigError, match=r"problem.completion_bytes: 17 exceeds seq_len=16"):
        build(spec(completion_bytes=17), [0], 1)


# ----------------------------------------------------------------------------- gradients


def _module_loss(oracle, x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """The loss of one parameter row on windows ``[b, L + 1]`` by plain torch autograd."""
    m = copy.deepcopy(oracle.model.module).double()
    m.load_state_dict(oracle.layout.state_dict(x.unsqueeze(0), None, 0))
    logits = m(win[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, 256), win[:, 1:].reshape(-1)), m


def test_gradient_equals_module_autograd_and_finite_differences() -> None:
    oracle = build(spec(dtype="float64"), [0, 1, 2], 3)
    g = torch.Generator().manual_seed(0)
    X = oracle.init_params(torch.arange(3)) + 0.05 * torch.randn(
        3, oracle.dim, generator=g, dtype=torch.float64
    )
    rows = torch.tensor([0, 2])
    G = oracle.grad(X[rows], rows, 7)
    win = oracle.batch(rows, 7)
    for j in range(2):
        loss, m = _module_loss(oracle, X[rows[j]], win[j])
        loss.backward()
        ref = torch.cat([p.grad.reshape(-1) for p in m.parameters()])
        assert torch.allclose(G[j], ref, rtol=0, atol=1e-12)
        assert float(oracle.batch_value(X[rows[j : j + 1]], rows[j : j + 1], 7)) == pytest.approx(
            float(loss.detach()), rel=1e-13
        )
    # central differences of batch_value along a random direction (same minibatch)
    z = torch.randn(2, oracle.dim, generator=g, dtype=torch.float64)
    eps = 1e-5
    fd = (
        oracle.batch_value(X[rows] + eps * z, rows, 7)
        - oracle.batch_value(X[rows] - eps * z, rows, 7)
    ) / (2 * eps)
    assert torch.allclose(fd, (G * z).sum(1), rtol=1e-6, atol=1e-9)
    # a row's gradient does not depend on the other rows of the call
    assert torch.equal(oracle.grad(X[2:3], torch.tensor([2]), 7)[0], G[1])
    # value_and_grad is (batch_value, grad) in one pass
    v, G2 = oracle.value_and_grad(X[rows], rows, 7)
    assert torch.equal(G2, G) and torch.allclose(
        v, oracle.batch_value(X[rows], rows, 7), rtol=1e-14
    )


def test_full_gradient_is_the_gradient_of_value() -> None:
    oracle = build(spec(dtype="float64"), [0, 1], 2)
    X = oracle.init_params(torch.arange(2))
    G = oracle.full_grad(X, torch.arange(2))
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, oracle.dim, generator=g, dtype=torch.float64)
    eps = 1e-5
    fd = (
        oracle.value(X + eps * z, torch.arange(2)) - oracle.value(X - eps * z, torch.arange(2))
    ) / (2 * eps)
    assert torch.allclose(fd, (G * z).sum(1), rtol=1e-6, atol=1e-9)


def test_counters_count_every_pass_exactly() -> None:
    oracle = build(spec(), [0, 1, 2], 3)
    X = oracle.init_params(torch.arange(3))
    rows = torch.arange(3)
    assert (oracle.forwards, oracle.backwards, oracle.queries) == (0, 0, 0)
    oracle.grad(X, rows, 0)
    assert (oracle.forwards, oracle.backwards) == (3, 3)
    oracle.batch_value(X[:2], rows[:2], 1)
    assert (oracle.forwards, oracle.backwards) == (5, 3)
    oracle.sgd_step_(X.clone(), rows, 2, 0.1)
    assert (oracle.forwards, oracle.backwards) == (8, 6)
    oracle.value(X[:1], rows[:1])
    oracle.query(X, rows, 3, 0.0)
    assert (oracle.forwards, oracle.backwards, oracle.queries) == (12, 6, 3)
    oracle.value_and_grad(X, rows, 4)
    oracle.full_grad(X[:1], rows[:1])
    assert (oracle.forwards, oracle.backwards) == (16, 10)
    # evaluation is not training work: not counted
    oracle.evaluate(X[0])
    oracle.evaluate_test(X[0])
    oracle.evaluate_nodes(X, rows)
    assert (oracle.forwards, oracle.backwards, oracle.queries) == (16, 10, 3)


def test_minibatches_are_keyed_by_rank_and_step() -> None:
    a = build(spec(), [0, 1, 2, 3], 4)
    b = build(spec(), [2], 4)
    assert torch.equal(a.batch(torch.tensor([2]), 5), b.batch(torch.tensor([0]), 5))
    assert not torch.equal(a.batch(torch.tensor([2]), 5), a.batch(torch.tensor([2]), 6))
    steps = torch.tensor([5, 6])
    both = a.batch(torch.tensor([1, 2]), steps)
    assert torch.equal(both[1], a.batch(torch.tensor([2]), 6)[0])
    assert a.batch(torch.tensor([0]), 0).shape == (1, 4, 17)


def test_layout_exposes_named_blocks_and_metrics() -> None:
    oracle = build(spec(), [0], 1)
    names = [e.name for e in oracle.layout.params]
    assert names[:2] == ["tok.weight", "pos.weight"] and names[-2:] == ["head.weight", "head.bias"]
    assert len(names) == 2 + 2 * 12 + 4
    assert oracle.dim == sum(e.numel for e in oracle.layout.params) == 13_184
    assert P.PROBLEMS.get("tiny_lm").param_dim(P.parse_problem_config(TINY)) == 13_184
    x = oracle.init_params(torch.arange(1))[0]
    m = oracle.evaluate_test(x)
    assert set(m) == {"test_loss", "test_accuracy"} and m["test_loss"] > 5.0
    acts = oracle.activations(x.unsqueeze(0), torch.arange(1), data="test", samples=3)
    assert {k: tuple(v.shape) for k, v in acts.items()} == {
        "mlp0": (1, 48, 32),
        "mlp1": (1, 48, 32),
    }


# ----------------------------------------------------------------------------- bad input


@pytest.mark.skipif(fortunes_available(), reason="Debian fortunes is installed here")
def test_fortunes_absent_names_the_package() -> None:
    with pytest.raises(ConfigError, match=r"problem.corpus: 'fortunes'.*apt-get install fortunes"):
        build(spec(corpus="fortunes"), [0], 1)


@pytest.mark.skipif(not fortunes_available(), reason="Debian fortunes is not installed")
def test_fortunes_categories_are_topics() -> None:
    corpus = load_corpus("fortunes")
    assert len(corpus.topics) >= 10


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model": TINY_MODEL | {"d_model": 18, "heads": 4}},
            r"problem.model.d_model: 18 is not divisible by heads=4",
        ),
        ({"seq_len": 32}, r"problem.seq_len: 32 exceeds model.context=16"),
        ({"heldout_topics": 79}, r"problem.heldout_topics: 79 of the 79 topics"),
        ({"split": {"kind": "shards"}}, r"split.kind"),
        ({"model": TINY_MODEL | {"layers": 0}}, r"layers"),
    ],
)
def test_bad_input_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(spec(**changes), [0], 1)


def test_a_window_longer_than_every_topic_is_refused() -> None:
    big = TINY_MODEL | {"context": 70_000}
    with pytest.raises(ConfigError, match=r"problem.seq_len: no training topic .* 65001 bytes"):
        build(spec(seq_len=65_000, model=big), [0], 1)


# ----------------------------------------------------------------------------- federated


def test_fedavg_lowers_the_held_out_loss(tmp_path) -> None:
    # 8 clients with 8 topics each, all of them every round, 10 SGD steps of 4 windows
    problem = spec(
        split={"kind": "task", "topics_per_client": 8},
        pretrain={"steps": 40, "batch_size": 16, "lr": 0.01, "cache_dir": str(tmp_path)},
    )
    raw = experiment(
        topology={"name": "star", "n": 9},
        algorithm={"name": "fedavg", "lr": 0.3, "local_steps": 10},
        problem=problem,
        stop={"rounds": 6},
        eval={"every": 3},
    )
    _, result, _ = run(raw)
    losses = [r["test_loss"] for r in result.records]
    assert [r["round"] for r in result.records] == [0, 3, 6]
    assert losses[0] == pytest.approx(3.164, abs=0.01)  # the pre-trained model's
    assert losses[-1] < losses[0] - 0.15, losses  # measured 3.164 -> 3.043 -> 2.960


@pytest.mark.slow
def test_default_pretraining_reaches_the_documented_loss(tmp_path) -> None:
    # the default model (137,216 parameters), 300 Adam steps: experiments/ferret/LM.md
    pre.clear_memo()
    s = {"name": "tiny_lm", "pretrain": {"cache_dir": str(tmp_path)}}
    oracle = build(s, [0], 71)
    res = oracle.pretrained
    assert float(res.losses[0]) == pytest.approx(5.734, abs=0.01)
    assert float(res.losses[-20:].mean()) == pytest.approx(2.047, abs=0.01)
    test = oracle.evaluate_test(res.params)
    assert test["test_loss"] == pytest.approx(1.921, abs=0.01)
    assert test["test_accuracy"] == pytest.approx(0.494, abs=0.005)
