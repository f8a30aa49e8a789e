"""The files an experiment reads, copied into its run directory so the run re-runs as is.

An experiment may name plug-in files (``plugins:``), a plug-in topology
(``topology.name: path/file.py:function``) or a graph file (``topology.name:
file.edgelist``). Each is copied to ``RUN_DIR/inputs/`` and the saved ``config.yaml``
names the copy by a path relative to the run directory. Relative paths in an experiment
resolve against the experiment file's folder first, so ``fedopt run RUN_DIR/config.yaml``
works from any working directory. ``env.json`` keeps each input's original absolute path
and SHA-256.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedopt.config.schema import ExperimentConfig

INPUTS_DIR = "inputs"
"""Folder of the run directory that holds the copies."""


@dataclass(frozen=True)
class InputFile:
    """One file an experiment reads.

    Attributes
    ----------
    field
        Where the experiment names it: ``"plugins[0]"`` or ``"topology.name"``.
    given
        The path as written in the experiment.
    path
        The resolved absolute path that was read.
    copy
        Path of the copy, relative to the run directory (``inputs/NAME``).
    suffix
        What follows the path in the field (``":function"`` for a topology plug-in).
    """

    field: str
    given: str
    path: Path
    copy: str
    suffix: str = ""

    @property
    def reference(self) -> str:
        """The value the saved config gives the field: the copy plus the suffix."""
        return self.copy + self.suffix


def collect_inputs(config: ExperimentConfig, base_dir: Path | None) -> list[InputFile]:
    """Resolve every file ``config`` reads, as the compiler will, and name its copy.

    Parameters
    ----------
    config
        The validated experiment.
    base_dir
        The experiment file's folder (relative paths resolve there first).

    Raises
    ------
    ConfigError
        When a named file does not exist (the message lists where it was looked for).
    """
    from fedopt.plugins import find_plugin
    from fedopt.topology.custom import GRAPH_EXTS, find_file, split_plugin

    found: list[tuple[str, str, Path, str]] = []
    for i, raw in enumerate(config.plugins):
        found.append((f"plugins[{i}]", raw, find_plugin(raw, base_dir), ""))
    name = config.topology.name
    parts = split_plugin(name)
    if parts is not None:
        path = find_file(parts[0], base_dir, what="plug-in file")
        found.append(("topology.name", name, path, ":" + parts[1]))
    elif name.endswith(GRAPH_EXTS):
        found.append(("topology.name", name, find_file(name, base_dir, what="graph file"), ""))

    copies: dict[Path, str] = {}
    taken: set[str] = set()
    out: list[InputFile] = []
    for field, given, path, suffix in found:
        if path not in copies:
            stem, ext = path.stem, path.suffix
            candidate, k = path.name, 1
            while candidate in taken:
                k += 1
                candidate = f"{stem}_{k}{ext}"
            taken.add(candidate)
            copies[path] = f"{INPUTS_DIR}/{candidate}"
        out.append(InputFile(field, given, path, copies[path], suffix))
    return out


def portable_config(data: dict[str, Any], inputs: list[InputFile]) -> dict[str, Any]:
    """The experiment dict with every input renamed to its copy in the run directory."""
    out = copy.deepcopy(data)
    for item in inputs:
        if item.field == "topology.name":
            out["topology"]["name"] = item.reference
        else:
            index = int(item.field[len("plugins[") : -1])
            out["plugins"][index] = item.reference
    return out


def read_inputs(inputs: list[InputFile]) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """Read each input once: ``({copy: bytes}, records for env.json)``.

    The SHA-256 in a record is that of the bytes copied, so it matches the copy.
    """
    contents: dict[str, bytes] = {}
    records: list[dict[str, Any]] = []
    for item in inputs:
        if item.copy not in contents:
            contents[item.copy] = item.path.read_bytes()
        records.append(
            {
                "field": item.field,
                "given": item.given,
                "original": str(item.path),
                "copy": item.copy,
                "sha256": hashlib.sha256(contents[item.copy]).hexdigest(),
            }
        )
    return contents, records
