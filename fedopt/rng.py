"""Counter-based random numbers keyed by (seed, purpose, node, step).

fedopt never uses a global RNG. Every random number is a pure function of a key::

    value = mix(seed, purpose, node, step, j)

where ``mix`` is the SplitMix64 finaliser (Steele, Lea & Flood, OOPSLA 2014) applied
as vectorised int64 tensor arithmetic. The stream of a node therefore does not depend
on which worker hosts it, how many nodes share the batch, or the order in which
nodes are processed. This is what makes the local and Ray engines produce identical
numbers. Integer arithmetic is exact on every device, so integer draws (batch
indices, Bernoulli masks) are the same on CPU and CUDA; float transforms are
bitwise-reproducible per device.

Wrapping int64 multiplication is two's-complement on CPU and CUDA; logical right
shifts are emulated with a mask because ``>>`` on signed tensors is arithmetic.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import torch

from fedopt.errors import ConfigError

_MASK64 = (1 << 64) - 1

SEED_MAX = (1 << 63) - 1
"""Largest accepted seed, ``2**63 - 1``. Keys are 64-bit words and :func:`purpose_key`
maps a seed through bijections of that word (SplitMix64's finaliser, an XOR), so two
different accepted seeds never share a key. Seeds ``>= 2**64`` would repeat
``seed mod 2**64`` and are refused (:func:`check_seed`), as is the upper half of the
64-bit range, so that a seed, like every integer of an experiment, fits int64."""
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _signed(x: int) -> int:
    """Map an unsigned 64-bit integer to the int64 with the same bits."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN_S, _M1_S, _M2_S = _signed(_GOLDEN), _signed(_M1), _signed(_M2)


def _mix_int(x: int) -> int:
    """SplitMix64 finaliser on a Python int (unsigned semantics)."""
    z = (x + _GOLDEN) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * _M1) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * _M2) & ((1 << 64) - 1)
    return z ^ (z >> 31)


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of an int64 tensor."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix_(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser applied in place to an int64 tensor; returns ``z``."""
    z.add_(_GOLDEN_S)
    z.bitwise_xor_(_srl(z, 30)).mul_(_M1_S)
    z.bitwise_xor_(_srl(z, 27)).mul_(_M2_S)
    z.bitwise_xor_(_srl(z, 31))
    return z


def check_seed(seed: object, field: str = "seed") -> int:
    """Return ``seed`` as an int when it lies in ``[0, SEED_MAX]``; raise otherwise.

    Parameters
    ----------
    seed
        The seed to check.
    field
        Dotted name quoted in the message; empty for a pydantic validator (the
        formatter adds the field and the value).

    Raises
    ------
    ValueError
        (:class:`~fedopt.errors.ConfigError` when ``field`` is given) for a bool, a
        non-integer or a seed outside the range.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        msg = f"must be an integer in [0, 2**63 - 1], got {seed!r}"
    elif 0 <= seed <= SEED_MAX:
        return int(seed)
    else:
        msg = (
            f"must be in [0, 2**63 - 1] = [0, {SEED_MAX}]: random numbers are keyed by "
            "64-bit words, so a seed outside it could silently repeat another seed's run "
            "(seeds are also kept within int64); use a seed in that range"
        )
    if not field:
        raise ValueError(msg)
    raise ConfigError(f"{field}: {msg} (got {seed!r})")


@lru_cache(maxsize=4096)
def purpose_key(seed: int, purpose: str) -> int:
    """Signed 64-bit key for a (seed, purpose) pair, stable across Python runs."""
    digest = hashlib.blake2b(purpose.encode(), digest_size=8).digest()
    salt = int.from_bytes(digest, "little")
    return _signed(_mix_int(_mix_int(int(seed) & _MASK64) ^ salt))


def node_keys(
    seed: int, purpose: str, nodes: torch.Tensor, step: int | torch.Tensor
) -> torch.Tensor:
    """One int64 key per node for this (seed, purpose, step).

    Parameters
    ----------
    seed
        Root seed of the experiment.
    purpose
        What the numbers are for (``"batch"``, ``"init"``, ``"noise"``...).
    nodes
        Global node ids, int64 tensor of shape ``[k]``.
    step
        Step or round counter: one ``int`` for every node, or a ``[k]`` int64 tensor
        with each node's own step (a 0-d tensor counts as one step for all). Row ``j``
        of a per-row call has the bits of a call with ``step = step[j]``.
    """
    pk = purpose_key(seed, purpose)
    ids = nodes.to(torch.int64)
    if isinstance(step, torch.Tensor):
        s = step.to(device=ids.device, dtype=torch.int64)
        if s.ndim > 1 or (s.ndim == 1 and s.shape[0] != ids.shape[0]):
            raise ValueError(
                f"step: a per-row step must be a 0-d or [{ids.shape[0]}] tensor (one per "
                f"node), got shape {list(s.shape)}"
            )
        base = mix_(s.bitwise_xor(pk))  # the tensor form of _mix_int(pk ^ step)
    else:
        base = _signed(_mix_int((pk & _MASK64) ^ (int(step) & _MASK64)))
    return mix_(ids.bitwise_xor(base))


def bits(keys: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` random int64 words per key: shape ``[k, count]``."""
    j = torch.arange(count, dtype=torch.int64, device=keys.device).mul_(_GOLDEN_S)
    return mix_(keys.unsqueeze(-1) + j)


def randint(keys: torch.Tensor, count: int, high: int | torch.Tensor) -> torch.Tensor:
    """Uniform integers in ``[0, high)``: shape ``[k, count]`` (``high`` scalar or ``[k]``).

    Uses Lemire's multiply-shift reduction ``((word >>> 32) * high) >>> 32`` (no
    division); ``high`` must be below ``2**31`` and the bias is below ``high / 2**32``.
    """
    h = high.to(torch.int64).unsqueeze(-1) if isinstance(high, torch.Tensor) else int(high)
    return _srl(bits(keys, count), 32).mul_(h).bitwise_right_shift_(32)


def uniform(keys: torch.Tensor, count: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform floats in ``[0, 1)`` with 53 random bits: shape ``[k, count]``."""
    u = _srl(bits(keys, count), 11).to(torch.float64).mul_(2.0**-53)
    return u.to(dtype)


def normal(keys: torch.Tensor, count: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal floats by the Box-Muller transform: shape ``[k, count]``."""
    half = (count + 1) // 2
    w = bits(keys, 2 * half)
    u1 = _srl(w[:, :half], 11).to(torch.float64).add_(1.0).mul_(2.0**-53)  # (0, 1]
    u2 = _srl(w[:, half:], 11).to(torch.float64).mul_(2.0**-53)
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = (2.0 * torch.pi) * u2
    z = torch.cat([r * torch.cos(theta), r * torch.sin(theta)], dim=-1)[:, :count]
    return z.to(dtype)


def bernoulli(keys: torch.Tensor, count: int, p: float | torch.Tensor) -> torch.Tensor:
    """Boolean draws with probability ``p`` (scalar or ``[k]``): shape ``[k, count]``."""
    u = uniform(keys, count, torch.float64)
    pp = p.to(torch.float64).unsqueeze(-1) if isinstance(p, torch.Tensor) else float(p)
    return u < pp


def numpy_seed(seed: int, purpose: str, *ids: int) -> int:
    """A 63-bit seed for ``numpy.random.default_rng`` derived from a key (for set-up code)."""
    k = purpose_key(seed, purpose) & ((1 << 64) - 1)
    for i in ids:
        k = _mix_int(k ^ (int(i) & ((1 << 64) - 1)))
    return k >> 1


def derived_key(seed: int, purpose: str, *ids: int) -> int:
    """Signed 64-bit key of ``(seed, purpose, ids...)``: the purpose key mixed with each id.

    The key of a stream that several parties regenerate from the same integers (Ferret's
    bases, keyed by (seed, client, round, block)); stable across runs and devices.
    """
    k = purpose_key(seed, purpose) & _MASK64
    for i in ids:
        k = _mix_int(k ^ (int(i) & _MASK64))
    return _signed(k)


def words(keys: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """Words ``start .. start + count - 1`` of each key's stream: ``[k, count]`` int64.

    ``words(keys, 0, n)`` equals ``bits(keys, n)``; a stream can be generated piece by
    piece (in cache-sized chunks) with the same bits as in one call.
    """
    j = torch.arange(start, start + count, dtype=torch.int64, device=keys.device)
    return mix_(keys.unsqueeze(-1) + j.mul_(_GOLDEN_S))
