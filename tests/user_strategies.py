"""A user's own strategy, outside the papertape package: sessions load it by dotted path
(`strategy = "user_strategies:EnterAt"` with this directory on PYTHONPATH)."""
from papertape.core.strategy import Strategy, Target


class EnterAt(Strategy):
    """Goes long `symbol` once, on the first bar that closes at or after `at` (event time, ms)."""

    def __init__(self, at: int, symbol: str = "BTCUSDT", bar_ms: int = 60_000) -> None:
        self.at, self.symbol, self.bar_ms = at, symbol, bar_ms
        self.done = False

    def on_bar(self, bar):
        if self.done or bar.symbol != self.symbol or bar.ts < self.at:
            return []
        self.done = True
        return [Target(self.symbol, "long", 1.0, f"enter once at {self.at}")]

    def to_dict(self) -> dict:
        return {"done": self.done}

    def load(self, state: dict) -> None:
        self.done = state["done"]
