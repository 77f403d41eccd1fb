"""The built-in strategies, and building a session's strategy by name (the interface: papertape.core.strategy)."""
from __future__ import annotations

import importlib
from typing import Any

from papertape.core.strategies.mean_reversion import MeanReversion
from papertape.core.strategies.scripted import Scripted
from papertape.core.strategies.trend_following import TrendFollowing
from papertape.core.strategy import Strategy


def builtins() -> dict[str, type[Strategy]]:
    return {"trend_following": TrendFollowing, "ema_cross": TrendFollowing, "mean_reversion": MeanReversion,
            "scripted": Scripted}


def make_strategy(name: str, params: dict[str, Any]) -> Strategy:
    """A built-in by name, or a user's class by dotted path (`package.module:Class` or `package.module.Class`)."""
    cls = builtins().get(name)
    if cls is None:
        module, _, attr = name.replace(":", ".").rpartition(".")
        if not module:
            raise ValueError(f"unknown strategy {name!r}; built-ins: {', '.join(builtins())}")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot load strategy {name!r}: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise ValueError(f"strategy {name!r} is not a papertape.core.strategy.Strategy subclass")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"strategy {name!r}: bad parameters: {exc}") from None
