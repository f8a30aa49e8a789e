"""The sweep directory and its manifest, ``sweep.json``.

Layout::

    SWEEP_DIR/
      sweep.json          the manifest: the sweep's name and source, its axes, and per
                          cell its status, config hash, time, host and error
      <cell name>/        one run directory per cell, as ``fedopt run`` writes it
                          (``lsq_cycle/dadao/``, ``lr=0.1/seed0/``)
      table.csv, table.md, selection.*, halving.md, *.png    written by sweep-report
      .fedopt-report      the report files fedopt wrote (so it replaces only those)

The manifest is rewritten atomically (a temporary file renamed over it), so it is always
whole. It is a record, not the truth: a cell counts as done when its run directory is
complete and its ``config.yaml`` hashes to the cell's config (what was written by an
interrupted sweep, or by ``fedopt run`` itself, counts too).

A folder is used as a sweep directory only when it is new, empty, or holds the manifest
of a sweep with the same name. Inside it fedopt writes only its own files: a cell folder
that holds anything fedopt did not write is refused before anything runs, and a
finished cell whose config changed is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from fedopt.errors import ConfigError
from fedopt.results.rundir import MARKER, foreign_files, read_marker
from fedopt.sweep.expand import Prepared, saved_digest

MANIFEST = "sweep.json"
"""The manifest's file name."""

LOCK = ".sweep.lock"
"""Held (``flock``) by the one ``fedopt sweep`` running in a sweep directory."""

FORMAT = 1
"""Version of the manifest's layout."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of ``folder``, or None when there is none.

    Raises
    ------
    ConfigError
        When ``sweep.json`` exists but is not a fedopt sweep manifest.
    """
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{str(path)!r} is not a readable sweep manifest ({exc}); fedopt does not replace "
            "it: choose another --out, or remove it yourself"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "sweep" not in data:
        raise ConfigError(
            f"{str(path)!r} is not a fedopt sweep manifest (format {FORMAT}); fedopt does not "
            "replace it: choose another --out, or remove it yourself"
        )
    return data


def check_sweep_dir(
    folder: Path, name: str, protected: list[tuple[Path, str]]
) -> dict[str, Any] | None:
    """Refuse a sweep directory fedopt may not use; return its manifest (None when new).

    Raises
    ------
    ConfigError
        For a link, a file, a protected folder (the working directory, the sweep or
        experiment files' folder, home, ``/``, or one above them), a non-empty folder
        without a manifest, and a folder holding another sweep.
    """
    shown = repr(str(folder))
    fix = "choose another --out"
    if folder.is_symlink():
        raise ConfigError(f"--out {shown} is a symbolic link; fedopt does not write through links")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {shown} is a file, not a folder; {fix}")
    resolved = folder.resolve()
    for path, what in protected:
        if resolved == path or resolved in path.parents:
            relation = "is" if resolved == path else "contains"
            raise ConfigError(
                f"--out {shown} {relation} {what}; a sweep writes one folder per cell into "
                f"its directory: {fix} (e.g. runs/{name})"
            )
    if not folder.exists():
        return None
    manifest = read_manifest(folder)
    if manifest is None:
        entries = sorted(
            p.name
            for p in folder.iterdir()
            if p.name != LOCK and not p.name.startswith(f".{MANIFEST}.tmp-")
        )
        if entries:
            shown_entries = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ConfigError(
                f"--out {shown} exists and is not a sweep directory (no {MANIFEST}; it holds "
                f"{shown_entries}); fedopt never writes into a folder it did not make: {fix}"
            )
        return None
    if manifest.get("sweep") != name:
        src = manifest.get("source") or "?"
        raise ConfigError(
            f"--out {shown} holds a different sweep, {manifest.get('sweep')!r} (from {src}), "
            f"not {name!r}; {fix} (e.g. runs/{name}), or give this sweep that name"
        )
    return manifest


# ----------------------------------------------------------------------------- cells on disk


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def config_changes(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> str:
    """``a.b: 1 -> 2; c: x -> (absent)`` for the first keys that differ (``output`` aside)."""
    a = _flatten({k: v for k, v in old.items() if k != "output"})
    b = _flatten({k: v for k, v in new.items() if k != "output"})
    keys = [k for k in sorted(a.keys() | b.keys()) if a.get(k, ...) != b.get(k, ...)]

    def show(d: dict[str, Any], k: str) -> str:
        return repr(d[k]) if k in d else "(absent)"

    parts = [f"{k}: {show(a, k)} -> {show(b, k)}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"... ({len(keys)} keys in all)")
    return "; ".join(parts) or "(the files differ)"


def cell_state(folder: Path, prep: Prepared) -> tuple[str, str]:
    """What the cell's folder holds: ``(state, detail)``.

    States: ``new`` (absent or empty), ``complete`` / ``diverged`` (a finished run of
    this very config), ``changed`` (a finished run of another config; detail: the keys),
    ``foreign`` (something fedopt did not write, or a run holding files it did not
    write; detail: what).
    """
    path = folder / prep.cell.name
    for up in reversed(Path(prep.cell.name).parents):
        if str(up) in ("", "."):
            continue
        parent = folder / up
        if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
            return "foreign", f"{str(parent)!r} is a link or a file"
        if read_marker(parent) is not None:
            return "foreign", f"{str(parent)!r} is a run directory, not a folder of cells"
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        return "foreign", f"{str(path)!r} is a link or a file"
    if not path.exists() or not any(path.iterdir()):
        return "new", ""
    marker = read_marker(path)
    if marker is None:
        return "foreign", f"{str(path)!r} exists and was not written by fedopt (no {MARKER})"
    extra = foreign_files(path, marker)
    if extra:
        return "foreign", f"{str(path)!r} holds files fedopt did not write ({', '.join(extra[:3])})"
    try:
        saved = yaml.safe_load((path / "config.yaml").read_text())
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return "changed", "its config.yaml or summary.json is missing or unreadable"
    if not isinstance(saved, dict) or saved_digest(saved) != prep.digest:
        return "changed", config_changes(saved if isinstance(saved, dict) else {}, prep.saved)
    if isinstance(summary, dict) and summary.get("stop_reason") == "diverged":
        return "diverged", ""
    return "complete", ""


def remove_partials(cell_dir: Path) -> None:
    """Remove the hidden temporary folders a killed run left beside ``cell_dir``.

    Only folders named like :class:`~fedopt.results.rundir.RunDirectory`'s temporary
    ones (``.NAME.partial-*``) that carry fedopt's marker are removed.
    """
    parent = cell_dir.parent
    if not parent.is_dir():
        return
    for p in parent.glob(f".{cell_dir.name}.partial-*"):
        if p.is_dir() and not p.is_symlink() and (p / MARKER).is_file():
            shutil.rmtree(p, ignore_errors=True)


class Manifest:
    """``sweep.json``: kept in memory, written atomically at most every ``every_s``.

    Parameters
    ----------
    folder
        The sweep directory.
    data
        The manifest's content.
    every_s
        Least time between two writes (:meth:`save` with ``force`` writes at once).
    """

    def __init__(self, folder: Path, data: dict[str, Any], every_s: float = 0.5) -> None:
        self.folder = folder
        self.data = data
        self.every_s = every_s
        self._last = 0.0
        self._dirty = True

    @property
    def cells(self) -> dict[str, dict[str, Any]]:
        """Per cell name, its entry."""
        return self.data["cells"]

    def update(self, name: str, **fields: Any) -> None:
        """Change a cell's entry (written with the next :meth:`save`)."""
        self.cells[name].update(fields)
        self._dirty = True

    def save(self, force: bool = False) -> None:
        """Write the manifest if it changed and ``every_s`` passed (or ``force``)."""
        now = time.monotonic()
        if not self._dirty or (not force and now - self._last < self.every_s):
            return
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.folder / MANIFEST, self.data)
        self._last = now
        self._dirty = False


class SweepLock:
    """An exclusive lock on a sweep directory for as long as a sweep runs in it.

    A second ``fedopt sweep`` on the same directory is refused at once (instead of
    running the same cells twice). The lock is an ``flock`` on :data:`LOCK`, which the
    system releases when the process ends, however it ends.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd: int | None = None

    def __enter__(self) -> SweepLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on Windows
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"--out {str(self.folder)!r}: another fedopt sweep is running in this "
                f"directory (pid {other}); wait for it to end, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None
