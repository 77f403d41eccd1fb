-- Issue 17: alerts have a type; acknowledgements and what each channel made of each alert (topic alerts.status).
ALTER TABLE alerts_log ADD COLUMN IF NOT EXISTS type LowCardinality(String) DEFAULT 'system';  -- price | performance | trading | error | system
DROP VIEW IF EXISTS alerts;  -- a view's * was expanded when it was made: again, with the new column
CREATE VIEW IF NOT EXISTS alerts AS SELECT * FROM alerts_log FINAL;

CREATE TABLE IF NOT EXISTS alert_acks_log (
    id       String,
    ts       DateTime64(3, 'UTC'),
    alert_id String,
    by       String
) ENGINE = ReplacingMergeTree ORDER BY (alert_id, id);
CREATE VIEW IF NOT EXISTS alert_acks AS SELECT * FROM alert_acks_log FINAL;

CREATE TABLE IF NOT EXISTS alert_deliveries_log (
    id       String,
    ts       DateTime64(3, 'UTC'),
    alert_id String,
    channel  LowCardinality(String),
    outcome  LowCardinality(String),  -- sent | refused | failed
    attempts UInt32,
    detail   String
) ENGINE = ReplacingMergeTree ORDER BY (alert_id, channel, id);
CREATE VIEW IF NOT EXISTS alert_deliveries AS SELECT * FROM alert_deliveries_log FINAL;
