"""Asynchronous randomized gossip SGD on Poisson clocks (the plain baseline).

Gradient event at node i: ``x_i <- x_i - lr * g_i(x_i)`` (minibatch gradient keyed by the
event's global index, or the full gradient). Gossip event on edge (i, j):
``x_i, x_j <- (x_i + x_j) / 2`` (randomized gossip, Boyd, Ghosh, Prabhakar & Shah, IEEE
Trans. Inf. Theory 2006; with local steps as in asynchronous decentralized SGD, Lian et
al., ICML 2018). Each gossip event sends ``x`` both ways: two messages of ``dim`` floats.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class GossipNodes:
    """State ``S [n, 1, dim]`` (float64) of asynchronous gossip SGD nodes."""

    def __init__(self, x0: torch.Tensor, lr: float) -> None:
        self.lr = lr
        self.S = x0.to(torch.float64).unsqueeze(1).clone()
        self.t = torch.zeros(len(x0), dtype=torch.float64)

    def apply(
        self,
        grad_nodes: torch.Tensor,
        grad_times: torch.Tensor,
        edge_i: torch.Tensor,
        edge_j: torch.Tensor,
        edge_times: torch.Tensor,
        grad: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        """Apply a batch of events on pairwise-distinct nodes (no dynamics between events)."""
        if len(grad_nodes):
            x = self.S[grad_nodes, 0]
            self.S[grad_nodes, 0] = x - self.lr * grad(grad_nodes, x).to(torch.float64)
            self.t[grad_nodes] = grad_times
        if len(edge_i):
            avg = 0.5 * (self.S[edge_i, 0] + self.S[edge_j, 0])
            self.S[edge_i, 0] = avg
            self.S[edge_j, 0] = avg
            self.t[edge_i] = edge_times
            self.t[edge_j] = edge_times

    @property
    def x(self) -> torch.Tensor:
        """Primal iterates ``[n, dim]``."""
        return self.S[:, 0]

    def x_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Primal iterates of the nodes ``ids``: ``[len(ids), dim]``."""
        return self.S[ids, 0]
