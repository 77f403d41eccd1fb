-- One table per recorded topic. Conventions:
--   * money, prices and quantities are Decimal(38, 18) (exact; at most 20 integer digits);
--   * `ts` is the event time (ms since epoch) as DateTime64(3, 'UTC');
--   * delivery may repeat, so rows go into a ReplacingMergeTree `<name>_log` whose sorting key ends in `id`
--     (a repeated message is an identical copy, so it shares every key column), and users read the view
--     `<name>` = `<name>_log FINAL`, which merges duplicates at query time: counts are exact;
--   * md.ticks (derived from md.events) and md.events watermarks are not recorded.

-- md.events, exploded: one row per trade of a market frame.
CREATE TABLE IF NOT EXISTS md_trades_log (
    id       String,                   -- frame id ':' index of the trade in the frame
    frame_id String,                   -- id of the MarketFrame
    ts       DateTime64(3, 'UTC'),     -- trade time
    venue    LowCardinality(String),
    symbol   LowCardinality(String),
    price    Decimal(38, 18),
    qty      Decimal(38, 18),
    side     LowCardinality(String)    -- aggressor side: buy | sell
) ENGINE = ReplacingMergeTree ORDER BY (symbol, ts, id);
CREATE VIEW IF NOT EXISTS md_trades AS SELECT * FROM md_trades_log FINAL;

-- md.events: top of book after a frame, one row per frame that carries a bid or an ask.
CREATE TABLE IF NOT EXISTS md_quotes_log (
    id      String,                    -- frame id
    ts      DateTime64(3, 'UTC'),
    venue   LowCardinality(String),
    symbol  LowCardinality(String),
    bid     Nullable(Decimal(38, 18)),
    bid_qty Nullable(Decimal(38, 18)),
    ask     Nullable(Decimal(38, 18)),
    ask_qty Nullable(Decimal(38, 18))
) ENGINE = ReplacingMergeTree ORDER BY (symbol, ts, id);
CREATE VIEW IF NOT EXISTS md_quotes AS SELECT * FROM md_quotes_log FINAL;

-- md.marks: conflated latest prices per symbol.
CREATE TABLE IF NOT EXISTS md_marks_log (
    id     String,
    ts     DateTime64(3, 'UTC'),
    symbol LowCardinality(String),
    bid    Nullable(Decimal(38, 18)),
    ask    Nullable(Decimal(38, 18)),
    last   Nullable(Decimal(38, 18)),  -- last trade price
    mark   Decimal(38, 18)             -- price positions are valued at
) ENGINE = ReplacingMergeTree ORDER BY (symbol, ts, id);
CREATE VIEW IF NOT EXISTS md_marks AS SELECT * FROM md_marks_log FINAL;

-- signals: external views on a symbol (target exposure of a session).
CREATE TABLE IF NOT EXISTS signals_log (
    id         String,
    ts         DateTime64(3, 'UTC'),
    session    LowCardinality(String),
    symbol     LowCardinality(String),
    target     LowCardinality(String), -- long | short | flat
    confidence Float64,                -- 0..1, a ratio, not money
    strategy   String,
    reasoning  String
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS signals AS SELECT * FROM signals_log FINAL;

-- orders: order requests into a session; id is the client order id.
CREATE TABLE IF NOT EXISTS orders_log (
    id          String,
    ts          DateTime64(3, 'UTC'),
    session     LowCardinality(String),
    symbol      LowCardinality(String),
    side        LowCardinality(String),  -- buy | sell
    type        LowCardinality(String),  -- market | limit
    qty         Decimal(38, 18),
    price       Nullable(Decimal(38, 18)), -- limit price, NULL for market orders
    tif         LowCardinality(String),  -- GTC | IOC | FOK | PostOnly
    reduce_only Bool
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS orders AS SELECT * FROM orders_log FINAL;

-- order.events: every order state change.
CREATE TABLE IF NOT EXISTS order_events_log (
    id         String,
    ts         DateTime64(3, 'UTC'),
    session    LowCardinality(String),
    order_id   String,
    symbol     LowCardinality(String),
    side       LowCardinality(String),
    type       LowCardinality(String),
    status     LowCardinality(String),  -- new | partially_filled | filled | cancelled | rejected
    qty        Decimal(38, 18),
    price      Nullable(Decimal(38, 18)),
    filled_qty Decimal(38, 18),
    avg_price  Nullable(Decimal(38, 18)), -- average fill price so far
    reason     String                   -- why rejected or cancelled
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS order_events AS SELECT * FROM order_events_log FINAL;

-- fills: executions with fee and realized P&L.
CREATE TABLE IF NOT EXISTS fills_log (
    id           String,
    ts           DateTime64(3, 'UTC'),
    session      LowCardinality(String),
    order_id     String,
    symbol       LowCardinality(String),
    side         LowCardinality(String),
    price        Decimal(38, 18),
    qty          Decimal(38, 18),
    liquidity    LowCardinality(String), -- maker | taker
    fee_rate     Decimal(38, 18),
    fee          Decimal(38, 18),        -- in settle_coin; positive is paid
    realized_pnl Decimal(38, 18),        -- price P&L closed by this fill, before fees
    settle_coin  LowCardinality(String)
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS fills AS SELECT * FROM fills_log FINAL;

-- positions: a session's position in a symbol after each change.
CREATE TABLE IF NOT EXISTS positions_log (
    id             String,
    ts             DateTime64(3, 'UTC'),
    session        LowCardinality(String),
    symbol         LowCardinality(String),
    qty            Decimal(38, 18),          -- signed: long > 0
    avg_price      Nullable(Decimal(38, 18)),
    mark           Nullable(Decimal(38, 18)),
    realized_pnl   Decimal(38, 18),
    unrealized_pnl Decimal(38, 18)
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS positions AS SELECT * FROM positions_log FINAL;

-- equity: account snapshots in event time.
CREATE TABLE IF NOT EXISTS equity_log (
    id             String,
    ts             DateTime64(3, 'UTC'),
    session        LowCardinality(String),
    cash           Decimal(38, 18),  -- deposits + realized P&L - fees
    equity         Decimal(38, 18),  -- cash + unrealized P&L at the mark
    realized_pnl   Decimal(38, 18),
    unrealized_pnl Decimal(38, 18),
    fees           Decimal(38, 18),
    open_positions UInt32
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS equity AS SELECT * FROM equity_log FINAL;

-- decisions: every trade or no-trade decision, with reasons.
CREATE TABLE IF NOT EXISTS decisions_log (
    id         String,
    ts         DateTime64(3, 'UTC'),
    session    LowCardinality(String),
    symbol     LowCardinality(String),
    action     LowCardinality(String),  -- buy | sell | hold | reject
    reasoning  String,
    confidence Float64,                 -- 0..1
    features   String,                  -- JSON object (read with JSONExtract*)
    order_id   Nullable(String)
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS decisions AS SELECT * FROM decisions_log FINAL;

-- alerts: alerts sent to the relay.
CREATE TABLE IF NOT EXISTS alerts_log (
    id       String,
    ts       DateTime64(3, 'UTC'),
    severity LowCardinality(String),  -- info | warning | error | critical
    source   String,
    title    String,
    text     String,
    session  Nullable(String)
) ENGINE = ReplacingMergeTree ORDER BY (ts, id);
CREATE VIEW IF NOT EXISTS alerts AS SELECT * FROM alerts_log FINAL;

-- control: session start, stop, pause, resume, config commands.
CREATE TABLE IF NOT EXISTS control_log (
    id      String,
    ts      DateTime64(3, 'UTC'),
    session LowCardinality(String),
    command LowCardinality(String),
    config  String                   -- JSON object
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS control AS SELECT * FROM control_log FINAL;

-- errors.dlq: messages an agent refused, with the reason.
CREATE TABLE IF NOT EXISTS dead_letters_log (
    id        String,
    ts        DateTime64(3, 'UTC'),
    topic     LowCardinality(String),  -- where the refused message was read
    partition Int32,
    offset    Int64,
    key       Nullable(String),
    error     String,
    payload   String                   -- the refused bytes as text, cut to a few KiB
) ENGINE = ReplacingMergeTree ORDER BY (ts, id);
CREATE VIEW IF NOT EXISTS dead_letters AS SELECT * FROM dead_letters_log FINAL
