"""The logical payload of a message, apart from the tensor the simulation moves.

The meter counts what a real system would send, which need not be the tensor the
simulator moves: Ferret sends a seed (int64) and a client-specific number of fp16
scalars while the simulation moves a model; FedAvg's update carries a sample count next
to the model. A :class:`Payload` describes the logical message of every sender of one
collective:

* ``Payload.fields({"seed": (1, torch.int64), "coeffs": (K, torch.float16)})``: named
  fields of ``(numel, dtype)``; ``numel`` is an int (every sender alike) or an int64
  tensor aligned with ``senders`` (one count per sender);
* ``Payload.per_sender(nbytes, senders)``: the payload bytes of each sender's message.

Every collective of :class:`~fedopt.engine.comm.Comm` takes ``payload: Payload | None``;
``None`` means the moved tensor itself (``numel * itemsize`` of one row), so existing
byte counts do not change. On the wire a message is ``payload bytes + header_bytes``
(:mod:`fedopt.network.meter`). Sizes are exact int64; a payload whose size (or the run's
totals) would exceed int64 is refused with :class:`~fedopt.errors.ConfigError`, never
wrapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fedopt.errors import ConfigError
from fedopt.network.meter import INT64_MAX


def itemsize(dtype: torch.dtype) -> int:
    """Bytes of one element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True, eq=False)
class Payload:
    """Payload bytes (header excluded) of each sender's message in one collective.

    Build it with :meth:`fields`, :meth:`per_sender` or :meth:`of_tensor`; the comm asks
    :meth:`sizes` for the senders whose messages it meters.

    Attributes
    ----------
    name
        What the payload is (used in error messages).
    static
        Bytes of every sender's message, or None when sizes differ per sender.
    senders, nbytes
        Sorted global sender ids and their payload bytes (int64) when not static.
    """

    name: str
    static: int | None
    senders: torch.Tensor | None = None
    nbytes: torch.Tensor | None = None

    # -- constructors --------------------------------------------------------------
    @classmethod
    def fields(
        cls,
        spec: Mapping[str, tuple[int | torch.Tensor, torch.dtype]],
        senders: torch.Tensor | None = None,
    ) -> Payload:
        """Named fields ``name -> (numel, dtype)``.

        ``numel`` is a non-negative int, or an int64 tensor of one count per sender of
        ``senders`` (global ids; required then). Raises :class:`ConfigError` for a
        negative count or a size beyond int64.
        """
        if not spec:
            raise ConfigError("payload: give at least one field, e.g. {'x': (dim, torch.float32)}")
        name = (
            "payload{"
            + ", ".join(f"{k}: {str(d).removeprefix('torch.')}" for k, (_, d) in spec.items())
            + "}"
        )
        static = 0
        per: torch.Tensor | None = None
        for field, (numel, dtype) in spec.items():
            size = itemsize(dtype)
            if isinstance(numel, torch.Tensor):
                if senders is None:
                    raise ConfigError(
                        f"{name}.{field}: per-sender counts need the senders they belong to; "
                        "pass senders=..."
                    )
                counts = numel.to(torch.int64).reshape(-1)
                if len(counts) != len(senders):
                    raise ConfigError(
                        f"{name}.{field}: {len(counts)} counts for {len(senders)} senders; "
                        "give one count per sender"
                    )
                if len(counts) and int(counts.min()) < 0:
                    raise ConfigError(f"{name}.{field}: negative element count; use counts >= 0")
                if len(counts) and int(counts.max()) > INT64_MAX // size:
                    raise ConfigError(_overflow(name, f"field {field!r}", int(counts.max()) * size))
                part = counts * size
                per = part if per is None else _checked_add(name, per, part)
            else:
                count = int(numel)
                if count < 0:
                    raise ConfigError(f"{name}.{field}: numel={count} is negative; use >= 0")
                static += count * size
                if static > INT64_MAX:
                    raise ConfigError(_overflow(name, f"field {field!r}", static))
        if per is None:
            return cls(name, static)
        assert senders is not None
        per = _checked_add(name, per, torch.full_like(per, static))
        return cls._sorted(name, senders, per)

    @classmethod
    def per_sender(
        cls, nbytes: torch.Tensor, senders: torch.Tensor, name: str = "payload"
    ) -> Payload:
        """Payload bytes ``nbytes[i]`` (int64, >= 0) of the message of sender ``senders[i]``."""
        nbytes = torch.as_tensor(nbytes).reshape(-1)
        if nbytes.is_floating_point() or nbytes.is_complex():
            raise ConfigError(f"{name}: byte counts must be integers, got {nbytes.dtype}")
        nbytes = nbytes.to(torch.int64)
        if len(nbytes) != len(senders):
            raise ConfigError(
                f"{name}: {len(nbytes)} byte counts for {len(senders)} senders; give one each"
            )
        if len(nbytes) and int(nbytes.min()) < 0:
            raise ConfigError(f"{name}: a byte count is negative ({int(nbytes.min())}); use >= 0")
        return cls._sorted(name, senders, nbytes)

    @classmethod
    def of_tensor(cls, numel: int, dtype: torch.dtype) -> Payload:
        """The moved tensor itself: ``numel`` elements of ``dtype`` per message."""
        return cls.fields({"tensor": (int(numel), dtype)})

    @classmethod
    def _sorted(cls, name: str, senders: torch.Tensor, nbytes: torch.Tensor) -> Payload:
        s = torch.as_tensor(senders, dtype=torch.int64).reshape(-1).cpu()
        order = torch.argsort(s, stable=True)
        s, b = s[order], nbytes.cpu()[order]
        if len(s) > 1 and bool((s[1:] == s[:-1]).any()):
            raise ConfigError(f"{name}: a sender is listed twice; give each sender once")
        return cls(name, None, s, b)

    # -- queries -------------------------------------------------------------------
    def sizes(self, senders: torch.Tensor) -> int | torch.Tensor:
        """Payload bytes of each message of ``senders`` (global ids): an int when static."""
        if self.static is not None:
            return self.static
        assert self.senders is not None and self.nbytes is not None
        s = senders.to(torch.int64).cpu()
        if len(s) == 0:
            return torch.zeros(0, dtype=torch.int64)
        pos = torch.searchsorted(self.senders, s).clamp_max(max(len(self.senders) - 1, 0))
        if len(self.senders) == 0 or not bool((self.senders[pos] == s).all()):
            missing = s[(self.senders[pos] != s) if len(self.senders) else slice(None)]
            raise ConfigError(
                f"{self.name}: no size for the message of node {int(missing[0])}; "
                "list every sender of the collective in the payload"
            )
        return self.nbytes[pos]


def wire_bytes(payload: int | torch.Tensor, header: int, what: str) -> int | torch.Tensor:
    """``payload + header`` bytes per message, refused (ConfigError) beyond int64."""
    if isinstance(payload, torch.Tensor):
        if len(payload) and int(payload.max()) > INT64_MAX - header:
            raise ConfigError(_overflow(what, "message", int(payload.max()) + header))
        return payload + header
    total = int(payload) + int(header)
    if total > INT64_MAX:
        raise ConfigError(_overflow(what, "message", total))
    return total


def resolve(
    payload: Payload | None, senders: torch.Tensor, numel: int, dtype: torch.dtype, header: int
) -> int | torch.Tensor:
    """Wire bytes of each message of ``senders``: of ``payload``, or of the moved tensor."""
    if payload is None:
        count = int(numel) * itemsize(dtype)
        return wire_bytes(count, header, f"the moved tensor ({numel} x {dtype})")
    return wire_bytes(payload.sizes(senders), header, payload.name)


def _checked_add(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if len(a) and int(a.max()) > INT64_MAX - int(b.max()):
        raise ConfigError(_overflow(name, "message", int(a.max()) + int(b.max())))
    return a + b


def _overflow(name: str, what: str, size: int) -> str:
    return (
        f"{name}: a {what} of {size} bytes exceeds what the meter counts exactly "
        f"(int64, {INT64_MAX} bytes); send a smaller payload"
    )
