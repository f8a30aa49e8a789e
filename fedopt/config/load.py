"""Load an experiment: YAML -> dict -> ``--set``/``--unset`` overrides -> validated config.

Validation errors are rewritten as one line per problem::

    algorithm.lr: Input should be greater than 0 (got -0.1)
    topology.nn: unknown key 'nn'. Did you mean 'n'? Allowed keys: name, n, params, ...

Experiment YAML is read with :class:`UniqueKeyLoader`, which refuses a key written twice
in one mapping (plain PyYAML keeps the last one silently).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fedopt.algorithms.base import ALGORITHMS
from fedopt.config.schema import ExperimentConfig
from fedopt.errors import ConfigError, closest
from fedopt.plugins import load_plugins
from fedopt.problems import PROBLEMS
from fedopt.validation import format_validation_error as _format

_SECTION_REGISTRIES = {"algorithm": ALGORITHMS, "problem": PROBLEMS}


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping in the YAML text has the same key twice (both lines in the message)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a mapping may not repeat a key.

    ``yaml.safe_load`` keeps the last of two equal keys without a word, so a second
    ``stop:`` section silently replaces the first. This loader raises
    :class:`DuplicateKeyError` naming the key and the lines of both occurrences.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Build a mapping, refusing a key that appears twice (merge keys ``<<`` aside)."""
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if first is not None:
                a, b = first.start_mark, key_node.start_mark
                where = (
                    f"line {a.line + 1}, columns {a.column + 1} and {b.column + 1}"
                    if a.line == b.line
                    else f"lines {a.line + 1} and {b.line + 1}"
                )
                raise DuplicateKeyError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping ({where}); keep one of them",
                    b,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, UniqueKeyLoader.construct_mapping
)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML ``text`` with :class:`UniqueKeyLoader`; errors name ``source`` and the line.

    Parameters
    ----------
    text
        The YAML document.
    source
        What the text is (a file path, ``--set 'a=b'``), used in error messages.

    Raises
    ------
    ConfigError
        On a syntax error or a duplicate key.
    """
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: safe
    except DuplicateKeyError as exc:
        raise ConfigError(f"{source}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{what} ({context})" if context else what
        raise ConfigError(
            f"{source}: not valid YAML:{where} {detail}; fix the syntax there"
        ) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read an experiment file into a dict.

    Raises
    ------
    ConfigError
        When the path is missing, a folder, unreadable, not UTF-8 text, empty, not valid
        YAML (duplicate keys included), or not a mapping of sections.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(
            f"experiment file {str(p)!r} is a folder, not a file; give the YAML file inside it"
        )
    if not p.is_file():
        what = "is not a regular file" if p.exists() else "does not exist"
        raise ConfigError(f"experiment file {str(p)!r} {what}; check the path")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"experiment file {str(p)!r} cannot be read ({exc.strerror or exc}); "
            "check its permissions"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"experiment file {str(p)!r} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
            f"offset {exc.start}); give a YAML text file"
        ) from None
    if not text.strip():
        raise ConfigError(
            f"experiment file {str(p)!r} is empty; write the sections (see "
            "experiments/quickstart.yaml)"
        )
    data = load_yaml_text(text, str(p))
    if data is None:
        raise ConfigError(
            f"experiment file {str(p)!r} holds only comments; write the sections (see "
            "experiments/quickstart.yaml)"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: the top level must be a mapping of sections (name:, topology:, ...), "
            f"got a {type(data).__name__}"
        )
    return data


def _note_to_stderr(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _split_key(item: str, key: str, flag: str) -> list[str]:
    parts = [k.strip() for k in key.strip().split(".")]
    if not key.strip() or any(not k for k in parts):
        raise ConfigError(
            f"{flag} {item!r}: {key.strip()!r} is not a dotted key; write e.g. algorithm.lr"
        )
    return parts


def _section_fields(section: str, name: Any, data: dict[str, Any], base_dir: Path | None):
    """Field names of the algorithm/problem called ``name``, or None when it is unknown.

    Plug-ins listed in ``data`` are imported first, so their names are known too.
    """
    reg = _SECTION_REGISTRIES[section]
    if not isinstance(name, str):
        return None
    if name not in reg:
        plugins = data.get("plugins") or []
        if isinstance(plugins, list) and all(isinstance(x, str) for x in plugins):
            try:
                load_plugins(plugins, base_dir)
            except ConfigError:
                return None  # validation reports the broken plug-in
    if name not in reg:
        return None
    return set(reg.get(name).Config.model_fields)


def apply_overrides(
    data: dict[str, Any],
    overrides: list[str],
    unset: list[str] | None = None,
    *,
    base_dir: Path | None = None,
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Apply ``--unset`` keys, then ``--set dotted.key=value`` overrides, to a copy of ``data``.

    Values are parsed as YAML, so ``--set key=null`` sets the field to None (for fields
    that accept None; ``--unset key`` removes the key so its default applies).
    Setting ``algorithm.name`` (or ``problem.name``) to a different name drops the keys
    of the section that the new algorithm's (problem's) config does not have, and
    reports each drop through ``note``.

    Parameters
    ----------
    data
        The experiment as read from YAML (not modified).
    overrides
        ``"dotted.key=value"`` strings, applied in order.
    unset
        Dotted keys to delete (missing keys are an error), applied before ``overrides``.
    base_dir
        The experiment file's folder, to find plug-ins when a name switch needs them.
    note
        Receives one line per dropped key (default: printed to stderr as ``note: ...``).

    Raises
    ------
    ConfigError
        For a malformed override, a path through a value, or an unknown key to unset.
    """
    note = note or _note_to_stderr
    out = copy.deepcopy(data)
    for key in unset or []:
        parts = _split_key(key, key, "--unset")
        node: Any = out
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:i]) or "the top level"
                have = sorted(str(k) for k in node) if isinstance(node, dict) else []
                hint = closest(part, have)
                did = f" Did you mean {'.'.join([*parts[:i], hint])!r}?" if hint else ""
                raise ConfigError(
                    f"--unset {key!r}: {where} has no key {part!r} (nothing to unset).{did} "
                    f"Keys there: {', '.join(have) or '(none)'}"
                )
            if i == len(parts) - 1:
                del node[part]
            else:
                node = node[part]
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. algorithm.lr=0.05")
        key, raw = item.split("=", 1)
        parts = _split_key(item, key, "--set")
        try:
            value = load_yaml_text(raw, f"--set {item!r}")
        except ConfigError as exc:
            if "appears twice" in str(exc):
                raise
            value = raw  # not YAML (e.g. 'a: b: c'): take the text as it is
        _assign(out, parts, value, f"--set {item!r}", base_dir, note)
    return out


def _assign(
    out: dict[str, Any],
    parts: list[str],
    value: Any,
    source: str,
    base_dir: Path | None,
    note: Callable[[str], None],
) -> None:
    """Set ``out[parts[0]]...[parts[-1]] = value`` in place (sections created as needed).

    Switching ``algorithm.name`` or ``problem.name`` drops the section's keys that the
    new entry does not take, each reported through ``note`` (prefixed by ``source``).
    """
    node: Any = out
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(
                f"{source}: {where} is a value, not a section (it is {nxt!r}); "
                f"set {where}=... itself, or --unset {where} first"
            )
        node = nxt
    leaf = parts[-1]
    if len(parts) == 2 and parts[0] in _SECTION_REGISTRIES and leaf == "name":
        old = node.get("name")
        if old is not None and value != old:
            fields = _section_fields(parts[0], value, out, base_dir)
            if fields is not None:
                for k in [k for k in node if k not in fields]:
                    note(
                        f"{source}: dropped {parts[0]}.{k}={node[k]!r} "
                        f"({value!r} has no such field)"
                    )
                    del node[k]
    node[leaf] = copy.deepcopy(value)


def apply_values(
    data: dict[str, Any],
    values: list[tuple[str, Any]],
    *,
    source: str,
    base_dir: Path | None = None,
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Set dotted keys to already-parsed values, in order, on a copy of ``data``.

    The programmatic twin of ``--set`` (see :func:`apply_overrides`): the same section
    creation, the same refusal of a path through a value, and the same dropping of keys
    when ``algorithm.name`` or ``problem.name`` changes.

    Parameters
    ----------
    data
        The experiment dict (not modified).
    values
        ``(dotted key, value)`` pairs.
    source
        What sets them, for messages (``"sweep cell 'lr=0.1'"``).
    base_dir
        The experiment file's folder (to find plug-ins when a name switch needs them).
    note
        Receives one line per dropped key (default: printed to stderr as ``note: ...``).

    Raises
    ------
    ConfigError
        For a key that is not dotted, or a path through a value.
    """
    note = note or _note_to_stderr
    out = copy.deepcopy(data)
    for key, value in values:
        parts = _split_key(f"{key}", key, source)
        _assign(out, parts, value, f"{source}: {key}", base_dir, note)
    return out


def _registry_section(part: Any, raw: Any, model: type[BaseModel]) -> Any:
    """The algorithm's or problem's own config model under the experiment's sections."""
    if part in _SECTION_REGISTRIES and model is ExperimentConfig:
        name = raw.get("name") if isinstance(raw, dict) else None
        reg = _SECTION_REGISTRIES[part]
        return reg.get(name).Config if name in reg else None
    return False


def format_validation_error(
    exc: ValidationError,
    data: dict[str, Any],
    root: type[BaseModel] = ExperimentConfig,
    prefix: str = "",
) -> str:
    """:func:`fedopt.validation.format_validation_error` for experiment data (the
    algorithm and problem sections resolve to their registered models)."""
    return _format(exc, data, root, prefix, _registry_section)


def _section_errors(data: dict[str, Any]) -> tuple[list[str], dict[str, BaseModel]]:
    """Validate the algorithm and problem sections with their own models first.

    Returns the error lines and the validated section models, which the experiment model
    then takes as they are (each section is validated once).
    """
    problems: list[str] = []
    done: dict[str, BaseModel] = {}
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
            done[section] = entry.Config.model_validate(raw)
        except ValidationError as exc:
            sub = format_validation_error(exc, raw, root=entry.Config, prefix=section)
            problems.extend(sub.splitlines())
    return problems, done


def validate(data: dict[str, Any], base_dir: Path | None = None) -> ExperimentConfig:
    """Validate a raw experiment dict, raising one ConfigError listing every problem.

    Plug-in files listed under ``plugins`` are imported first (relative to
    ``base_dir``), so the names they register validate.
    """
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"plugins: expected a list of Python file paths, got {plugins!r}")
    load_plugins(plugins, base_dir)
    problems, sections = _section_errors(data)
    try:
        cfg = ExperimentConfig.model_validate({**data, **sections})
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


def load_experiment(
    path: str | Path, overrides: list[str] | None = None, unset: list[str] | None = None
) -> ExperimentConfig:
    """Read, override (``unset`` keys first, then ``overrides``) and validate an experiment."""
    base = Path(path).resolve().parent
    data = apply_overrides(read_yaml(path), overrides or [], unset, base_dir=base)
    return validate(data, base)
