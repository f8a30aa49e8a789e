"""The oracle of some nodes, called with global node ids (the event schedule's oracle).

An event worker builds the oracle of the nodes it needs only: the nodes it hosts, and,
for algorithms whose edge events call the oracle at both endpoints
(``EventAlgorithm.edge_oracles``), their graph neighbours. Event algorithms keep node
state by global id and call the oracle with global ids; :class:`NodeOracle` maps them to
the oracle's rows (node ``i``'s row is its position among the built nodes). On a worker
that hosts every node the map is the identity and every call goes straight through, so
the local engine's calls are the ones it always made.
"""

from __future__ import annotations

import torch

from fedopt.errors import EngineError
from fedopt.problems.base import Oracle, Step


class NodeOracle:
    """``oracle`` (built for the data ranks ``nodes``) addressed by global node id.

    Event schedules have no server and no Byzantine nodes, so a node's data rank is its
    id.

    Parameters
    ----------
    oracle
        The problem's oracle of ``nodes`` (in that order).
    nodes
        ``[m]`` int64 sorted global ids whose data ``oracle`` holds.
    num_nodes
        Number of nodes of the run.
    """

    def __init__(self, oracle: Oracle, nodes: torch.Tensor, num_nodes: int) -> None:
        self.oracle = oracle
        self.nodes = nodes.to(torch.int64)
        self.num_nodes = num_nodes
        self.whole = len(self.nodes) == num_nodes
        self._row = torch.full((num_nodes,), -1, dtype=torch.int64)
        self._row[self.nodes] = torch.arange(len(self.nodes))

    @property
    def dim(self) -> int:
        return self.oracle.dim

    @property
    def dtype(self) -> torch.dtype:
        return self.oracle.dtype

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The oracle rows of the nodes ``ids``; EngineError for a node not built here."""
        if self.whole:
            return ids
        rows = self._row[ids]
        if len(rows) and int(rows.min()) < 0:
            missing = int(ids[rows < 0][0])
            raise EngineError(
                f"event worker: the oracle of node {missing} is not on this worker (it builds "
                "its hosted nodes' only); an algorithm whose edge events call the oracle at "
                "both endpoints sets EventAlgorithm.edge_oracles = True"
            )
        return rows

    def initial_rows(self) -> torch.Tensor:
        """``[n, dim]`` initial parameters at the built nodes' ids, zero rows elsewhere."""
        if self.whole:
            return self.oracle.init_params(torch.arange(self.num_nodes))
        local = torch.arange(len(self.nodes))
        x0 = self.oracle.init_params(local)
        out = torch.zeros((self.num_nodes, x0.shape[1]), dtype=x0.dtype)
        out[self.nodes] = x0
        return out

    def init_params(self, ids: torch.Tensor) -> torch.Tensor:
        return self.oracle.init_params(self.rows(ids))

    def grad(self, X: torch.Tensor, ids: torch.Tensor, step: Step) -> torch.Tensor:
        return self.oracle.grad(X, self.rows(ids), step)

    def full_grad(self, X: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.oracle.full_grad(X, self.rows(ids))

    def value(self, X: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.oracle.value(X, self.rows(ids))

    def conjugate_grad(self, Y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``grad f_i*(y)`` (capability ``conjugate_gradients``)."""
        return self.oracle.conjugate_grad(Y, self.rows(ids))  # type: ignore[attr-defined]

    def query(
        self, X: torch.Tensor, ids: torch.Tensor, step: Step, noise_std: float
    ) -> torch.Tensor:
        """Counted noisy ``f_i(x) + noise`` (capability ``noisy_queries``)."""
        return self.oracle.query(X, self.rows(ids), step, noise_std)  # type: ignore[attr-defined]
