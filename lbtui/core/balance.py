"""The two balance figures of the problem statement, per pool: imbalance L and overload M.

- **L** = Σᵢ |rᵢ − r̄ᵢ| over the pool's *eligible* backends, r̄ᵢ = (Σ r) · wᵢ / Σ w with w the
  effective weights (equal shares when every weight is 0). A backend that is out (not active,
  down by health checks, ejected, draining, breaker open) takes no share, so it is not counted
  as missed share: killing one of four backends leaves L near 0 while the other three share
  its traffic evenly. 0 = the eligible backends carry exactly their weighted shares.
- **M** = #{eligible i : demandᵢ > R_maxᵢ}: demand is what the backend carried plus what the
  algorithm picked it for and its cap refused (the data plane counts those refusals). Since the
  cap is enforced, the carried rate never exceeds R_max for long; the demand does.

Pure: the figures come in as numbers (rates over the "now" window of ``lbtui.core.window``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    """One backend of a pool, as the balance figures see it."""

    rate: float
    """Requests per second it carries now (rᵢ)."""
    weight: float
    """Effective weight (after slow start and admin state)."""
    eligible: bool
    """Takes new requests now: active, up, not ejected, breaker not open."""
    demand: float = 0.0
    """``rate`` plus the picks its cap refused, per second."""
    max_rps: float | None = None
    admitting: bool | None = None
    """Active and breaker not open: what counts while the pool panics (health and ejection
    are ignored then, as the pick ignores them). ``None``: the same as ``eligible``."""

    def counts(self, panic: bool = False) -> bool:
        """Whether it is one of the backends L and M are computed over."""
        if panic and self.admitting is not None:
            return self.admitting
        return self.eligible


def imbalance(rates: Sequence[float], weights: Sequence[float]) -> float:
    """L = Σᵢ |rᵢ − r̄ᵢ| where r̄ᵢ = (Σ r) · wᵢ / Σ w (equal shares when Σ w = 0)."""
    total = sum(rates)
    wsum = sum(weights)
    n = len(rates)
    if not n:
        return 0.0
    if wsum > 0:
        return sum(abs(r - total * w / wsum) for r, w in zip(rates, weights, strict=True))
    return sum(abs(r - total / n) for r in rates)


def pool_imbalance(members: Sequence[Member], panic: bool = False) -> float:
    """L over the eligible ``members`` (those ``counts(panic)``)."""
    live = [m for m in members if m.counts(panic)]
    return imbalance([m.rate for m in live], [m.weight for m in live])


def overloaded(m: Member) -> bool:
    """Its demand exceeds its cap."""
    return m.max_rps is not None and m.demand > m.max_rps


def pool_overload(members: Sequence[Member], panic: bool = False) -> int:
    """M: eligible ``members`` whose demand exceeds their cap."""
    return sum(1 for m in members if m.counts(panic) and overloaded(m))
