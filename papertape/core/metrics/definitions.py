"""What each metric means, in one line: the report's metrics table and `papertape metrics` show these, and the
README's "Metrics" table is checked against them (tests/unit/test_metrics_docs.py)."""
from __future__ import annotations

# kind: how it is shown. percent | ratio | money | time | duration | count
DEFINITIONS: dict[str, tuple[str, str]] = {
    "returns": ("count", "how many returns: periods from the window's start to its last equity point"),
    "start_equity": ("money", "equity at the window's start (the deposit, for a whole session)"),
    "end_equity": ("money", "equity at the window's last equity point"),
    "total_return": ("percent", "end_equity / start_equity - 1"),
    "cagr": ("percent", "(1 + total_return) ^ (periods a year / returns) - 1; a year is 365 days"),
    "volatility": ("percent", "sample standard deviation of the returns x sqrt(periods a year)"),
    "sharpe": ("ratio", "mean return / sample standard deviation x sqrt(periods a year); risk-free rate 0"),
    "sortino": ("ratio", "mean return / sqrt(mean of min(return, 0)^2 over all returns) x sqrt(periods a year)"),
    "calmar": ("ratio", "cagr / |max_drawdown|"),
    "max_drawdown": ("percent", "deepest fall of the sampled equity below its running peak (the start included)"),
    "drawdown_start": ("time", "when the peak before the deepest fall was reached"),
    "drawdown_trough": ("time", "the bottom of the deepest fall"),
    "drawdown_recovery": ("time", "when the equity first got back to that peak (empty: not yet)"),
    "drawdown_ms": ("duration", "peak to recovery, or to the window's end when not recovered"),
    "trades": ("count", "round trips (flat to flat, per symbol) closed in the window"),
    "open_trades": ("count", "round trips still open at the window's end"),
    "win_rate": ("percent", "share of the closed trades whose net P&L (after fees and funding) is > 0"),
    "profit_factor": ("ratio", "sum of winning trades' net P&L / |sum of losing trades' net P&L|"),
    "expectancy": ("money", "average net P&L of a closed trade"),
    "avg_trade_return": ("percent", "average of each closed trade's net P&L / its entry notional"),
    "payoff_ratio": ("ratio", "average winning trade / |average losing trade|"),
    "sqn": ("ratio", "sqrt(trades) x mean / sample standard deviation of the trades' net P&L (Van Tharp)"),
    "best_trade": ("money", "the closed trade with the highest net P&L"),
    "worst_trade": ("money", "the closed trade with the lowest net P&L"),
    "avg_holding_ms": ("duration", "average time from a closed trade's first fill to its last"),
    "exposure": ("percent", "share of the window's time with at least one position open"),
    "trades_per_day": ("ratio", "closed trades / the window's length in days"),
    "fees": ("money", "fees paid by the window's fills (gas, on a DEX)"),
    "funding": ("money", "funding paid in the window (negative: received)"),
    "cost_vs_decision": ("money", "sum of (fill price - mid at the order's decision) x qty, sells negated: "
                                  "what latency and slippage cost"),
    "cost_vs_arrival": ("money", "the same against the mid when the order reached the venue: slippage alone"),
    "cost_vs_decision_bps": ("ratio", "cost_vs_decision / notional at those mids, in basis points"),
    "cost_vs_arrival_bps": ("ratio", "cost_vs_arrival / notional at those mids, in basis points"),
}
