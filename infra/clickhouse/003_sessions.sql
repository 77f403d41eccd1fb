-- Run-time sessions (issue 6): the scores and intel level of decisions, and the `sessions` topic (a session's
-- status after each change). Conventions of 001_init.sql and 002_venue.sql: every statement may run again,
-- new columns go AFTER a named column (the recorder's COLUMNS order), the views of altered tables are re-created,
-- widened value sets get a stored COMMENT.

-- decisions: the risk and opportunity scores and the intel level the decision was made at; `blocked` (a circuit
-- breaker stopped a new entry) and the cancels and amends of a strategy.
ALTER TABLE decisions_log
    COMMENT COLUMN IF EXISTS action 'buy | sell | hold | blocked | reject | cancel | amend',
    -- 0..1: the chance the position's stop-loss is hit within the maximum hold time; NULL when not scored
    ADD COLUMN IF NOT EXISTS risk_score Nullable(Float64) AFTER confidence,
    -- 0..1: the confidence left after costs; NULL when not scored
    ADD COLUMN IF NOT EXISTS opportunity_score Nullable(Float64) AFTER risk_score,
    -- the session's intel level (1 cautious .. 10 aggressive) when it decided; NULL before this migration
    ADD COLUMN IF NOT EXISTS intel Nullable(UInt8) AFTER opportunity_score;
CREATE OR REPLACE VIEW decisions AS SELECT * FROM decisions_log FINAL;

-- sessions: a session's status after each change (started, paused, resumed, reconfigured, stopped, a circuit
-- breaker tripped or reset). A session's current state is its latest row.
CREATE TABLE IF NOT EXISTS sessions_log (
    id       String,
    ts       DateTime64(3, 'UTC'),    -- the engine's event time when the change applied
    session  LowCardinality(String),
    status   LowCardinality(String),  -- running | paused | stopped
    event    String,                  -- what changed: started, paused, circuit breaker tripped: daily_trades, ...
    strategy String,
    intel    UInt8,                   -- 1 (cautious) .. 10 (aggressive)
    breakers String,                  -- JSON object: tripped breaker -> why (read with JSONExtract*)
    config   String                   -- JSON object: the session's whole config after the change
) ENGINE = ReplacingMergeTree ORDER BY (session, ts, id);
CREATE VIEW IF NOT EXISTS sessions AS SELECT * FROM sessions_log FINAL
