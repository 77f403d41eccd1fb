"""The two numbers every entry decision carries.

risk score: the chance that the position's stop-loss is hit within the maximum hold time, if prices move as a
  driftless random walk with the symbol's recent volatility. By the reflection principle that is
  2 * Phi(-d / (sigma * sqrt(T))) = erfc(d / (sigma * sqrt(2 T))), with d the stop distance (log), sigma the
  volatility per bar and T the hold time in bars. Without a stop-loss, d is the distance at which the margin is
  gone (1 / leverage); without a maximum hold, T is one day.
opportunity score: the signal's confidence times the share of the target move (take-profit, else the stop
  distance) left after costs: a round trip of taker fees and the current spread.
"""
from __future__ import annotations

import math

DAY_MS = 86_400_000


def risk_score(sigma_per_bar: float, bar_ms: int, stop_distance: float, hold_ms: int | None) -> float:
    horizon = (hold_ms or DAY_MS) / bar_ms
    if sigma_per_bar <= 0:
        return 0.0
    d = -math.log(1 - stop_distance) if stop_distance < 1 else math.inf
    return round(math.erfc(d / (sigma_per_bar * math.sqrt(2 * horizon))), 6)


def opportunity_score(confidence: float, target_move: float, taker_fee: float, spread: float) -> float:
    if target_move <= 0:
        return 0.0
    left = 1 - (2 * taker_fee + spread) / target_move
    return round(min(1.0, max(0.0, confidence * left)), 6)
