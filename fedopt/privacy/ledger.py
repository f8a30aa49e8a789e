"""The privacy ledger: noisy releases counted per mechanism, epsilon from the accountant.

A DP algorithm (DIFF2, DP-GD, DP-SGD) names its mechanisms once, with their noise
multipliers ``z`` (noise std / L2 sensitivity of the released aggregate), and calls
:meth:`PrivacyLedger.spend` for every noisy release. :meth:`PrivacyLedger.to_record`
composes the counts with dp-accounting (:func:`fedopt.privacy.accountant.epsilon_spent`):
RDP always (Mironov, CSF 2017; milliseconds), PLD as well with ``with_pld`` (about
0.02 s for 2000 rounds). The figures are cached for unchanged counts. For DIFF2 (Murata
& Suzuki, ICML 2023) the mechanisms are ``{"restart": z1, "difference": z2}``
(:meth:`fedopt.privacy.calibration.Diff2Calibration.mechanisms`).

Placement and merge. Noise is added to the aggregate by the server, so only the worker
that hosts the server keeps a ledger (:func:`fedopt.engine.ledger.merge_ledgers` merges
a ledger over the workers that keep it, so there it is never merged at all). ``merge``
is still defined: two ledgers of the same mechanisms over the same data describe
different releases, which compose sequentially, so their counts add. Integer sums do
not depend on the order or on how nodes are split, and ``merge`` refuses ledgers whose
mechanisms, delta, sample rate or threat model differ (adding those counts would mean
nothing).

Threat models (spec pitfall D6). ``"central"``: a trusted server (or secure aggregation)
sees only the noisy aggregate, and the epsilon is that of the aggregate. ``"local"``:
each of the ``P`` workers adds ``N(0, P (C sigma)^2)`` to its own message, so the
average carries the same noise and the aggregate's epsilon is unchanged, but one
worker's message alone has multiplier ``z / sqrt(P)`` (sensitivity ``2C / n_p``, std
``sqrt(P) C sigma``, ``n_p >= n_min``). Given ``workers = P``, the record adds that
worst-case per-message figure as ``epsilon_rdp_message`` (what an untrusted server
learns about a sample from its worker's messages).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from fedopt.errors import ConfigError
from fedopt.privacy.accountant import GaussianRounds, dp_accounting, epsilon_spent
from fedopt.privacy.checks import count_value, delta_value, in_range

ThreatModel = Literal["central", "local"]


class PrivacyLedger:
    """Counts of noisy releases per mechanism, and the epsilon they spend.

    Parameters
    ----------
    delta
        The delta at which epsilon is reported, in ``(0, 1)``.
    threat_model
        ``"central"`` (noise on the aggregate by a trusted server) or ``"local"``
        (each worker noises its own message; see the module docstring).
    mechanisms
        ``name -> noise multiplier`` (``>= 0``; ``0`` is no noise, ``inf`` no release).
    sample_rate
        Poisson sampling rate of every release (``1``: full batch).
    with_pld
        Also report the PLD accountant's epsilon.
    workers
        ``P``; with ``threat_model="local"`` the record adds ``epsilon_rdp_message``.
    """

    def __init__(
        self,
        delta: float,
        threat_model: ThreatModel,
        mechanisms: dict[str, float],
        sample_rate: float = 1.0,
        with_pld: bool = False,
        workers: int | None = None,
    ) -> None:
        dp_accounting()  # fail at set-up, not at the first evaluation
        self.delta = delta_value(delta)
        if threat_model not in ("central", "local"):
            raise ConfigError(
                f"threat_model: must be 'central' or 'local', got {threat_model!r}. "
                "Fix: 'central' when the server adds the noise to the aggregate"
            )
        self.threat_model: ThreatModel = threat_model
        if not mechanisms:
            raise ConfigError("mechanisms: name at least one mechanism and its noise multiplier")
        # GaussianRounds checks each multiplier (>= 0, not NaN).
        checked = {str(k): GaussianRounds(z, 0).noise_multiplier for k, z in mechanisms.items()}
        self.mechanisms: dict[str, float] = dict(sorted(checked.items()))
        self.sample_rate = in_range(sample_rate, "sample_rate", 0.0, 1.0, open_low=True)
        self.with_pld = bool(with_pld)
        self.workers = None if workers is None else count_value(workers, "workers")
        self.counts: dict[str, int] = dict.fromkeys(self.mechanisms, 0)
        self._cache: tuple[tuple[int, ...], dict[str, float]] | None = None

    # ------------------------------------------------------------------ updates

    def spend(self, name: str, count: int = 1) -> None:
        """Record ``count`` more releases of mechanism ``name``."""
        if name not in self.counts:
            known = ", ".join(self.counts)
            raise KeyError(f"privacy ledger: unknown mechanism {name!r} (known: {known})")
        self.counts[name] += count_value(count, "count", low=0)

    def merge(self, other: PrivacyLedger) -> PrivacyLedger:
        """A new ledger with both ledgers' counts added (see the module docstring)."""
        if not isinstance(other, PrivacyLedger):
            raise TypeError(f"cannot merge a PrivacyLedger with {type(other).__name__}")
        if self._setup() != other._setup():
            raise ValueError(
                "privacy ledgers of different set-ups cannot be merged: "
                f"{self._setup()} vs {other._setup()}"
            )
        out = PrivacyLedger(
            self.delta,
            self.threat_model,
            self.mechanisms,
            self.sample_rate,
            self.with_pld,
            self.workers,
        )
        out.counts = {k: self.counts[k] + other.counts[k] for k in self.counts}
        return out

    # ------------------------------------------------------------------ figures

    def parts(self, scale: float = 1.0) -> list[GaussianRounds]:
        """The releases so far, one part per mechanism (multipliers times ``scale``)."""
        return [
            GaussianRounds(z * scale, self.counts[k], self.sample_rate)
            for k, z in self.mechanisms.items()
        ]

    def epsilons(self) -> dict[str, float]:
        """``epsilon_rdp`` (+ ``epsilon_pld``, ``epsilon_rdp_message``), cached by counts."""
        key = tuple(self.counts.values())
        if self._cache is not None and self._cache[0] == key:
            return dict(self._cache[1])
        out = {"epsilon_rdp": epsilon_spent(self.parts(), self.delta, "rdp")}
        if self.with_pld:
            out["epsilon_pld"] = epsilon_spent(self.parts(), self.delta, "pld")
        if self.threat_model == "local" and self.workers is not None:
            scale = 1.0 / math.sqrt(self.workers)
            out["epsilon_rdp_message"] = epsilon_spent(self.parts(scale), self.delta, "rdp")
        self._cache = (key, out)
        return dict(out)

    def to_record(self) -> dict[str, Any]:
        """JSON-ready figures (an infinite epsilon, no noise, is written as null)."""
        return {
            **self.epsilons(),
            "delta": self.delta,
            "threat_model": self.threat_model,
            "rounds": dict(self.counts),
            "noise_multipliers": dict(self.mechanisms),
            "sample_rate": self.sample_rate,
        }

    # ------------------------------------------------------------------ helpers

    def _setup(self) -> tuple[Any, ...]:
        return (
            self.delta,
            self.threat_model,
            self.mechanisms,
            self.sample_rate,
            self.with_pld,
            self.workers,
        )

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(delta={self.delta:g}, threat_model={self.threat_model!r}, "
            f"mechanisms={self.mechanisms}, counts={self.counts})"
        )
