"""Canary rollout: which robots run a new version before the fleet does, and when the evidence says enough.

A version that passed the gate goes first to a share of the fleet under the registry alias `canary`; every
other robot stays on `production`. The share is a `Cohort`: named robots, plus every robot whose stable hash
(salted with the canary's version, so each rollout draws its own robots) falls below a threshold. Robots decide
membership themselves from the cohort written on the canary version (`Cohort.to_tags`), so no roster has to reach
them and a robot that joins mid-rollout lands on the same side every time it asks.

`compare` is the live A/B: canary and production episodes from the same window, one metric at a time, each with
an *always-valid* confidence sequence for the difference (canary minus production). The difference is taken within
each stratum (task x embodiment) both sides ran and averaged with the canary's mix of strata as weights: a canary
that happens to hold the fleet's easier arm is not read as a better version. It is the mixture sequential
probability ratio test (mSPRT; Johari, Pekelis & Walsh, "Always valid inference", 2017) on the normal approximation
of the difference of means: its interval may be looked at after every episode and still holds with probability
1 - alpha over the whole rollout, so stopping the moment it excludes zero carries no peeking bias. `decide` turns the
intervals into promote / roll back / keep going, with the numbers behind it for the audit.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

CANARY = "canary"  # the registry alias a canary version sits under while it runs
COHORT_TAG = "canary_cohort"  # the model-version tag that says which robots run it (JSON, `Cohort.to_tags`)
MAX_TAG_CHARS = 5000  # MLflow's limit on a tag value: a longer named list is refused up front


def _unit(salt: str, robot_id: str) -> float:
    """A robot's stable position in [0, 1) for this salt (sha256, not Python's per-process `hash`)."""
    digest = hashlib.sha256(f"{salt}\x00{robot_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Cohort:
    """The robots that run the canary version."""

    salt: str  # the canary's version number: each rollout draws its own share of robots
    threshold: float = 0.0  # robots whose `_unit(salt, id)` is below this are in (0 = none by hash)
    robots: tuple[str, ...] = ()  # named robots, always in
    fraction: float = 0.0  # the share asked for (what `threshold` was chosen to give; shown, not used to decide)

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0 or not 0.0 <= self.fraction <= 1.0:
            raise ValueError("Cohort: threshold and fraction must be in [0, 1]")
        if self.threshold == 0.0 and not self.robots:
            raise ValueError("Cohort: name robots or give a fraction above 0; an empty canary tests nothing")
        if len(json.dumps(asdict(self))) > MAX_TAG_CHARS:
            raise ValueError(f"Cohort: {len(self.robots)} named robots do not fit a registry tag; use a fraction")

    @classmethod
    def for_fleet(
        cls, salt: str, *, fraction: float = 0.0, robots: Sequence[str] = (), known: Iterable[str] = ()
    ) -> Cohort:
        """A cohort of `fraction` of the `known` robots (rounded, at least one when the fraction is above 0) plus the
        named `robots`. The threshold sits halfway between the last robot in and the first robot out, so exactly
        that many known robots are in, and a robot that joins later is in with probability about `fraction`."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"canary fraction must be in [0, 1], got {fraction}")
        named = tuple(dict.fromkeys(robots))
        pool = sorted((_unit(salt, r), r) for r in set(known) - set(named))
        if fraction == 0.0 or not pool:  # no known robots: each one is in with probability `fraction`
            threshold = fraction
        else:
            take = min(len(pool), max(1, round(fraction * len(pool))))
            below = pool[take - 1][0]
            threshold = (below + pool[take][0]) / 2 if take < len(pool) else 1.0
        return cls(salt=salt, threshold=threshold, robots=named, fraction=fraction)

    def includes(self, robot_id: str) -> bool:
        return robot_id in self.robots or _unit(self.salt, robot_id) < self.threshold

    def to_tags(self) -> dict[str, str]:
        return {COHORT_TAG: json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Cohort | None:
        """The cohort written on a version, None when it has none or it does not parse (a robot then stays on
        production: a canary it cannot read is a canary it does not join)."""
        raw = tags.get(COHORT_TAG)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(
                salt=str(data["salt"]),
                threshold=float(data.get("threshold", 0.0)),
                robots=tuple(str(r) for r in data.get("robots", ())),
                fraction=float(data.get("fraction", 0.0)),
            )
        except (ValueError, KeyError, TypeError):
            return None


# ---- the live A/B -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One per-episode figure compared between the arms."""

    name: str
    better: Literal["higher", "lower"]  # which direction is an improvement
    tau: float  # the mixture's scale: the size of difference the test is tuned to find quickly
    prior_var: float  # variance of one pseudo-episode in each arm's estimate: 5 equal episodes are not certainty
    # "decides": worse rolls back, better promotes; "guards": worse rolls back (a safety signal), better promotes
    # nothing (a canary that misses fewer ticks is not a better policy for it); "reports": shown only.
    role: Literal["decides", "guards", "reports"] = "decides"

    @property
    def tested(self) -> bool:
        """Whether the metric can end a rollout (and so takes a share of `alpha`)."""
        return self.role != "reports"


METRICS: tuple[Metric, ...] = (
    Metric("autonomous_success", "higher", tau=0.10, prior_var=0.25),
    Metric("interventions", "lower", tau=1.0, prior_var=4.0),
    Metric("missed_ticks", "lower", tau=1.0, prior_var=4.0, role="guards"),
    Metric("length", "lower", tau=10.0, prior_var=100.0, role="reports"),
)


@dataclass(frozen=True)
class EpisodeOutcome:
    """What the A/B needs of one finished episode."""

    version: str
    success: bool
    interventions: int  # steps a human drove
    length: int  # steps
    stratum: str = ""  # what makes episodes comparable: "<task>/<embodiment>"
    missed_ticks: int = 0  # control ticks that overran their deadline during the episode

    @property
    def autonomous_success(self) -> float:
        return float(self.success and self.interventions == 0)

    def value(self, metric: str) -> float:
        return {"autonomous_success": self.autonomous_success, "interventions": float(self.interventions),
                "missed_ticks": float(self.missed_ticks), "length": float(self.length)}[metric]  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    """Canary minus production on one metric, with its always-valid interval."""

    metric: str
    canary_mean: float
    production_mean: float
    canary_n: int
    production_n: int
    diff: float
    lo: float
    hi: float
    verdict: Literal["better", "worse", "unclear"]  # for the canary, taking `Metric.better` into account


def _mean_var(values: Sequence[float], prior_var: float) -> tuple[float, float]:
    """Mean and the variance of one observation, shrunk towards `prior_var` by one pseudo-observation."""
    n = len(values)
    mean = sum(values) / n
    ss = sum((v - mean) ** 2 for v in values)
    return mean, (ss + prior_var) / n


def confidence_radius(se2: float, *, tau: float, alpha: float) -> float:
    """Half-width of the mSPRT confidence sequence for a difference whose estimate has variance `se2`.

    With a normal mixture N(0, tau^2) over the true difference, the likelihood ratio of the estimate d against a
    difference d0 is sqrt(se2 / (se2 + tau^2)) * exp((d - d0)^2 tau^2 / (2 se2 (se2 + tau^2))); the interval is every
    d0 where it stays below 1/alpha (Ville's inequality makes that hold at every sample size at once).
    """
    total = se2 + tau * tau
    return math.sqrt(2 * se2 * total / (tau * tau) * (math.log(1 / alpha) + 0.5 * math.log(total / se2)))


def compare_metric(
    metric: Metric,
    canary: Sequence[tuple[str, float]],
    production: Sequence[tuple[str, float]],
    *,
    alpha: float,
) -> Comparison | None:
    """The comparison on one metric from (stratum, value) pairs; None while no stratum has episodes on both sides.

    Per stratum s both sides ran: means and shrunk variances; the estimate is sum_s w_s (canary_s - production_s)
    with w_s the canary's share of its episodes in s, its variance sum_s w_s^2 (var_c,s / n_c,s + var_p,s / n_p,s).
    The means reported are both sides' stratum means under the canary's weights.
    """
    by_side: list[dict[str, list[float]]] = [{}, {}]
    for side, pairs in enumerate((canary, production)):
        for stratum, value in pairs:
            by_side[side].setdefault(stratum, []).append(value)
    shared = sorted(set(by_side[0]) & set(by_side[1]))
    if not shared:
        return None
    n_canary = sum(len(by_side[0][s]) for s in shared)
    mc = mp = se2 = 0.0
    for stratum in shared:
        weight = len(by_side[0][stratum]) / n_canary
        (cm, cv), (pm, pv) = (_mean_var(side[stratum], metric.prior_var) for side in by_side)
        mc, mp = mc + weight * cm, mp + weight * pm
        se2 += weight * weight * (cv / len(by_side[0][stratum]) + pv / len(by_side[1][stratum]))
    diff = mc - mp
    radius = confidence_radius(se2, tau=metric.tau, alpha=alpha)
    lo, hi = diff - radius, diff + radius
    higher_is_better = metric.better == "higher"
    verdict: Literal["better", "worse", "unclear"] = "unclear"
    if lo > 0:
        verdict = "better" if higher_is_better else "worse"
    elif hi < 0:
        verdict = "worse" if higher_is_better else "better"
    n_production = sum(len(by_side[1][s]) for s in shared)
    return Comparison(metric.name, mc, mp, n_canary, n_production, diff, lo, hi, verdict)


@dataclass(frozen=True)
class CanaryPolicy:
    """When the controller decides on its own."""

    alpha: float = 0.05  # chance over a whole rollout that a decision is wrong when the versions are the same
    min_episodes: int = 20  # per arm before any statistical decision (safety signals act earlier)
    max_episodes: int = 400  # canary episodes after which an undecided rollout ends (`on_inconclusive`)
    # Undecided at `max_episodes` (nothing better, nothing worse): "promote" (the version passed the gate and the
    # fleet showed no harm); "non_inferior" promotes only when the canary's success interval lies above -`margin`
    # (no worse than production by more than that) and rolls back otherwise; "rollback" always rolls back; "wait"
    # keeps it running. "non_inferior" asks more than 400 canary episodes can show: the always-valid interval is still
    # about +-0.07 wide there, so it rolls back most versions exactly as good as production, each a false rollback.
    on_inconclusive: Literal["promote", "non_inferior", "rollback", "wait"] = "promote"
    margin: float = 0.05
    # Safety: roll back at once when this many canary robots report an error (a refused checkpoint, a fault),
    # whatever the statistics say; the caller counts them from heartbeats.
    max_errors: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError("CanaryPolicy.alpha must be in (0, 1)")
        if self.min_episodes < 1 or self.max_episodes < self.min_episodes:
            raise ValueError("CanaryPolicy: 1 <= min_episodes <= max_episodes")
        if self.margin < 0 or self.max_errors < 1:
            raise ValueError("CanaryPolicy: margin >= 0 and max_errors >= 1")


@dataclass(frozen=True)
class Decision:
    """What the A/B says now, with the numbers behind it (audited with the decision)."""

    action: Literal["promote", "rollback", "continue"]
    reason: str
    comparisons: list[Comparison] = field(default_factory=list)
    at_budget: bool = False  # ended by `CanaryPolicy.max_episodes` with nothing decided, not by a verdict or safety

    def details(self) -> dict[str, object]:
        return {"action": self.action, "reason": self.reason, "comparisons": [asdict(c) for c in self.comparisons]}


def compare(
    episodes: Iterable[EpisodeOutcome], *, canary_version: str, production_version: str, alpha: float = 0.05
) -> list[Comparison]:
    """Every metric of `METRICS` for the episodes of the two versions (others are ignored). The metrics that can
    end a rollout share `alpha` (Bonferroni), so the chance that any of them flags a difference between equal
    versions stays below it."""
    by_version: dict[str, list[EpisodeOutcome]] = {canary_version: [], production_version: []}
    for episode in episodes:
        if episode.version in by_version:
            by_version[episode.version].append(episode)
    tested = sum(m.tested for m in METRICS)
    found = (
        compare_metric(
            m,
            [(e.stratum, e.value(m.name)) for e in by_version[canary_version]],
            [(e.stratum, e.value(m.name)) for e in by_version[production_version]],
            alpha=alpha / tested,
        )  # fmt: skip
        for m in METRICS
    )
    return [c for c in found if c is not None]


def decide(comparisons: Sequence[Comparison], policy: CanaryPolicy, *, errors: int = 0) -> Decision:
    """Promote, roll back or keep going. A safety signal wins (robots reporting errors; a guard metric, missed
    ticks, worse); then any deciding metric that got worse rolls back (a regression on one is not bought by a gain
    on another); then a gain with nothing worse promotes."""
    if errors >= policy.max_errors:
        return Decision("rollback", f"safety: {errors} canary robot(s) report an error", list(comparisons))
    roles = {m.name: m.role for m in METRICS}
    decisive = [c for c in comparisons if roles.get(c.metric) == "decides"]
    n_canary = min((c.canary_n for c in decisive), default=0)
    n_production = min((c.production_n for c in decisive), default=0)
    if min(n_canary, n_production) < policy.min_episodes:
        return Decision(
            "continue", f"{n_canary} canary / {n_production} production episodes, {policy.min_episodes} needed",
            list(comparisons),
        )  # fmt: skip
    guards = [c.metric for c in comparisons if roles.get(c.metric) == "guards" and c.verdict == "worse"]
    if guards:
        return Decision("rollback", f"safety: canary worse on {', '.join(guards)}", list(comparisons))
    worse = [c.metric for c in decisive if c.verdict == "worse"]
    if worse:
        return Decision("rollback", f"regression: canary worse on {', '.join(worse)}", list(comparisons))
    better = [c.metric for c in decisive if c.verdict == "better"]
    if better:
        return Decision("promote", f"canary better on {', '.join(better)}", list(comparisons))
    if n_canary >= policy.max_episodes and policy.on_inconclusive != "wait":
        if policy.on_inconclusive == "promote":
            return Decision(
                "promote", f"nothing worse after {n_canary} canary episodes", list(comparisons), at_budget=True
            )
        success = next((c for c in decisive if c.metric == "autonomous_success"), None)
        if policy.on_inconclusive == "non_inferior" and success is not None and success.lo > -policy.margin:
            return Decision(
                "promote", f"no difference after {n_canary} episodes; success within {policy.margin} of production",
                list(comparisons), at_budget=True,
            )  # fmt: skip
        return Decision(
            "rollback", f"no gain shown after {n_canary} canary episodes", list(comparisons), at_budget=True
        )
    return Decision("continue", "no difference yet", list(comparisons))
