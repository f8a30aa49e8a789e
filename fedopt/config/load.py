"""Load an experiment: YAML -> dict -> ``--set`` overrides -> validated config.

Validation errors are rewritten as one line per problem::

    algorithm.lr: Input should be greater than 0 (got -0.1)
    topology.nn: unknown key 'nn'. Did you mean 'n'? Allowed keys: name, n, params, ...
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fedopt.algorithms.base import ALGORITHMS
from fedopt.config.schema import ExperimentConfig
from fedopt.errors import ConfigError, closest
from fedopt.plugins import load_plugins
from fedopt.problems import PROBLEMS

_SECTION_REGISTRIES = {"algorithm": ALGORITHMS, "problem": PROBLEMS}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read an experiment file into a dict (clear errors for missing or malformed files)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"experiment file {str(p)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: the top level must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a copy of ``data``."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. algorithm.lr=0.05")
        key, raw = item.split("=", 1)
        parts = [k for k in key.strip().split(".") if k]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {item!r}: {where} is a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _model_at(
    loc: tuple[Any, ...], data: dict[str, Any], root: type[BaseModel]
) -> type[BaseModel] | None:
    """The pydantic model that owns the field at ``loc[:-1]`` (for key suggestions)."""
    model: type[BaseModel] | None = root
    raw: Any = data
    for part in loc[:-1]:
        if model is None:
            return None
        raw = raw.get(part) if isinstance(raw, dict) else None
        if part in _SECTION_REGISTRIES and model is ExperimentConfig:
            name = raw.get("name") if isinstance(raw, dict) else None
            reg = _SECTION_REGISTRIES[part]
            model = reg.get(name).Config if name in reg else None
            continue
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        model = next(
            (
                a
                for a in getattr(ann, "__args__", (ann,))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
    return model


def format_validation_error(
    exc: ValidationError,
    data: dict[str, Any],
    root: type[BaseModel] = ExperimentConfig,
    prefix: str = "",
) -> str:
    """One readable line per error: field path, message, offending value, fix.

    ``root`` is the model that validated ``data``; ``prefix`` is its dotted path in
    the experiment (``"algorithm"`` for an algorithm's own model).
    """
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join([prefix, *(str(p) for p in loc)] if prefix else [str(p) for p in loc])
        path = path or "(top level)"
        if err["type"] == "extra_forbidden":
            model = _model_at(loc, data, root)
            allowed = sorted(model.model_fields) if model else []
            hint = closest(str(loc[-1]), allowed)
            dym = f" Did you mean {hint!r}?" if hint else ""
            lines.append(
                f"{path}: unknown key {loc[-1]!r}.{dym} Allowed keys: {', '.join(allowed)}."
            )
            continue
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if isinstance(value, dict) or err["type"] == "missing" else f" (got {value!r})"
        lines.append(f"{path}: {msg}{shown}")
    return "\n".join(lines)


def _section_errors(data: dict[str, Any]) -> list[str]:
    """Validate the algorithm and problem sections with their own models first."""
    problems: list[str] = []
    for section, reg in _SECTION_REGISTRIES.items():
        raw = data.get(section)
        if raw is None:
            problems.append(
                f"{section}: required section is missing (add {section}: {{name: ...}})"
            )
            continue
        if not isinstance(raw, dict) or "name" not in raw:
            problems.append(f"{section}.name: required; known: {', '.join(reg)}")
            continue
        try:
            entry = reg.get(raw["name"])
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        try:
            entry.Config.model_validate(raw)
        except ValidationError as exc:
            sub = format_validation_error(exc, raw, root=entry.Config, prefix=section)
            problems.extend(sub.splitlines())
    return problems


def validate(data: dict[str, Any], base_dir: Path | None = None) -> ExperimentConfig:
    """Validate a raw experiment dict, raising one ConfigError listing every problem.

    Plug-in files listed under ``plugins`` are imported first (relative to
    ``base_dir``), so the names they register validate.
    """
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"plugins: expected a list of Python file paths, got {plugins!r}")
    load_plugins(plugins, base_dir)
    problems = _section_errors(data)
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        rest = [
            line
            for line in format_validation_error(exc, data).splitlines()
            if not line.startswith(("algorithm", "problem"))
        ]
        problems.extend(rest)
        cfg = None
    except ConfigError as exc:  # raised by a registry lookup inside a validator
        if str(exc) not in problems:
            problems.append(str(exc))
        cfg = None
    if problems:
        raise ConfigError("invalid experiment:\n  " + "\n  ".join(problems))
    assert cfg is not None
    return cfg


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate an experiment file."""
    return validate(apply_overrides(read_yaml(path), overrides or []), Path(path).resolve().parent)
