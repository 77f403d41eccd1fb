"""The intel slider: one number, 1 (cautious) to 10 (aggressive), that sets a session's risk appetite.

Each level gives the defaults of four settings; a session config that sets one of them explicitly wins.
Level 5 is the seeds' default bot: at most 25% of equity per position, 40% minimum confidence.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class IntelLevel:
    level: int
    position_fraction: Decimal  # notional of a new position, as a share of equity
    min_confidence: float  # a signal below it is held, not traded
    leverage: Decimal  # perpetual margin leverage (capped by each instrument's maximum)
    risk_tolerance: float  # the highest risk score (chance of the stop-loss being hit) a new entry may have


def _level(n: int, fraction: str, confidence: float, leverage: int, tolerance: float) -> IntelLevel:
    return IntelLevel(n, Decimal(fraction), confidence, Decimal(leverage), tolerance)


INTEL_LEVELS: dict[int, IntelLevel] = {lv.level: lv for lv in (
    _level(1, "0.05", 0.80, 1, 0.05),
    _level(2, "0.10", 0.70, 2, 0.10),
    _level(3, "0.15", 0.60, 3, 0.15),
    _level(4, "0.20", 0.50, 5, 0.20),
    _level(5, "0.25", 0.40, 10, 0.30),
    _level(6, "0.30", 0.35, 15, 0.40),
    _level(7, "0.40", 0.30, 20, 0.50),
    _level(8, "0.50", 0.25, 25, 0.65),
    _level(9, "0.75", 0.20, 50, 0.80),
    _level(10, "1.00", 0.10, 100, 1.00),
)}
