"""Performance metrics of a session, pure: no I/O. The definitions are the README's "Metrics" section.

- returns.py: the equity series sampled at period ends (UTC days, or a finer step), its returns and the return
  metrics (total return, CAGR, volatility, Sharpe, Sortino, Calmar, the maximum drawdown);
- trades.py: fills and funding grouped into round trips (flat to flat) and the trade metrics;
- execution.py: what fills cost against the mid at the decision and at the venue's arrival;
- summary.py: all of them for one session (or one of its symbols) over a time window: one metrics row.
"""
