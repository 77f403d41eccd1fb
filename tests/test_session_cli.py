"""`papertape session ...`: key=value parsing, validation before sending, the controls sent (to a fake and to the
real embedded broker), the recorder's rows of the new messages, and list/show on a real chdb archive."""
from __future__ import annotations

import asyncio
import json
from decimal import Decimal as D

import pytest
from aiokafka import AIOKafkaConsumer

import schemas as s
from infra.broker import ensure_topics
from infra.tansu import EmbeddedTansu
from infra.clickhouse import MIGRATIONS_DIR, connect, migrate, split_statements
from papertape import session_cli
from papertape.cli import main
from papertape.session_cli import CliError, parse_assignments, parse_value
from streams.recorder import COLUMNS, rows_for

TS = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC


@pytest.fixture
def no_env(monkeypatch):
    for name in ("KAFKA_BOOTSTRAP", "CLICKHOUSE_URL", "PAPERTAPE_DATA", "PAPERTAPE_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sent(monkeypatch, no_env):
    """Controls the CLI would send, with the broker it would send them to (nothing is sent)."""
    calls: list[tuple[str, s.Control]] = []

    async def fake(bootstrap, ctrl, timeout=30.0, names=s.Namespace()):
        calls.append((bootstrap, ctrl))

    monkeypatch.setattr(session_cli, "send_control", fake)
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "kafka.example:9092")
    return calls


# --- key=value ---------------------------------------------------------------------------------------------

def test_values_are_json_when_they_parse_else_text():
    assert parse_value("3") == 3
    assert parse_value("0.05") == 0.05
    assert parse_value("true") is True
    assert parse_value("null") is None
    assert parse_value('["BTCUSDT", "ETHUSDT"]') == ["BTCUSDT", "ETHUSDT"]
    assert parse_value('{"BTCUSDT": 20}') == {"BTCUSDT": 20}
    assert parse_value("ema_cross") == "ema_cross"
    assert parse_value("00:30") == "00:30"
    assert parse_value("") == ""
    assert parse_value("NaN") == "NaN"  # not a float: no config takes NaN


def test_dotted_keys_make_nested_dicts():
    assert parse_assignments(["intel=7", "risk.max_daily_trades=3", "risk.daily_loss_limit=0.02",
                              "auto_close.max_hold_ms=null", "params.fast=5", "strategy=ema_cross",
                              "a.b.c=x=y"]) == {
        "intel": 7, "risk": {"max_daily_trades": 3, "daily_loss_limit": 0.02}, "auto_close": {"max_hold_ms": None},
        "params": {"fast": 5}, "strategy": "ema_cross", "a": {"b": {"c": "x=y"}}}
    assert parse_assignments([]) == {}
    for bad, why in ((["intel"], "expected key=value"), (["=3"], "expected key=value"),
                     (["risk..x=1"], "expected key=value"), (["intel=1", "intel=2"], "intel is set twice"),
                     (["risk=1", "risk.x=2"], "risk is already set"), (["risk.x=1", "risk=2"], "risk is set twice")):
        with pytest.raises(CliError, match=why):
            parse_assignments(bad)


# --- the recorder's rows of the new messages -----------------------------------------------------------------

def decision(n: int, session: str = "rt", **kw) -> s.Decision:
    fields = {"symbol": "BTCUSDT", "action": "buy", "reasoning": f"decision {n}", "confidence": 0.75,
              "risk_score": 0.125, "opportunity_score": 0.5, "intel": 7} | kw
    return s.Decision(id=f"{session}-{n}:d", ts=TS + 1000 * n, session=session, **fields)


def status(n: int, ts: int, state: str, event: str, breakers: dict | None = None, intel: int = 7) -> s.SessionStatus:
    return s.SessionStatus(id=f"rt:status:{n}", ts=ts, session="rt", status=state, event=event,
                           strategy="ema_cross", intel=intel, breakers=breakers or {},
                           config={"id": "rt", "intel": intel, "risk": {"max_daily_trades": 3},
                                   "balance": "5000"})


def test_recorder_rows_of_a_decision_and_a_session_status():
    d = decision(1, features={"ema_fast": 61000.5, "spread_bps": 1.2}, order_id="rt-1")
    assert rows_for("decisions", d) == [("decisions_log", (
        "rt-1:d", TS + 1000, "rt", "BTCUSDT", "buy", "decision 1", 0.75, 0.125, 0.5, 7,
        '{"ema_fast":61000.5,"spread_bps":1.2}', "rt-1"))]
    unscored = s.Decision(id="x", ts=TS, session="rt", symbol="BTCUSDT", action="blocked")
    assert rows_for("decisions", unscored) == [("decisions_log", (
        "x", TS, "rt", "BTCUSDT", "blocked", "", 0.0, None, None, None, "{}", None))]
    st = status(3, TS, "running", "circuit breaker tripped: daily_trades",
                {"daily_trades": "3 orders today (limit 3)", "consecutive_failures": "5 rejected in a row"})
    assert rows_for("sessions", st) == [("sessions_log", (
        "rt:status:3", TS, "rt", "running", "circuit breaker tripped: daily_trades", "ema_cross", 7,
        '{"consecutive_failures":"5 rejected in a row","daily_trades":"3 orders today (limit 3)"}',
        '{"balance":"5000","id":"rt","intel":7,"risk":{"max_daily_trades":3}}'))]
    for table, row in rows_for("decisions", d) + rows_for("sessions", st):
        assert len(row) == len(COLUMNS[table])


def test_migration_003_upgrades_an_archive_of_002(tmp_path):
    """A data directory made by 001 and 002: 003 adds the decision columns (an old decision reads NULL) and the
    sessions table, the views show them, and every 003 statement can run again."""
    before = tmp_path / "migrations"
    before.mkdir()
    for name in ("001_init.sql", "002_venue.sql"):
        (before / name).write_text((MIGRATIONS_DIR / name).read_text())
    client = connect(None, tmp_path)
    try:
        assert migrate(client, before) == [1, 2]
        old_columns = [c for c in COLUMNS["decisions_log"] if c not in ("risk_score", "opportunity_score", "intel")]
        client.insert("decisions_log", [("d0", TS, "old", "BTCUSDT", "hold", "flat", 0.25, "{}", None)],
                      column_names=old_columns)
        assert migrate(client) == [3]
        for statement in split_statements((MIGRATIONS_DIR / "003_sessions.sql").read_text()):
            client.command(statement)  # a partly applied 003 runs again from its top
        assert migrate(client) == []
        for table in ("decisions_log", "sessions_log"):
            for name in (table, table.removesuffix("_log")):
                assert tuple(r[0] for r in client.query(f"DESCRIBE TABLE {name}").result_rows) == COLUMNS[table]
        new = rows_for("decisions", decision(1)) + rows_for("sessions", status(1, TS, "running", "started"))
        for table, row in new:
            client.insert(table, [row], column_names=list(COLUMNS[table]))
        assert client.query("SELECT id, confidence, risk_score, opportunity_score, intel FROM decisions ORDER BY id"
                            ).result_rows == [("d0", 0.25, None, None, None), ("rt-1:d", 0.75, 0.125, 0.5, 7)]
        assert client.query("SELECT session, status, intel, JSONExtractInt(config, 'risk', 'max_daily_trades') "
                            "FROM sessions").result_rows == [("rt", "running", 7, 3)]
        comment = client.query("SELECT comment FROM system.columns WHERE database = currentDatabase() "
                               "AND table = 'decisions_log' AND name = 'action'").result_rows[0][0]
        assert comment == "buy | sell | hold | blocked | reject | cancel | amend"
    finally:
        client.close()


# --- start, stop, pause, resume, config ---------------------------------------------------------------------

def test_start_refuses_a_bad_config_without_sending(sent, tmp_path, capsys):
    cases = [
        (["--intel", "11"], "intel: Input should be less than or equal to 10"),
        (["--set", "risk.max_daily_trades=0"], "risk.max_daily_trades: Input should be greater than or equal to 1"),
        (["--set", "colour=blue"], "colour: Extra inputs are not permitted"),
        (["--strategy", "no_such_strategy"], "unknown strategy 'no_such_strategy'"),
        (["--strategy", "ema_cross", "--param", "fast=oops"], "strategy 'ema_cross': bad parameters"),
        (["--param", "fast=30", "--param", "slow=20"], "trend_following needs 0 < fast < slow"),
        (["--balance", "-5"], "balance: Input should be greater than 0"),
        (["--config", str(tmp_path / "missing.toml")], "cannot read"),
    ]
    for extra, message in cases:
        assert main(["session", "start", "rt", "--data-dir", str(tmp_path), *extra]) == 1, extra
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (extra, err)
    assert main(["session", "start", "bad id!", "--data-dir", str(tmp_path)]) == 1
    assert "bad session id" in capsys.readouterr().err
    assert sent == []


def test_start_sends_the_config_from_file_options_params_and_sets(sent, tmp_path, capsys):
    settings = tmp_path / "settings.toml"
    settings.write_text('md_partitions = 2\n\n[[sessions]]\nid = "other"\nstrategy = "mean_reversion"\n\n'
                        '[[sessions]]\nid = "rt"\nstrategy = "ema_cross"\nbalance = 2000\n'
                        'params = { fast = 5, slow = 20 }\nrisk = { max_daily_trades = 10, min_balance = 50 }\n')
    assert main(["session", "start", "rt", "--data-dir", str(tmp_path), "--config", str(settings), "--intel", "3",
                 "--balance", "5000.5", "--symbols", "BTCUSDT", "ETHUSDT", "--param", "fast=3",
                 "--set", "risk.max_daily_trades=4", "--set", "auto_close.max_hold_ms=null"]) == 0
    [(bootstrap, ctrl)] = sent
    assert bootstrap == "kafka.example:9092"
    assert ctrl.session == "rt" and ctrl.command == "start" and ctrl.id.startswith("cli:") and len(ctrl.id) == 36
    assert ctrl.config == {"strategy": "ema_cross", "balance": "5000.5", "intel": 3, "symbols": ["BTCUSDT", "ETHUSDT"],
                           "params": {"fast": 3, "slow": 20}, "risk": {"max_daily_trades": 4, "min_balance": 50},
                           "auto_close": {"max_hold_ms": None}}
    assert "start sent to session rt" in capsys.readouterr().out
    # a file of one session's fields is a template: its id is replaced
    one = tmp_path / "one.toml"
    one.write_text('id = "template"\nstrategy = "mean_reversion"\nintel = 2\n')
    assert main(["session", "start", "rt2", "--data-dir", str(tmp_path), "--config", str(one)]) == 0
    assert sent[-1][1].session == "rt2" and sent[-1][1].config == {"strategy": "mean_reversion", "intel": 2}
    assert main(["session", "start", "rt3", "--data-dir", str(tmp_path), "--config", str(settings)]) == 1
    assert "no [[sessions]] entry with id 'rt3' (ids: other, rt)" in capsys.readouterr().err
    assert len(sent) == 2


def test_stop_pause_resume_and_config_send_controls(sent, tmp_path, capsys):
    for command in ("pause", "resume", "stop"):
        assert main(["session", command, "rt", "--data-dir", str(tmp_path)]) == 0
        assert (sent[-1][1].command, sent[-1][1].session, sent[-1][1].config) == (command, "rt", {})
    assert main(["session", "config", "rt", "--data-dir", str(tmp_path), "intel=8", "risk.max_daily_trades=3",
                 'symbols=["BTCUSDT"]', "params.fast=4"]) == 0
    assert sent[-1][1].command == "config"
    assert sent[-1][1].config == {"intel": 8, "risk": {"max_daily_trades": 3}, "symbols": ["BTCUSDT"],
                                  "params": {"fast": 4}}
    ids = {ctrl.id for _, ctrl in sent}
    assert len(ids) == 4  # every control has its own id
    for changes, message in ((["balance=1"], "cannot change balance"), (["risk.max_daily_trades=x"], "valid integer"),
                             (["intel=11"], "intel: Input should be less than or equal to 10"),
                             (["venue=dex", "intel=2"], "cannot change venue")):
        assert main(["session", "config", "rt", "--data-dir", str(tmp_path), *changes]) == 1
        assert message in capsys.readouterr().err
    assert len(sent) == 4


def test_without_a_run_or_kafka_bootstrap_exit_2(no_env, tmp_path, capsys):
    assert main(["session", "pause", "rt", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no run in progress" in err and "KAFKA_BOOTSTRAP" in err


def test_start_reaches_the_embedded_broker(no_env, tmp_path, monkeypatch, capsys):
    """The control as a consumer of `control` reads it: keyed by session, with the schema's JSON (Tansu has no
    idempotent producer: the CLI's producer must not ask for one)."""

    async def read(bootstrap: str) -> list:
        consumer = AIOKafkaConsumer("control", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=100)
        await consumer.start()
        try:
            got = await consumer.getmany(timeout_ms=5000)
            return [(r.key, s.decode("control", r.value)) for records in got.values() for r in records]
        finally:
            await consumer.stop()

    with EmbeddedTansu(tmp_path / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, s.partition_counts(1, 2)))
        monkeypatch.setenv("KAFKA_BOOTSTRAP", broker.bootstrap)
        assert main(["session", "start", "rt", "--data-dir", str(tmp_path), "--intel", "2"]) == 0
        [(key, ctrl)] = asyncio.run(read(broker.bootstrap))
    assert key == b"rt" and ctrl.command == "start" and ctrl.config == {"intel": 2}
    assert f"({ctrl.id} on {broker.bootstrap})" in capsys.readouterr().out


# --- list and show on a real archive --------------------------------------------------------------------------

def equity(session: str, ts: int, value: str, cash: str, open_positions: int = 0) -> s.Equity:
    return s.Equity(id=f"{session}:eq:{ts}", ts=ts, session=session, cash=D(cash), equity=D(value),
                    realized_pnl=D(0), unrealized_pnl=D(value) - D(cash), fees=D("1.5"), open_positions=open_positions)


def position(session: str, n: int, ts: int, symbol: str, qty: str) -> s.Position:
    return s.Position(id=f"{session}-{n}:o:f{n}:p", ts=ts, session=session, symbol=symbol, qty=D(qty),
                      avg_price=D("61000.5") if D(qty) else None, mark=D("61010"), realized_pnl=D(0),
                      unrealized_pnl=D(0))


def fill(session: str, n: int) -> s.Fill:
    return s.Fill(id=f"{session}-{n}:o:f{n}", ts=TS + n, session=session, order_id=f"{session}-{n}:o",
                  symbol="BTCUSDT", side="buy", price=D("61000.5"), qty=D("0.01"), liquidity="taker",
                  fee_rate=D("0.00055"), fee=D("0.33550275"), realized_pnl=D(0))


def archive(tmp_path) -> None:
    """Two sessions: `rt` started at run time (status rows, with two changes in one event time: the later has
    the higher number, `:status:10` after `:status:9`), and `old` from a run before sessions (equity only)."""
    client = connect(None, tmp_path)
    try:
        migrate(client)
        messages = [
            ("sessions", status(8, TS, "running", "started")),
            ("sessions", status(9, TS + 60_000, "running", "circuit breaker tripped: daily_trades",
                                {"daily_trades": "3 orders today (limit 3)"})),
            ("sessions", status(10, TS + 60_000, "paused", "paused: no new entries",
                                {"daily_trades": "3 orders today (limit 3)"}, intel=8)),
            ("equity", equity("rt", TS, "5000", "5000")),
            ("equity", equity("rt", TS + 60_000, "5012.25", "4998.5", 1)),
            ("equity", equity("old", TS + 30_000, "10000", "10000")),
            ("equity", equity("old", TS + 90_000, "9990.123456789", "9990.123456789")),
            # positions: BTCUSDT open after two fills in one event time (f10 after f9), ETHUSDT closed
            ("positions", position("rt", 9, TS + 5000, "BTCUSDT", "0.5")),
            ("positions", position("rt", 10, TS + 5000, "BTCUSDT", "0.01")),
            ("positions", position("rt", 11, TS + 6000, "ETHUSDT", "1")),
            ("positions", position("rt", 12, TS + 7000, "ETHUSDT", "0")),
            ("fills", fill("rt", 1)), ("fills", fill("rt", 2)), ("fills", fill("old", 1)),
            *[("decisions", decision(n)) for n in range(1, 13)],
            ("decisions", decision(13, action="blocked", reasoning="circuit breaker: daily_trades", confidence=0.9,
                                   risk_score=None, opportunity_score=None)),
        ]
        for topic, message in messages:
            for table, row in rows_for(topic, message):
                client.insert(table, [row], column_names=list(COLUMNS[table]))
    finally:
        client.close()  # the CLI opens the data directory itself


def test_list_and_show_read_the_archive(no_env, tmp_path, capsys):
    archive(tmp_path)
    assert main(["session", "list", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["session", "status", "strategy", "intel", "equity", "cash", "open_positions", "fills",
                                "decisions", "breakers", "as_of"]
    assert lines[2].split() == ["old", "NULL", "NULL", "NULL", "9990.12345679", "9990.12345679", "0", "1", "0",
                                "2024-08-09", "00:01:30.000"]
    assert lines[3].split() == ["rt", "paused", "ema_cross", "8", "5012.25000000", "4998.50000000", "1", "2", "13",
                                "daily_trades", "2024-08-09", "00:01:00.000"]
    assert lines[-1] == "(2 rows)"

    assert main(["session", "list", "--data-dir", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)  # as `papertape sql --json` prints a result
    assert [dict(zip(listed["columns"], row)) for row in listed["rows"]] == [
        {"session": "old", "status": None, "strategy": None, "intel": None, "equity": "9990.123456789",
         "cash": "9990.123456789", "open_positions": 0, "fills": 1, "decisions": 0, "breakers": [],
         "as_of": "2024-08-09 00:01:30.000"},
        {"session": "rt", "status": "paused", "strategy": "ema_cross", "intel": 8, "equity": "5012.25",
         "cash": "4998.5", "open_positions": 1, "fills": 2, "decisions": 13, "breakers": ["daily_trades"],
         "as_of": "2024-08-09 00:01:00.000"}]
    assert len(listed["types"]) == len(listed["columns"])

    assert main(["session", "show", "rt", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].split() == ["rt", "paused", "paused:", "no", "new", "entries", "ema_cross", "8",
                                           "5012.25000000", "4998.50000000", "1.50000000", "2024-08-09",
                                           "00:01:00.000"]
    assert "  daily_trades: 3 orders today (limit 3)" in out
    assert '"max_daily_trades": 3' in out  # the config, pretty
    positions = out.split("positions:\n")[1].split("\n\n")[0].splitlines()
    assert positions[2].split() == ["BTCUSDT", "0.01", "61000.5", "61010", "0.00000000", "0.00000000", "2024-08-09",
                                    "00:00:05.000"]
    assert positions[-1] == "(1 row)"  # ETHUSDT is closed
    decisions = out.split("last decisions:\n")[1].splitlines()
    assert len(decisions) == 2 + 10 + 1  # the last 10, oldest first
    assert decisions[2].split()[:7] == ["2024-08-09", "00:00:04.000", "BTCUSDT", "buy", "0.75", "0.125", "0.5"]
    assert decisions[11].split()[:7] == ["2024-08-09", "00:00:13.000", "BTCUSDT", "blocked", "0.9", "NULL", "NULL"]

    assert main(["session", "show", "old", "--data-dir", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] is None and shown["config"] is None and shown["positions"] == []
    assert shown["equity"]["equity"] == "9990.123456789"
    assert main(["session", "show", "rt", "--data-dir", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"]["status"] == "paused" and shown["status"]["intel"] == 8
    assert shown["breakers"] == {"daily_trades": "3 orders today (limit 3)"}
    assert shown["config"]["risk"] == {"max_daily_trades": 3}
    assert [d["reasoning"] for d in shown["decisions"]] == [f"decision {n}" for n in range(4, 13)] + [
        "circuit breaker: daily_trades"]
    assert main(["session", "show", "nobody", "--data-dir", str(tmp_path)]) == 1
    assert "no session 'nobody' in the history" in capsys.readouterr().err


def test_list_without_history(no_env, tmp_path, capsys):
    assert main(["session", "list", "--data-dir", str(tmp_path / "none")]) == 1
    assert "no history in" in capsys.readouterr().err
