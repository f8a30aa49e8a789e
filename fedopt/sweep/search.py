"""The halving search of one grid point: try step sizes largest first until one is stable.

The steps of :class:`~fedopt.sweep.spec.Halving` (``start * factor**k``) are tried in
turn; a step is kept when its runs are stable (:mod:`fedopt.sweep.stability`). With
``decide: all`` every seed runs at a step and all must be stable; with ``decide:
first`` the first seed decides, and the other seeds then run at the chosen step only.
The search ends ``found`` (``chosen`` is the step's index), ``exhausted`` (no step was
stable: the point takes no part in the selection) or ``failed`` (a run failed: the
search cannot decide; its error is in the manifest).
"""

from __future__ import annotations

from typing import Any

from fedopt.sweep.expand import Prepared
from fedopt.sweep.spec import Halving
from fedopt.sweep.stability import Verdict


class StepSearch:
    """The search of one point.

    Parameters
    ----------
    name
        The point's name (the cell names without step and seed).
    steps
        Per step index, the cells of that step (one per seed, in seed order).
    halving
        The rule.
    """

    def __init__(self, name: str, steps: list[list[Prepared]], halving: Halving) -> None:
        self.name = name
        self.steps = steps
        self.halving = halving
        self.k = 0
        self.chosen: int | None = None
        self.status = "running"
        self.verdicts: dict[str, Verdict | None] = {}

    def _deciding(self) -> list[Prepared]:
        cells = self.steps[self.k]
        return cells if self.halving.decide == "all" else cells[:1]

    def wanted(self) -> list[Prepared]:
        """The cells whose results the search needs now (none once it has ended)."""
        if self.status != "running":
            return []
        cells = self.steps[self.chosen] if self.chosen is not None else self._deciding()
        return [p for p in cells if p.cell.name not in self.verdicts]

    def record(self, name: str, verdict: Verdict | None) -> None:
        """Take one cell's verdict (``None``: the run failed) and move the search on."""
        self.verdicts[name] = verdict
        if self.chosen is not None:
            if not self.wanted():
                self.status = "found"
            return
        cells = self._deciding()
        if any(p.cell.name not in self.verdicts for p in cells):
            return
        got = [self.verdicts[p.cell.name] for p in cells]
        if any(v is None for v in got):
            self.status = "failed"
        elif all(v is not None and v.stable for v in got):
            self.chosen = self.k
            if not self.wanted():
                self.status = "found"
        else:
            self.k += 1
            if self.k >= len(self.steps):
                self.status = "exhausted"

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the search: every step tried and its verdicts."""
        tried = []
        last = self.chosen if self.chosen is not None else min(self.k, len(self.steps) - 1)
        for k in range(last + 1):
            runs = {
                p.cell.name: (None if v is None else {"stable": v.stable, "reason": v.reason})
                for p in self.steps[k]
                if (v := self.verdicts.get(p.cell.name, ...)) is not ...
            }
            if runs:
                tried.append({"step": self.steps[k][0].cell.step, "runs": runs})
        chosen = self.steps[self.chosen][0].cell.step if self.chosen is not None else None
        return {
            "key": self.halving.key,
            "status": self.status,
            "chosen": chosen,
            "chosen_point": self.steps[self.chosen][0].cell.point
            if self.chosen is not None
            else None,
            "tried": tried,
        }
