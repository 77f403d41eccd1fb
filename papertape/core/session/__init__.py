"""One paper-trading session: its account, venue and strategy, driven tick by tick in event time.

`Session` (facade.py) is what the engine drives. It builds its parts in one step, each with one job:

- control.py: start, pause, resume, stop and reconfigure the session (a failing strategy pauses it)
- timers.py: what falls due in event time: funding, the risk day's start, max hold, equity snapshots
- strategy_runner.py: the strategy fed with its bars (and ticks), and the bars' volatility
- sizing.py: a strategy's or a signal's intent sized, scored, checked and traded toward (or why not)
- gate.py: whether an order may go: instrument limits, cash, status and circuit breakers, margin at the venue
- placement.py: orders on the venue, and what becomes of them (the venue's outcomes as messages)
- ledger.py: the venue's executions booked into the account
- messages.py: every message the session publishes
- state.py, market_view.py: what the parts share: config, status and order numbers; the account at the books
"""
from papertape.core.session.facade import Session
from papertape.core.session.placement import External

__all__ = ["External", "Session"]
