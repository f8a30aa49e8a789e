"""Pydantic validation errors as readable lines: one formatter for every section.

Every model fedopt validates (the experiment, a section, an algorithm's or problem's own
model, a nested spec) reports its errors through :func:`format_validation_error`, so a
message reads the same wherever it is raised::

    algorithm.lr: Input should be greater than 0 (got -0.1)
    topology.nn: unknown key 'nn'. Did you mean 'n'? Allowed keys: name, n, params, ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from fedopt.errors import closest

SectionModel = Callable[[Any, Any, type[BaseModel]], type[BaseModel] | bool | None]
"""``(part, raw value, owning model) -> model``: a model chosen by the data (a registered
algorithm's own config, say), ``None`` when unknown, or ``False`` to follow the field's
annotation."""


def model_at(
    loc: tuple[Any, ...],
    data: Any,
    root: type[BaseModel],
    section_model: SectionModel | None = None,
) -> type[BaseModel] | None:
    """The pydantic model that owns the field at ``loc[:-1]`` (for key suggestions)."""
    model: type[BaseModel] | None = root
    raw: Any = data
    for part in loc[:-1]:
        if model is None:
            return None
        raw = raw.get(part) if isinstance(raw, dict) else None
        chosen = section_model(part, raw, model) if section_model else False
        if chosen is not False:
            model = chosen if isinstance(chosen, type) else None
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
    data: Any,
    root: type[BaseModel],
    prefix: str = "",
    section_model: SectionModel | None = None,
) -> str:
    """One readable line per error: field path, message, offending value, fix.

    Parameters
    ----------
    exc
        The error pydantic raised.
    data
        What was validated (for the keys an unknown key is compared with).
    root
        The model that validated ``data``.
    prefix
        The dotted path of ``root`` in the experiment (``"algorithm"`` for an algorithm's
        own model, ``""`` for the experiment).
    section_model
        Picks models chosen by the data along the path (see :data:`SectionModel`).
    """
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join([prefix, *(str(p) for p in loc)] if prefix else [str(p) for p in loc])
        path = path or "(top level)"
        if err["type"] == "extra_forbidden":
            model = model_at(loc, data, root, section_model)
            allowed = sorted(model.model_fields) if model else []
            hint = closest(str(loc[-1]), allowed)
            dym = f" Did you mean {hint!r}?" if hint else ""
            lines.append(
                f"{path}: unknown key {loc[-1]!r}.{dym} Allowed keys: {', '.join(allowed)}."
            )
            continue
        msg = err["msg"].removeprefix("Value error, ")
        own = [p for p in (path, prefix) if p and p != "(top level)"]
        if any(msg.startswith((p + ".", p + ":")) for p in own):  # names its own field
            lines.append(msg)
            continue
        value = err.get("input")
        shown = "" if isinstance(value, dict) or err["type"] == "missing" else f" (got {value!r})"
        if value is None and err["type"] != "missing":
            shown = f" (got null; --unset {path} restores the default)"
        lines.append(f"{path}: {msg}{shown}")
    return "\n".join(lines)
