"""The session's strategy, fed in event time: the bars it asked for (and their volatility, which sizing reads)
and, if it wants them, every tick."""
from __future__ import annotations

import schemas as s
from papertape.core.market.bars import BarBuilder, Volatility
from papertape.core.strategy import Intent, Strategy


class StrategyFailed(Exception):
    """The strategy raised `error`."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class StrategyRunner:
    def __init__(self, strategy: Strategy) -> None:
        self.use(strategy)

    def use(self, strategy: Strategy) -> None:
        """Run `strategy` from now on, with new bars of its `bar_ms`."""
        self.strategy = strategy
        self.bars = BarBuilder(strategy.bar_ms)
        self.vol = Volatility(strategy.bar_ms)
        self._wants_ticks = strategy.wants_ticks()

    def intents(self, tick: s.Tick, running: bool) -> list[Intent]:
        """The tick goes into the bars; when the strategy runs, its intents on the bar the tick closed and, if it
        wants ticks, on the tick. Raises StrategyFailed when the strategy raised."""
        bar = self.bars.on_tick(tick)
        intents: list[Intent] = []
        try:
            if bar is not None:
                self.vol.on_bar(bar)
                if running:
                    intents = list(self.strategy.on_bar(bar))
            if self._wants_ticks and running:
                intents += self.strategy.on_tick(tick)
        except Exception as exc:  # the strategy's bug pauses its session only, the same way on every replay
            raise StrategyFailed(exc) from exc
        return intents
