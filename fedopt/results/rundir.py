"""The run directory: written in a temporary sibling and renamed into place at the end.

Layout::

    RUN_DIR/
      config.yaml        resolved experiment (every default filled in)
      env.json           versions, git SHA, seed, threads, device, command line
      metrics.jsonl      one JSON record per evaluation
      comm_nodes.csv     per node: role, sent/received messages and bytes
      comm_edges.csv     per directed edge that carried traffic: messages, bytes
      summary.json       final figures and totals
      final_model.npy    the average output model x_bar
      final_params.npy   every reported node's final parameters (when small enough)
      final_ids.npy      node ids of the rows of final_params.npy

A failed or interrupted run leaves nothing behind: the temporary folder is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from fedopt.errors import ConfigError


def params_digest(ids: torch.Tensor, params: torch.Tensor) -> str:
    """SHA-256 over the per-node SHA-256 of each row, in node-id order (placement-free)."""
    h = hashlib.sha256()
    order = torch.argsort(ids)
    arr = params[order].detach().cpu().contiguous().numpy()
    for row in arr:
        h.update(hashlib.sha256(row.tobytes()).digest())
    return h.hexdigest()


class RunDirectory:
    """Creates a run directory atomically.

    Parameters
    ----------
    target
        Final path of the run directory.
    overwrite
        Replace ``target`` if it exists; otherwise an existing ``target`` is an error,
        raised before anything runs.
    """

    def __init__(self, target: Path, overwrite: bool) -> None:
        self.target = Path(target)
        if self.target.exists() and not overwrite:
            raise ConfigError(
                f"output.dir: {str(self.target)!r} already exists; pass --overwrite "
                "(output.overwrite: true) to replace it, or choose another --out"
            )
        self.overwrite = overwrite
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(
            tempfile.mkdtemp(prefix=f".{self.target.name}.partial-", dir=self.target.parent)
        )
        self._metrics = (self.tmp / "metrics.jsonl").open("w")

    def write_json(self, name: str, data: Any) -> None:
        """Write ``data`` as indented JSON."""
        (self.tmp / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def write_yaml(self, name: str, data: Any) -> None:
        """Write ``data`` as YAML (key order kept)."""
        (self.tmp / name).write_text(yaml.safe_dump(data, sort_keys=False))

    def append_metric(self, record: dict[str, Any]) -> None:
        """Append one evaluation record to metrics.jsonl."""
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def reset_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl by ``records`` (after restoring a checkpoint)."""
        self._metrics.close()
        self._metrics = (self.tmp / "metrics.jsonl").open("w")
        for rec in records:
            self.append_metric(rec)

    def write_csv(self, name: str, header: list[str], columns: list[np.ndarray]) -> None:
        """Write equal-length columns as CSV."""
        with (self.tmp / name).open("w") as f:
            f.write(",".join(header) + "\n")
            for row in zip(*columns, strict=True):
                f.write(",".join(str(v) for v in row) + "\n")

    def save_array(self, name: str, array: torch.Tensor | np.ndarray) -> None:
        """Save an array as .npy."""
        arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else array
        np.save(self.tmp / name, arr)

    def commit(self) -> Path:
        """Move the finished directory into place (replacing an old one if allowed)."""
        self._metrics.close()
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            self.target.rename(old)
        self.tmp.rename(self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def abort(self) -> None:
        """Remove the temporary directory (nothing half-written is left)."""
        self._metrics.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
