-- Issue 18: sessions on an exchange (Bybit's demo, testnet or mainnet). Conventions of 001_init.sql and 002_venue.sql.

-- fills: where each was executed.
ALTER TABLE fills_log ADD COLUMN IF NOT EXISTS venue LowCardinality(String) DEFAULT 'paper' AFTER exec_type;  -- paper | dex | bybit_demo | bybit_testnet | bybit_mainnet
DROP VIEW IF EXISTS fills;
CREATE VIEW IF NOT EXISTS fills AS SELECT * FROM fills_log FINAL;

-- shadow.fills: the paper venue's simulation of each exchange order, on the same market data (columns of fills).
CREATE TABLE IF NOT EXISTS shadow_fills_log AS fills_log;
CREATE VIEW IF NOT EXISTS shadow_fills AS SELECT * FROM shadow_fills_log FINAL;

-- venue.requests: what sessions asked of their exchange (new, cancel, amend, snapshot); the message as JSON in body.
CREATE TABLE IF NOT EXISTS venue_requests_log (
    id       String,
    ts       DateTime64(3, 'UTC'),
    session  LowCardinality(String),
    venue    LowCardinality(String),
    action   LowCardinality(String),  -- new | cancel | amend | snapshot
    order_id String,
    body     String
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS venue_requests AS SELECT * FROM venue_requests_log FINAL;

-- venue.reports: what the exchange said (order updates, executions, refusals, snapshots); the message as JSON in body.
CREATE TABLE IF NOT EXISTS venue_reports_log (
    id         String,
    ts         DateTime64(3, 'UTC'),
    session    LowCardinality(String),
    venue      LowCardinality(String),
    request    String,                  -- the request it answers (a snapshot's check, a refused request)
    snapshot   Bool,
    orders     UInt32,
    executions UInt32,
    refused    String,
    body       String
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS venue_reports AS SELECT * FROM venue_reports_log FINAL;

-- reconciliation: each check of a session against its exchange: one row of difference 'none' counting what was
-- compared, and one row per difference.
CREATE TABLE IF NOT EXISTS reconciliation_log (
    id         String,
    ts         DateTime64(3, 'UTC'),
    session    LowCardinality(String),
    check      String,
    difference LowCardinality(String),  -- none | unknown_order | missed_fill | order_state | position | balance
    symbol     Nullable(String),
    order_id   Nullable(String),
    papertape  String,                  -- what papertape had
    exchange   String,                  -- what the exchange had
    adopted    String                   -- what papertape did: booked, the exchange's state, cancelled, left alone
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS reconciliation AS SELECT * FROM reconciliation_log FINAL;

-- Per exchange order: its fills on the exchange beside the paper venue's simulation of it. price_error_bps: the
-- paper average price's distance from the exchange's, in basis points, signed so that positive means paper was
-- better for the order's side (paid less on a buy, got more on a sell) than the exchange really gave.
CREATE VIEW IF NOT EXISTS shadow_comparison AS
WITH ex AS (
    SELECT session AS e_session, order_id AS e_order, any(symbol) AS e_symbol, any(side) AS e_side,
           any(venue) AS e_venue, sum(qty) AS e_qty,
           toDecimal128(sum(toDecimal256(price, 18) * qty) / sum(qty), 18) AS e_price, sum(fee) AS e_fee,
           min(ts) AS e_ts,
           multiIf(countIf(liquidity = 'maker') = count(), 'maker', countIf(liquidity = 'taker') = count(), 'taker',
                   'mixed') AS e_liquidity
    FROM fills WHERE venue LIKE 'bybit%' GROUP BY session, order_id
), sh AS (
    SELECT session AS s_session, order_id AS s_order, sum(qty) AS s_qty,
           toDecimal128(sum(toDecimal256(price, 18) * qty) / sum(qty), 18) AS s_price, sum(fee) AS s_fee,
           min(ts) AS s_ts,
           multiIf(countIf(liquidity = 'maker') = count(), 'maker', countIf(liquidity = 'taker') = count(), 'taker',
                   'mixed') AS s_liquidity
    FROM shadow_fills GROUP BY session, order_id
), types AS (
    SELECT session AS t_session, order_id AS t_order, any(type) AS t_type FROM order_events GROUP BY session, order_id
)
SELECT e_session AS session, e_order AS order_id, e_symbol AS symbol, e_side AS side, t_type AS type,
       e_venue AS venue, e_qty AS exchange_qty, s_qty AS paper_qty, e_price AS exchange_price, s_price AS paper_price,
       e_fee AS exchange_fee, s_fee AS paper_fee, e_liquidity AS exchange_liquidity, s_liquidity AS paper_liquidity,
       e_ts AS exchange_ts, s_ts AS paper_ts,
       if(s_qty > 0, toUnixTimestamp64Milli(s_ts) - toUnixTimestamp64Milli(e_ts), NULL) AS paper_delay_ms,
       if(s_qty > 0, if(e_side = 'buy', 1, -1) * toFloat64(e_price - s_price) / toFloat64(e_price) * 10000,
          NULL) AS price_error_bps
FROM ex
LEFT JOIN sh ON s_session = e_session AND s_order = e_order
LEFT JOIN types ON t_session = e_session AND t_order = e_order
SETTINGS join_use_nulls = 1;
