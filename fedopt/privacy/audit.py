"""Empirical privacy audit: a statistical lower bound on the epsilon of a private run.

``fedopt audit CONFIG.yaml`` runs the experiment's mechanism (DIFF2, DP-GD or DP-SGD:
any algorithm with ``noise_seed`` and ``audit_noise_scale``) many times on two
neighbouring datasets and bounds its epsilon from below by how well a test tells the
two apart (Jagielski, Ullman & Oprea, NeurIPS 2020; Nasr, Song, Thakurta, Papernot &
Carlini, IEEE S&P 2021). If the bound exceeds the accountant's epsilon, the claim is
wrong: a bug in the noise, the clipping, the sensitivity or the accounting.

Neighbours. A gradient canary (:mod:`fedopt.problems.canary`: sample ``s`` of data
node ``p`` gets the constant per-sample gradient ``1e6 u``, exactly ``C u`` after
clipping) in one world ``D``, and in the other ``D'``:

* ``replace`` (DIFF2, DP-GD: replace-one adjacency): the mirror canary ``-1e6 u``: the
  clipped contributions differ by exactly ``2C`` along ``u``, the sensitivity the
  calibration assumes;
* ``add`` (DP-SGD: add/remove-one adjacency with Poisson sampling): slot ``s`` empty
  (no contribution, the public denominators unchanged).

Both worlds share the data, the model's initial point and the compiled plan; trial
``i`` of world ``D`` draws its noise (and DP-SGD's Poisson samples) with
``noise_seed = seed + i``, trial ``i`` of ``D'`` with ``seed + trials + i``: fresh,
independent mechanism randomness on the same data. Each trial runs the real mechanism
(:func:`run_trial`: the local engine's worker, driven round by round as the round
driver drives it, in memory, no run directory).

Statistic. The released iterates give the released noisy gradient estimates
``v_r = (x_r - x_{r+1}) / lr``; the test statistic is their projection on the canary's
direction, summed over the rounds whose release carries the canary:

    T = sum_{r in carrying rounds} <x_r - x_{r+1}, u> / lr

* DP-GD: every round (a fresh noisy gradient, the canary adds ``C u / (P n_p)``);
* DIFF2: the restart rounds ``r mod T = 0`` only: a difference round releases the
  noisy sum of per-sample *differences*, and the canary's difference is zero, so given
  the past releases a difference round has the same distribution in both worlds (it
  adds noise to ``T``, no signal). Summing over every round would still count each
  restart's noise once per round until the next restart;
* DP-SGD: every round (the canary is in the Poisson sample with probability ``q``;
  the sum is a simple, not the most powerful, test of that mixture, and it also
  carries the sampling noise of the other samples' gradients, so DP-SGD audits are
  weaker than DP-GD's at the same epsilon).

Bound. :func:`fedopt.privacy.lower_bound.threshold_audit`: the threshold is chosen on
the first half of each world's trials and evaluated on the second; Clopper–Pearson
upper bounds of the two error rates at confidence ``1 - alpha`` give
``eps_lb = max(0, ln((1 - delta - FNR_ub)/FPR_ub), ln((1 - delta - FPR_ub)/FNR_ub))``
(Kairouz et al., ICML 2015), true with probability at least ``1 - alpha``. It cannot
exceed the resolution ``~ ln(trials / 2 / 3.69)``.

Verdict. ``eps_lb`` against the accountant's epsilon of the run's privacy ledger, the
smaller of RDP and PLD (both are upper bounds of the same claim): "consistent" when at
most that, "VIOLATION" above. ``noise_scale`` (``audit_noise_scale`` of the
algorithm) multiplies the noise actually drawn while the ledger keeps its claim: a
deliberately broken mechanism, to check that the audit can see a violation.

Cost. Each world is validated and compiled once; a trial only swaps ``noise_seed`` in
the plan's config (``model_copy``, about 10 us, against 4.5 ms to validate and compile
again) and builds a fresh worker. DP-GD on ``experiments/diff2/dp_gd_audit.yaml`` (P = 2 x 20
samples, dim 3, R = 3) takes about 7 ms per trial on a 2-core machine.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fedopt.errors import ConfigError, RunDiverged
from fedopt.privacy.lower_bound import ALPHA, ThresholdTest, finite_or_none, threshold_audit

CanaryKind = Literal["replace", "add"]

ADJACENCY: dict[str, CanaryKind] = {"dp_sgd": "add"}
"""The neighbouring relation an algorithm's accountant counts (default ``replace``)."""

STATISTIC = "T = sum over the carrying rounds r of <x_r - x_{r+1}, u> / lr"


@dataclass(frozen=True)
class AuditSettings:
    """How to audit.

    Parameters
    ----------
    trials
        Runs per world (``>= 4``): half choose the threshold, half evaluate it.
    canary
        ``"replace"`` or ``"add"`` (see the module docstring); None: the algorithm's
        adjacency (``add`` for ``dp_sgd``, ``replace`` otherwise).
    noise_scale
        Multiplies the noise std actually drawn (``1``: the honest mechanism).
    alpha
        The bound holds with probability ``1 - alpha``.
    seed
        First noise seed (world ``D``: ``seed .. seed + trials - 1``, ``D'`` the next).
    """

    trials: int = 200
    canary: CanaryKind | None = None
    noise_scale: float = 1.0
    alpha: float = ALPHA
    seed: int = 0

    def __post_init__(self) -> None:
        from fedopt.rng import SEED_MAX

        t = self.trials
        if isinstance(t, bool) or not isinstance(t, int) or t < 4:
            raise ConfigError(
                f"--trials: must be an integer >= 4 (half of each world's runs choose the "
                f"threshold, half evaluate it), got {t!r}. Fix: e.g. --trials 200"
            )
        if self.canary not in (None, "replace", "add"):
            raise ConfigError(f"--canary: must be replace or add, got {self.canary!r}")
        s = self.noise_scale
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < math.inf:
            raise ConfigError(
                f"--noise-scale: must be a finite number >= 0, got {s!r}. Fix: 1 audits the "
                "honest mechanism, 0.1 a broken one with a tenth of the noise"
            )
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a < 1:
            raise ConfigError(f"--alpha: must be a number in (0, 1), got {a!r}. Fix: e.g. 0.05")
        k = self.seed
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= SEED_MAX - 2 * t:
            raise ConfigError(
                f"--seed: must be an integer in [0, {SEED_MAX - 2 * t}] (the trials use "
                f"noise seeds seed .. seed + 2 * trials - 1), got {k!r}"
            )


@dataclass
class AuditResult:
    """The audit's figures (:meth:`to_dict` is ``audit.json``, :func:`format_table`)."""

    algorithm: str
    problem: str
    canary: CanaryKind
    node: int
    sample: int
    rounds: int
    carrying_rounds: int
    trials: int
    noise_scale: float
    seed: int
    epsilon_target: float
    delta: float
    epsilon_rdp: float
    epsilon_pld: float
    test: ThresholdTest
    seconds_per_trial: float
    compile_s: float
    wall_s: float
    statistics_in: list[float] = field(default_factory=list)
    statistics_out: list[float] = field(default_factory=list)

    @property
    def epsilon_accountant(self) -> float:
        """The tighter of the two upper bounds the ledger reports."""
        return min(self.epsilon_rdp, self.epsilon_pld)

    @property
    def epsilon_lb(self) -> float:
        return self.test.epsilon_lb

    @property
    def violation(self) -> bool:
        return self.epsilon_lb > self.epsilon_accountant

    @property
    def verdict(self) -> str:
        if self.violation:
            return "VIOLATION"
        return "lower bound below the accountant: consistent"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures, the per-trial statistics included (an infinite threshold,
        "always D", is written as null)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "test"}
        stats_in, stats_out = out.pop("statistics_in"), out.pop("statistics_out")
        out.update(
            statistic=STATISTIC,
            epsilon_accountant=self.epsilon_accountant,
            **self.test.to_dict(),
            violation=self.violation,
            verdict=self.verdict,
            statistics_in=stats_in,
            statistics_out=stats_out,
        )
        out["threshold"] = finite_or_none(self.test.threshold)  # -inf: always "D"
        return out


# ----------------------------------------------------------------------------- worlds


def auditable() -> list[str]:
    """Registered algorithms the audit can run (a ``noise_seed`` and an
    ``audit_noise_scale`` field)."""
    from fedopt.algorithms import ALGORITHMS

    need = {"noise_seed", "audit_noise_scale"}
    return [n for n, a in ALGORITHMS.items() if need <= set(a.Config.model_fields)]


def _check_auditable(algorithm: Any) -> None:
    names = auditable()
    name = algorithm.name
    if name not in names:
        raise ConfigError(
            f"algorithm.name: fedopt audit runs a differentially private algorithm with a "
            f"privacy ledger ({', '.join(names)}), got {name!r}. Fix: audit one of those"
        )
    eps = getattr(algorithm, "epsilon", math.inf)
    if not math.isfinite(eps):
        raise ConfigError(
            f"algorithm.epsilon: {eps} claims no privacy, so there is nothing to audit. "
            "Fix: give a finite epsilon, e.g. 2"
        )


def canary_kind(algorithm: str, asked: CanaryKind | None) -> CanaryKind:
    """The neighbouring relation to audit (refusing one the accountant does not count)."""
    native = ADJACENCY.get(algorithm, "replace")
    if asked is None:
        return native
    if asked == "replace" and native == "add":
        raise ConfigError(
            f"--canary replace: the accountant of {algorithm!r} counts add/remove-one "
            "neighbours (Poisson sampling); replacing a sample is two such steps, so the "
            "lower bound would be compared with the wrong epsilon. Fix: --canary add"
        )
    return asked


def world_problems(
    problem: Mapping[str, Any], kind: CanaryKind, dim: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``problem`` sections of ``D`` (canary in) and ``D'``.

    ``problem`` is the experiment's section: a ``canary`` (its node, sample, norm and
    direction are kept; ``present``/``absent`` are set here) or any other problem,
    which becomes the canary's ``inner`` (node 0, sample 0, ``u = e_0``). ``replace``
    gives ``D'`` the mirror canary ``-u`` (as an explicit ``direction`` of ``dim``
    numbers), ``add`` an empty slot.
    """
    base = copy.deepcopy(dict(problem))
    if base.get("name") != "canary":
        base = {"name": "canary", "inner": base}
    base.pop("absent", None)
    d_in = {**base, "present": True}
    if kind == "add":
        return d_in, {**base, "present": False, "absent": "empty"}
    direction = base.get("direction")
    if direction is None:
        k = base.get("coordinate", 0)
        if not isinstance(k, int) or not 0 <= k < dim:  # the canary's own check names it
            return d_in, dict(d_in)
        direction = [0.0] * dim
        direction[k] = 1.0
    mirror = [-float(v) for v in direction]
    return d_in, {**base, "present": True, "direction": mirror}


def _world_raw(raw: Mapping[str, Any], problem: dict[str, Any], scale: float) -> dict[str, Any]:
    """The experiment of one world: its canary problem, the noise scale, the local engine
    (the trials run in this process; every engine gives the same bits)."""
    out = copy.deepcopy(dict(raw))
    out["problem"] = problem
    out["algorithm"] = {**out["algorithm"], "audit_noise_scale": scale}
    out["engine"] = {**(out.get("engine") or {}), "kind": "local"}
    return out


# ----------------------------------------------------------------------------- trials


def _with_seed(plan: Any, seed: int) -> Any:
    """``plan`` with ``algorithm.noise_seed = seed`` (nothing compiled depends on it)."""
    cfg = plan.config
    algo = cfg.algorithm.model_copy(update={"noise_seed": int(seed)})
    return dataclasses.replace(plan, config=cfg.model_copy(update={"algorithm": algo}))


def _released(worker: Any) -> torch.Tensor:
    """The server's model ``[dim]`` (float64), as the algorithm reports it."""
    _, params = worker.outputs()
    return params.reshape(-1).to(torch.float64).clone()


def run_trial(plan: Any, seed: int, device: torch.device) -> tuple[torch.Tensor, Any]:
    """One run of the mechanism with noise seed ``seed``: ``(models [R+1, dim], worker)``.

    The local engine's worker, driven round by round as the round driver
    (:func:`fedopt.engine.driver.run_schedule`) drives it (round, then the barrier at the
    latest clock) for exactly ``stop.rounds`` rounds, without its evaluations: they
    release nothing and took half of a trial's time. ``models[r]`` is the server's
    released ``x_r``; the worker keeps the ledger and the derived constants.
    """
    from fedopt.engine.driver import LocalGroup
    from fedopt.engine.worker import Worker

    trial = _with_seed(plan, seed)
    worker = Worker(trial, np.arange(trial.topology.n), device)
    group = LocalGroup([worker])
    models = [_released(worker)]
    for t in range(int(trial.config.stop.rounds)):
        group.barrier(group.round(t))
        models.append(_released(worker))
    return torch.stack(models), worker


def carrying_rounds(derived: Mapping[str, Any], rounds: int) -> np.ndarray:
    """``[R]`` bool: the rounds whose release carries the canary (module docstring).

    Restart rounds ``r mod T == 0`` when the algorithm has a restart period
    ``period_T`` (DIFF2; ``T = 1`` for DP-GD), every round otherwise (DP-SGD).
    """
    period = derived.get("period_T")
    r = np.arange(rounds)
    if period is None:
        return np.ones(rounds, dtype=bool)
    return r % int(period) == 0


def statistic(models: torch.Tensor, u: torch.Tensor, lr: float, carrying: np.ndarray) -> float:
    """``T = sum_{r carrying} <x_r - x_{r+1}, u> / lr`` from the released ``models``."""
    steps = (models[:-1] - models[1:]) @ u.to(models.dtype)
    mask = torch.from_numpy(carrying[: len(steps)])
    return float(steps[mask].sum()) / lr


def _epsilons(ledger: Any) -> tuple[float, float]:
    """RDP and PLD epsilon of a :class:`~fedopt.privacy.ledger.PrivacyLedger`'s releases."""
    from fedopt.privacy.accountant import epsilon_spent

    parts = ledger.parts()
    return epsilon_spent(parts, ledger.delta, "rdp"), epsilon_spent(parts, ledger.delta, "pld")


@dataclass(frozen=True)
class Worlds:
    """The two compiled worlds of an audit: ``plans[0]`` is ``D`` (canary in)."""

    plans: tuple[Any, Any]
    kind: CanaryKind
    config: Any
    """The user's own validated experiment."""
    compile_s: float


def compile_worlds(
    raw: Mapping[str, Any], settings: AuditSettings, base_dir: Path | None = None
) -> Worlds:
    """Validate and compile the experiment as written (so that its errors read as in
    ``fedopt validate``), then validate and compile ``D`` and ``D'`` once each."""
    from fedopt.config import validate
    from fedopt.engine.compile import compile_plan
    from fedopt.problems import PROBLEMS

    config = validate(dict(raw), base_dir)
    _check_auditable(config.algorithm)
    compile_plan(config, base_dir)  # the user's own experiment first: its own messages
    kind = canary_kind(config.algorithm.name, settings.canary)
    inner = config.problem.inner if config.problem.name == "canary" else config.problem
    dim = PROBLEMS.get(inner.name).param_dim(inner)
    t0 = time.perf_counter()
    plans = tuple(
        compile_plan(validate(_world_raw(raw, problem, settings.noise_scale), base_dir), base_dir)
        for problem in world_problems(raw["problem"], kind, dim)
    )
    return Worlds(plans, kind, config, time.perf_counter() - t0)  # type: ignore[arg-type]


def run_audit(
    raw: Mapping[str, Any],
    settings: AuditSettings | None = None,
    base_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AuditResult:
    """Audit the experiment ``raw`` (a raw experiment mapping, as read from YAML).

    Parameters
    ----------
    raw
        The experiment; its problem gets the canary (or is a ``canary`` already).
    settings
        Trials, canary kind, noise scale, alpha, first seed.
    base_dir
        Folder of the experiment file (plug-ins, graph files).
    progress
        Called with ``(trials done, trials in all)`` after every trial.

    Raises
    ------
    ConfigError
        An algorithm that is not auditable, an infinite epsilon, a canary the problem
        cannot hold, or anything the experiment itself gets refused for.
    """
    from fedopt.engine.local import configure_threads, resolve_device
    from fedopt.problems.canary import unit_direction

    settings = settings or AuditSettings()
    wall0 = time.perf_counter()
    worlds = compile_worlds(raw, settings, base_dir)
    plan = worlds.plans[0]
    cfg = plan.config
    configure_threads(cfg.engine.threads)
    device = resolve_device(cfg.engine.device)
    canary, rounds, lr = cfg.problem, int(cfg.stop.rounds), float(cfg.algorithm.lr)
    n = settings.trials
    stats: tuple[list[float], list[float]] = ([], [])
    ledger: Any = None
    u = carrying = None
    t1 = time.perf_counter()
    for w, world in enumerate(worlds.plans):
        first = settings.seed + w * n  # D: seed .. seed + n - 1, D': the next n
        for seed in range(first, first + n):
            models, worker = run_trial(world, seed, device)
            if u is None:  # the same in every trial of both worlds
                u = unit_direction(canary, models.shape[1])
                carrying = carrying_rounds(worker.derived_constants(), rounds)
                ledger = worker.ctx.ledgers.get("privacy")
            value = statistic(models, u, lr, carrying)
            if not math.isfinite(value):
                raise RunDiverged(
                    f"audit trial with noise_seed {seed}: the released iterates are not "
                    f"finite (x_R = {models[-1].tolist()}); lower algorithm.lr"
                )
            stats[w].append(value)
            if progress is not None:
                progress(w * n + len(stats[w]), 2 * n)
    per_trial = (time.perf_counter() - t1) / (2 * n)
    if ledger is None or carrying is None:
        raise ConfigError(f"algorithm.name: {cfg.algorithm.name!r} keeps no privacy ledger")
    eps_rdp, eps_pld = _epsilons(ledger)
    return AuditResult(
        algorithm=cfg.algorithm.name,
        problem=canary.inner.name,
        canary=worlds.kind,
        node=int(canary.node),
        sample=int(canary.sample),
        rounds=rounds,
        carrying_rounds=int(carrying.sum()),
        trials=n,
        noise_scale=float(settings.noise_scale),
        seed=settings.seed,
        epsilon_target=float(worlds.config.algorithm.epsilon),
        delta=float(ledger.delta),
        epsilon_rdp=eps_rdp,
        epsilon_pld=eps_pld,
        test=threshold_audit(stats[0], stats[1], ledger.delta, settings.alpha),
        seconds_per_trial=per_trial,
        compile_s=worlds.compile_s,
        wall_s=time.perf_counter() - wall0,
        statistics_in=stats[0],
        statistics_out=stats[1],
    )


# ----------------------------------------------------------------------------- report


def format_table(result: AuditResult) -> str:
    """The human-readable report of an audit."""
    t = result.test
    scale = result.noise_scale
    honest = "honest" if scale == 1.0 else "BROKEN: the ledger claims more noise than drawn"
    head = (
        f"privacy audit: {result.algorithm} on {result.problem}, canary {result.canary} "
        f"(node {result.node}, sample {result.sample}), R = {result.rounds} rounds, "
        f"{result.carrying_rounds} carry the canary"
    )
    rows = {
        "trials per world": f"{result.trials} ({result.trials // 2} choose the threshold, "
        f"{t.trials_in} evaluate it)",
        "noise scale": f"{scale:g} ({honest})",
        "accountant epsilon": f"RDP {result.epsilon_rdp:.4g}, PLD {result.epsilon_pld:.4g} "
        f"(delta {result.delta:g}; target {result.epsilon_target:g})",
        "epsilon lower bound": f"{t.epsilon_lb:.4g} (confidence {1 - t.alpha:.0%}; at most "
        f"{t.resolution:.3g} with {t.trials_in} evaluation trials per world)",
        "threshold": f"{t.threshold:.6g} on {STATISTIC}",
        "FPR / FNR": f"{t.fpr:.4g} / {t.fnr:.4g} (upper bounds {t.fpr_upper:.4g} / "
        f"{t.fnr_upper:.4g})",
        "time": f"{result.seconds_per_trial * 1e3:.3g} ms per trial, {result.wall_s:.3g} s in all",
        "verdict": result.verdict,
    }
    width = max(map(len, rows))
    out = [head] + [f"  {k:<{width}}  {v}" for k, v in rows.items()]
    if t.resolution < result.epsilon_accountant and not result.violation:
        out.append(
            f"  note: {result.trials} trials cannot certify an epsilon above "
            f"{t.resolution:.3g}, below the accountant's {result.epsilon_accountant:.3g}; "
            "a violation between the two would go unseen (more --trials)"
        )
    return "\n".join(out)
