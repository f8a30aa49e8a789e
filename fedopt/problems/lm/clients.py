"""Per-client text distributions over the training topics, and keyed window sampling.

Every client ``i`` holds a distribution ``w_i`` over the ``n`` training topics, from
which its sequences are drawn: a topic ``j ~ w_i``, then a window of ``seq_len + 1``
bytes starting uniformly in ``0 .. len_j - seq_len - 1`` (inputs: its first
``seq_len`` bytes, targets: the next byte of each).

``task`` (Natural-Instructions-like: a client owns whole tasks)
    The training topics in the keyed order ``perm = permutation(n)`` (key
    ``numpy_seed(seed, "lm/assign")``) are dealt round-robin:
    client ``i`` owns topics ``perm[(i * c + q) mod n]``, ``q = 0..c-1``
    (``c = topics_per_client``), so every client owns exactly ``c`` distinct topics
    when ``c <= n``, and topics are shared only when ``N c > n``. ``w_i`` is
    proportional to the owned topics' window counts (uniform over the owned text).
``dirichlet`` (Dolly-like category skew)
    ``w_i ~ Dir(alpha * 1_n)``, keyed by ``numpy_seed(seed, "lm/mixture", i)`` (each
    client's row alone, so a worker draws only its own clients').
"""

from __future__ import annotations

import numpy as np
import torch

from fedopt import rng


def task_topics(rank: int, n_topics: int, per_client: int, seed: int) -> np.ndarray:
    """Sorted positions (``0..n_topics-1``) of the training topics client ``rank`` owns."""
    perm = np.random.default_rng(rng.numpy_seed(seed, "lm/assign")).permutation(n_topics)
    own = perm[(rank * per_client + np.arange(min(per_client, n_topics))) % n_topics]
    return np.sort(own)


def task_weights(ranks: np.ndarray, windows: np.ndarray, per_client: int, seed: int) -> np.ndarray:
    """``float64 [k, n]``: client ``ranks[r]``'s weights over the topics (task split),
    proportional to the window counts ``windows [n]`` of the topics it owns."""
    n = len(windows)
    out = np.zeros((len(ranks), n), dtype=np.float64)
    for r, rank in enumerate(ranks.tolist()):
        own = task_topics(rank, n, per_client, seed)
        out[r, own] = windows[own]
        out[r] /= out[r].sum()
    return out


def dirichlet_weights(ranks: np.ndarray, n_topics: int, alpha: float, seed: int) -> np.ndarray:
    """``float64 [k, n]``: row ``r`` is ``Dir(alpha * 1)`` keyed by ``("lm/mixture", ranks[r])``."""
    out = np.empty((len(ranks), n_topics), dtype=np.float64)
    for r, rank in enumerate(ranks.tolist()):
        g = np.random.default_rng(rng.numpy_seed(seed, "lm/mixture", int(rank)))
        out[r] = g.dirichlet(np.full(n_topics, alpha))
    return out


class WindowSampler:
    """Keyed windows of ``seq_len + 1`` bytes from per-row topic distributions.

    Parameters
    ----------
    texts
        The training topics' bytes (``uint8`` arrays, each at least ``seq_len + 1`` long).
    seq_len
        Tokens per sequence.
    """

    def __init__(self, texts: list[np.ndarray], seq_len: int, device: torch.device) -> None:
        self.seq_len = seq_len
        lengths = np.array([len(t) for t in texts], dtype=np.int64)
        self.windows = lengths - seq_len  # start positions per topic (>= 1)
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]])).to(device)
        self.flat = torch.from_numpy(np.concatenate(texts)).to(device=device, dtype=torch.int64)
        self.starts = torch.from_numpy(self.windows).to(device)
        self._span = torch.arange(seq_len + 1, device=device)

    def sample(self, cdf: torch.Tensor, keys: torch.Tensor, count: int) -> torch.Tensor:
        """``int64 [k, count, seq_len + 1]`` windows: row ``r`` from the topic distribution
        with cumulative weights ``cdf[r]`` (``float64 [k, n]``), keyed by ``keys[r]``.

        Each window uses two uniforms of the key's stream: ``u_1`` picks the topic
        (inverse CDF: the first ``j`` with ``cdf_j > u_1 cdf_n``, so topics of weight 0
        are never picked) and ``u_2`` the start ``floor(u_2 (len_j - seq_len))``.
        """
        u = rng.uniform(keys, 2 * count, torch.float64)
        total = cdf[:, -1:]
        topic = torch.searchsorted(cdf, u[:, :count] * total, right=True)
        topic = topic.clamp_(max=cdf.shape[1] - 1)
        start = (u[:, count:] * self.starts[topic].double()).floor().long()
        first = self.offsets[topic] + start
        return self.flat[first.unsqueeze(-1) + self._span]
