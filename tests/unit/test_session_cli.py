"""`papertape session ...`: key=value parsing, validation before sending, the controls sent (to a fake) and the
recorder's rows of the new messages. On a real broker and archive: tests/integration/test_session_archive.py."""
from __future__ import annotations

import pytest

import schemas as s
from builders import TS, decision, status
from papertape.app import sessions as session_cli
from papertape.app.cli import main
from papertape.app.sessions import CliError, parse_assignments, parse_value
from streams.sinks.rows import COLUMNS, rows_for


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


