"""The run directory: written in a temporary sibling and renamed into place at the end.

Layout::

    RUN_DIR/
      .fedopt-run        marker: fedopt wrote this folder (version, time, name, its files)
      config.yaml        resolved experiment (every default filled in, inputs by copy)
      inputs/            copies of plug-in files and graph files the experiment names
      env.json           versions, git SHA, seed, threads, device, command line, inputs
      metrics.jsonl      one JSON record per evaluation
      comm_nodes.csv     per node: role, sent/received messages and bytes
      comm_edges.csv     per directed edge that carried traffic: messages, bytes (gRPC:
                         the edge's workers, and gRPC and wire bytes when links are edges)
      comm_links.csv     engine.transport grpc: per worker pair, logical, gRPC frame and
                         wire bytes side by side (fedopt.transport.report)
      summary.json       final figures and totals
      final_model.npy    the average output model x_bar
      final_params.npy   every reported node's final parameters (when small enough)
      final_ids.npy      node ids of the rows of final_params.npy

A failed or interrupted run leaves nothing behind: the temporary folder is removed. fedopt
replaces only a folder that carries its marker (and nothing else the user put there), and
never the working directory, a folder holding the experiment or its inputs, the home
directory or ``/``. Every JSON file is strict JSON: non-finite numbers are written as
``null``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from fedopt.errors import ConfigError

MARKER = ".fedopt-run"
"""Name of the marker file fedopt writes into every run directory it creates."""

REPORT_FILES = ("report.png",)
"""Files ``fedopt report`` may add to a run directory (fedopt's own, so replaceable)."""


def params_digest(ids: torch.Tensor, params: torch.Tensor) -> str:
    """SHA-256 over the per-node SHA-256 of each row, in node-id order (placement-free)."""
    h = hashlib.sha256()
    order = torch.argsort(ids)
    arr = params[order].detach().cpu().contiguous().numpy()
    for row in arr:
        h.update(hashlib.sha256(row.tobytes()).digest())
    return h.hexdigest()


# ------------------------------------------------------------------------ strict JSON


def strict_json(data: Any) -> Any:
    """A copy of ``data`` in which every NaN or infinite float is ``None``.

    Parameters
    ----------
    data
        Nested dicts, lists, tuples and scalars (numpy scalars included).

    Returns
    -------
    Any
        The same structure, safe for ``json.dumps(..., allow_nan=False)``.
    """
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json(v) for v in data]
    if isinstance(data, np.generic):
        data = data.item()
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def dumps_strict(data: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict_json` ``(data)``, refusing NaN (``allow_nan=False``)."""
    return json.dumps(strict_json(data), allow_nan=False, **kwargs)


# ------------------------------------------------------------------ what may be replaced


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a run directory, or ``None`` when ``folder`` carries none."""
    path = Path(folder) / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def foreign_files(folder: Path, marker: dict[str, Any]) -> list[str]:
    """Files (and links) under ``folder`` that its marker does not list as fedopt's own."""
    allowed = {*marker.get("files", []), MARKER, *REPORT_FILES}
    extra: list[str] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        rel_root = Path(root).relative_to(folder)
        links = [d for d in dirs if (Path(root) / d).is_symlink()]
        for name in [*files, *links]:
            rel = (rel_root / name).as_posix()
            if rel not in allowed:
                extra.append(rel)
    return sorted(extra)


def protected_paths(
    base_dir: Path | None = None, inputs: Iterable[Path] = ()
) -> list[tuple[Path, str]]:
    """Paths a run directory must never be, nor contain: ``[(resolved path, description)]``.

    Parameters
    ----------
    base_dir
        The experiment file's folder.
    inputs
        Plug-in and graph files the experiment reads.
    """
    out = [(Path.cwd().resolve(), "the working directory")]
    if base_dir is not None:
        out.append((Path(base_dir).resolve(), "the experiment file's folder"))
    out.extend((Path(p).resolve(), f"the input file {str(p)!r}") for p in inputs)
    out.append((Path.home().resolve(), "your home directory"))
    out.append((Path(Path.cwd().anchor or "/").resolve(), "the root directory"))
    return out


def _names(entries: list[str], limit: int = 5) -> str:
    shown = ", ".join(entries[:limit])
    return shown + (f", ... ({len(entries)} in all)" if len(entries) > limit else "")


def check_output_dir(
    target: Path, overwrite: bool, protected: Iterable[tuple[Path, str]] = ()
) -> None:
    """Refuse a run directory that would destroy anything fedopt did not write.

    A missing folder or an empty one is fine. An existing folder is replaced only with
    ``overwrite``, only when it carries fedopt's marker and holds nothing but fedopt's
    files, and never when it is (or contains) one of ``protected``. A file or a symbolic
    link is always refused.

    Parameters
    ----------
    target
        The run directory asked for.
    overwrite
        Whether the user allowed replacing a previous run.
    protected
        ``(resolved path, description)`` pairs, see :func:`protected_paths`.

    Raises
    ------
    ConfigError
        Naming the path, what is there, and what to do.
    """
    target = Path(target)
    shown = repr(str(target))
    fix = "choose another --out, or remove it yourself"
    if target.is_symlink():
        raise ConfigError(
            f"output.dir: {shown} is a symbolic link; fedopt neither writes through nor "
            f"replaces links: {fix}"
        )
    if not target.exists():
        for up in target.absolute().parents:
            if up.exists():
                if not up.is_dir():
                    raise ConfigError(
                        f"output.dir: {shown} cannot be created: {str(up)!r} is a file, "
                        "not a folder; choose another --out"
                    )
                break
        return
    if not target.is_dir():
        raise ConfigError(
            f"output.dir: {shown} is an existing file, not a run directory; fedopt never "
            f"replaces it: {fix}"
        )
    resolved = target.resolve()
    for path, what in protected:
        if resolved == path or resolved in path.parents:
            relation = "is" if resolved == path else "contains"
            raise ConfigError(
                f"output.dir: {shown} {relation} {what}; fedopt never replaces such a "
                "folder, even with --overwrite: choose another --out (e.g. runs/NAME)"
            )
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return  # an empty folder holds no data
    marker = read_marker(target)
    if marker is None:
        raise ConfigError(
            f"output.dir: {shown} exists and was not written by fedopt (no {MARKER} marker; "
            f"it holds {_names(entries)}); fedopt never deletes what it did not write, even "
            f"with --overwrite: {fix}"
        )
    if not overwrite:
        raise ConfigError(
            f"output.dir: {shown} already exists (a previous run); pass --overwrite "
            "(output.overwrite: true) to replace it, or choose another --out"
        )
    extra = foreign_files(target, marker)
    if extra:
        raise ConfigError(
            f"output.dir: {shown} is a previous run but also holds files fedopt did not "
            f"write ({_names(extra)}); move them out first, or choose another --out"
        )


def _dir_mode() -> int:
    """``0o777`` less the process umask: the mode ``mkdir`` would give a new folder."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o777 & ~mask


# ------------------------------------------------------------------------ the directory


class RunDirectory:
    """Creates a run directory atomically.

    Parameters
    ----------
    target
        Final path of the run directory.
    overwrite
        Replace ``target`` if it is a previous run; otherwise an existing ``target`` is
        an error, raised before anything runs (see :func:`check_output_dir`).
    protected
        Paths that ``target`` must neither be nor contain, see :func:`protected_paths`.
    name
        The experiment's name, recorded in the marker.
    """

    def __init__(
        self,
        target: Path,
        overwrite: bool,
        protected: Iterable[tuple[Path, str]] = (),
        name: str | None = None,
    ) -> None:
        from fedopt import __version__

        self.target = Path(target)
        self.overwrite = overwrite
        self.protected = list(protected)
        check_output_dir(self.target, overwrite, self.protected)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(
            tempfile.mkdtemp(prefix=f".{self.target.name}.partial-", dir=self.target.parent)
        )
        self.marker: dict[str, Any] = {
            "fedopt_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "name": name if name is not None else self.target.name,
        }
        (self.tmp / MARKER).write_text(json.dumps(self.marker, indent=2) + "\n")
        self._metrics = (self.tmp / "metrics.jsonl").open("w")

    def write_json(self, name: str, data: Any) -> None:
        """Write ``data`` as indented strict JSON (non-finite numbers become ``null``)."""
        (self.tmp / name).write_text(dumps_strict(data, indent=2, sort_keys=True) + "\n")

    def write_yaml(self, name: str, data: Any) -> None:
        """Write ``data`` as YAML (key order kept)."""
        (self.tmp / name).write_text(yaml.safe_dump(data, sort_keys=False))

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write ``data`` to the relative path ``name`` (folders created as needed)."""
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def append_metric(self, record: dict[str, Any]) -> None:
        """Append one evaluation record to metrics.jsonl (strict JSON)."""
        self._metrics.write(dumps_strict(record) + "\n")
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

    def _seal(self) -> None:
        """List every file in the marker and give the folder ordinary permissions."""
        files = sorted(
            p.relative_to(self.tmp).as_posix()
            for p in self.tmp.rglob("*")
            if p.name != MARKER and (p.is_file() or p.is_symlink())
        )
        marker = {**self.marker, "files": files}
        (self.tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        os.chmod(self.tmp, _dir_mode())  # mkdtemp made it 0700

    def commit(self) -> Path:
        """Move the finished directory into place, replacing a previous run if allowed.

        The target is checked again first (files may have appeared since the start). If
        the final rename fails, the previous run is put back where it was.
        """
        self._metrics.close()
        self._seal()
        return _move_into_place(self.tmp, self.target, self.overwrite, self.protected)

    def abort(self) -> None:
        """Remove the temporary directory (nothing half-written is left)."""
        self._metrics.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _move_into_place(
    tmp: Path, target: Path, overwrite: bool, protected: Iterable[tuple[Path, str]]
) -> Path:
    """Rename the finished folder ``tmp`` to ``target``, replacing a previous run if allowed.

    The target is checked again first (files may have appeared since the start). If the
    final rename fails, the previous run is put back where it was.
    """
    check_output_dir(target, overwrite, protected)
    old = None
    emptied = False
    if target.is_dir():
        if any(target.iterdir()):
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
        else:
            target.rmdir()
            emptied = True
    try:
        tmp.rename(target)
    except BaseException:
        if old is not None:
            old.rename(target)
        elif emptied:
            target.mkdir(exist_ok=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def install_run(
    target: Path,
    files: dict[str, bytes],
    overwrite: bool,
    protected: Iterable[tuple[Path, str]] = (),
) -> Path:
    """Write a run directory that was made elsewhere (a Ray worker's) from its files.

    Like :meth:`RunDirectory.commit`: the files go into a temporary sibling that is
    renamed into place, so an error or a signal leaves nothing half-written. ``files``
    must hold the run's marker (the run directory fedopt wrote on the other machine).

    Raises
    ------
    ConfigError
        When ``files`` is not a run directory, or ``target`` may not be used (see
        :func:`check_output_dir`).
    """
    target = Path(target)
    if MARKER not in files:
        raise ConfigError(f"{str(target)!r}: the files received are not a run directory")
    check_output_dir(target, overwrite, protected)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        for rel, data in files.items():
            path = (tmp / rel).resolve()
            if tmp.resolve() not in path.parents:
                raise ConfigError(f"{str(target)!r}: the received file {rel!r} is outside it")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        os.chmod(tmp, _dir_mode())
        return _move_into_place(tmp, target, overwrite, protected)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
