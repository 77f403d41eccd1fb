-- Performance metrics (issue 16): one row per session, symbol and period, the latest computed from the archive
-- (papertape.core.metrics, definitions in the README's "Metrics"). Conventions of 001_init.sql, except the engine:
-- a row is replaced by a later computation of the same key, so `version` (how many equity, fill and funding rows
-- of the session it was computed from) decides, and of equal versions the last inserted wins. Read the view
-- `metrics` (FINAL). Money is Decimal(38, 18), ratios Float64 (NULL: not defined, e.g. a Sharpe of one return).
CREATE TABLE IF NOT EXISTS metrics_log (
    session              LowCardinality(String),
    strategy             LowCardinality(String),
    symbol               LowCardinality(String),    -- '' for the whole account; else that symbol's trades
    period_ms            UInt64,                    -- of the returns: 86400000 (UTC days) or the finer step
    version              UInt64,
    from_ts              DateTime64(3, 'UTC'),      -- the window (from_ts, to_ts]
    to_ts                DateTime64(3, 'UTC'),
    returns              Nullable(UInt32),          -- how many returns (periods)
    start_equity         Nullable(Decimal(38, 18)),
    end_equity           Nullable(Decimal(38, 18)),
    total_return         Nullable(Float64),         -- end / start - 1
    cagr                 Nullable(Float64),         -- (1 + total_return) ^ (periods a year / returns) - 1
    volatility           Nullable(Float64),         -- sample stdev of returns * sqrt(periods a year)
    sharpe               Nullable(Float64),         -- mean / sample stdev * sqrt(periods a year), risk-free 0
    sortino              Nullable(Float64),         -- mean / sqrt(mean of min(r, 0)^2) * sqrt(periods a year)
    calmar               Nullable(Float64),         -- cagr / |max_drawdown|
    max_drawdown         Nullable(Float64),         -- deepest fall below a running peak (-0.12 = 12 %)
    drawdown_start       Nullable(DateTime64(3, 'UTC')),  -- the peak
    drawdown_trough      Nullable(DateTime64(3, 'UTC')),
    drawdown_recovery    Nullable(DateTime64(3, 'UTC')),  -- back at the peak; NULL: not yet
    drawdown_ms          Nullable(Int64),           -- peak to recovery (or to the window's end)
    trades               UInt32,                    -- round trips closed in the window
    open_trades          UInt32,
    win_rate             Nullable(Float64),
    profit_factor        Nullable(Float64),
    expectancy           Nullable(Decimal(38, 18)), -- average net P&L of a trade
    avg_trade_return     Nullable(Float64),         -- average of a trade's net P&L / its entry notional
    payoff_ratio         Nullable(Float64),
    sqn                  Nullable(Float64),
    best_trade           Nullable(Decimal(38, 18)),
    worst_trade          Nullable(Decimal(38, 18)),
    avg_holding_ms       Nullable(Float64),
    exposure             Nullable(Float64),         -- share of the window with a position open
    trades_per_day       Nullable(Float64),
    fees                 Decimal(38, 18),           -- paid
    funding              Decimal(38, 18),           -- paid (negative: received)
    cost_vs_decision     Nullable(Decimal(38, 18)), -- fills against the mid at the decision: positive is a cost
    cost_vs_arrival      Nullable(Decimal(38, 18)), -- against the mid when the order reached the venue; NULL: no quote
    cost_vs_decision_bps Nullable(Float64),
    cost_vs_arrival_bps  Nullable(Float64)
) ENGINE = ReplacingMergeTree(version) ORDER BY (session, symbol, period_ms);
CREATE VIEW IF NOT EXISTS metrics AS SELECT * FROM metrics_log FINAL
