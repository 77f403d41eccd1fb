-- Venue features: conditional orders (stop, take-profit, trailing stop, OCO, brackets, expiry), cancels and
-- amends on `orders`, liquidations, funding. Conventions of 001_init.sql, and:
--   * every statement may run again (IF [NOT] EXISTS, OR REPLACE): a partly applied file restarts from its top;
--   * new columns go AFTER a named column, so tables list their columns in the recorder's COLUMNS order;
--     rows written before this migration read the column's DEFAULT (NULL for a Nullable one);
--   * a view keeps the column list it was created with (its `SELECT *` is not expanded again), so the views of
--     altered tables are re-created to show the new columns;
--   * columns whose value sets widened get a stored COMMENT with the new set (see DESCRIBE or system.columns).

-- orders (kind order): conditional orders.
--   type:  market | limit | stop_market | stop_limit | take_profit_market | take_profit_limit | trailing_stop
--   price: limit price of limit, stop_limit and take_profit_limit; NULL for the others
ALTER TABLE orders_log
    COMMENT COLUMN IF EXISTS type
        'market | limit | stop_market | stop_limit | take_profit_market | take_profit_limit | trailing_stop',
    COMMENT COLUMN IF EXISTS price 'limit price of limit, stop_limit and take_profit_limit; NULL for the others',
    -- stop and take-profit orders trigger when the trigger_by price reaches it; NULL for the others
    ADD COLUMN IF NOT EXISTS trigger_price Nullable(Decimal(38, 18)) AFTER reduce_only,
    ADD COLUMN IF NOT EXISTS trigger_by LowCardinality(String) DEFAULT 'last' AFTER trigger_price,  -- last | mark
    -- trailing_stop: distance behind the best price, as an amount or in percent (0..100); NULL for the others
    ADD COLUMN IF NOT EXISTS trail_amount Nullable(Decimal(38, 18)) AFTER trigger_by,
    ADD COLUMN IF NOT EXISTS trail_percent Nullable(Decimal(38, 18)) AFTER trail_amount,
    -- trailing_stop: trails once the price reaches it (NULL: at once)
    ADD COLUMN IF NOT EXISTS activation_price Nullable(Decimal(38, 18)) AFTER trail_percent,
    -- good till this event time, then expired; NULL: until cancelled
    ADD COLUMN IF NOT EXISTS expire_ts Nullable(DateTime64(3, 'UTC')) AFTER activation_price,
    ADD COLUMN IF NOT EXISTS oco Nullable(String) AFTER expire_ts,  -- one-cancels-other group
    -- bracket on an entry: trigger prices of the reduce-only stop_market and take_profit_market (an OCO pair)
    -- placed for the filled quantity once the entry is done
    ADD COLUMN IF NOT EXISTS stop_loss Nullable(Decimal(38, 18)) AFTER oco,
    ADD COLUMN IF NOT EXISTS take_profit Nullable(Decimal(38, 18)) AFTER stop_loss;
CREATE OR REPLACE VIEW orders AS SELECT * FROM orders_log FINAL;

-- order.events: the new types and statuses, and the trigger price.
--   status: new | partially_filled | filled | cancelled | rejected | triggered | expired | amended
ALTER TABLE order_events_log
    COMMENT COLUMN IF EXISTS type
        'market | limit | stop_market | stop_limit | take_profit_market | take_profit_limit | trailing_stop',
    COMMENT COLUMN IF EXISTS status
        'new | partially_filled | filled | cancelled | rejected | triggered | expired | amended',
    COMMENT COLUMN IF EXISTS reason 'why rejected, cancelled, expired or amended',
    -- of stop and take-profit orders; NULL for the others
    ADD COLUMN IF NOT EXISTS trigger_price Nullable(Decimal(38, 18)) AFTER price;
CREATE OR REPLACE VIEW order_events AS SELECT * FROM order_events_log FINAL;

-- fills: liquidations.
ALTER TABLE fills_log
    ADD COLUMN IF NOT EXISTS exec_type LowCardinality(String) DEFAULT 'trade' AFTER settle_coin;  -- trade | liquidation
CREATE OR REPLACE VIEW fills AS SELECT * FROM fills_log FINAL;

-- equity: funding (cash now includes it).
ALTER TABLE equity_log
    COMMENT COLUMN IF EXISTS cash 'wallet balance: deposits + realized P&L - fees + funding',
    ADD COLUMN IF NOT EXISTS funding Decimal(38, 18) DEFAULT 0 AFTER fees;  -- net funding received (negative: paid)
CREATE OR REPLACE VIEW equity AS SELECT * FROM equity_log FINAL;

-- funding: funding settlements of perpetual positions, at the symbol's funding time.
CREATE TABLE IF NOT EXISTS funding_log (
    id          String,
    ts          DateTime64(3, 'UTC'),    -- funding time
    session     LowCardinality(String),
    symbol      LowCardinality(String),
    rate        Decimal(38, 18),         -- positive: longs pay shorts
    mark        Decimal(38, 18),         -- price the position is valued at
    qty         Decimal(38, 18),         -- signed position at the funding time: long > 0
    amount      Decimal(38, 18),         -- added to the wallet, in settle_coin: negative when paid
    settle_coin LowCardinality(String)
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS funding AS SELECT * FROM funding_log FINAL;

-- orders (kind cancel | amend): requests to change an open order of a session; id is the request's id.
CREATE TABLE IF NOT EXISTS order_changes_log (
    id            String,
    ts            DateTime64(3, 'UTC'),
    session       LowCardinality(String),
    kind          LowCardinality(String),     -- cancel | amend
    order_id      String,                     -- client order id of the order to change
    qty           Nullable(Decimal(38, 18)),  -- amend: new quantity; NULL when unchanged and for a cancel
    price         Nullable(Decimal(38, 18)),  -- amend: new limit price; NULL when unchanged and for a cancel
    trigger_price Nullable(Decimal(38, 18))   -- amend: new trigger price; NULL when unchanged and for a cancel
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS order_changes AS SELECT * FROM order_changes_log FINAL
