"""User plug-in files: extra algorithms, problems or topologies named in the experiment.

An experiment may list Python files under ``plugins:``; each is imported before the
experiment is validated, so its ``@ALGORITHMS.register``/``@PROBLEMS.register``/
``@TOPOLOGIES.register`` entries are known. The plan carries the files' source text,
and every Ray worker installs the same modules (under the same module names, so
pickled objects defined there resolve) before building its nodes: no copying of code
to cluster machines by hand.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from fedopt.errors import ConfigError


def module_name(path: Path, source: str) -> str:
    """Stable module name of a plug-in: its file stem plus a hash of its source."""
    digest = hashlib.blake2b(source.encode(), digest_size=6).hexdigest()
    return f"fedopt_plugin_{path.stem}_{digest}"


def install(name: str, source: str, origin: str) -> ModuleType:
    """Import plug-in ``source`` as module ``name`` (once per process)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_loader(name, loader=None, origin=origin)
    if spec is None:  # pragma: no cover - spec_from_loader only fails on bad names
        raise ConfigError(f"plugins: cannot create a module for {origin!r}")
    module = importlib.util.module_from_spec(spec)
    module.__file__ = origin
    sys.modules[name] = module
    try:
        exec(compile(source, origin, "exec"), module.__dict__)
    except Exception as exc:
        del sys.modules[name]
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise ConfigError(f"plugins: importing {origin!r} failed: {detail}") from None
    return module


def find_plugin(raw: str, base_dir: Path | None) -> Path:
    """Resolve a ``plugins:`` entry: absolute, else ``base_dir`` (the experiment's folder),
    then the working directory.

    Raises
    ------
    ConfigError
        When the file is in none of those places (the message lists them).
    """
    p = Path(raw).expanduser()
    candidates = [p] if p.is_absolute() else [*([base_dir / p] if base_dir else []), Path.cwd() / p]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        folder = next((c for c in candidates if c.is_dir()), None)
        if folder is not None:
            raise ConfigError(
                f"plugins: {raw!r} is a folder ({folder}), not a Python file; list the "
                ".py files inside it"
            )
        looked = ", ".join(str(c) for c in candidates)
        raise ConfigError(f"plugins: file {raw!r} not found (looked in: {looked})")
    return found.resolve()


def load_plugins(paths: list[str], base_dir: Path | None) -> dict[str, tuple[str, str]]:
    """Import the plug-in files; return ``{module name: (origin, source)}`` for workers."""
    out: dict[str, tuple[str, str]] = {}
    for raw in paths:
        found = find_plugin(raw, base_dir)
        try:
            source = found.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"plugins: {raw!r} ({found}) is not UTF-8 text (offset {exc.start}); list "
                "Python source files"
            ) from None
        name = module_name(found, source)
        install(name, source, str(found))
        out[name] = (str(found), source)
    return out


def install_all(sources: dict[str, tuple[str, str]]) -> None:
    """Install every plug-in shipped in a plan (called inside each worker)."""
    for name, (origin, source) in sources.items():
        install(name, source, origin)
