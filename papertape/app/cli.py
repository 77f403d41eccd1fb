"""The `papertape` command line.

A command imports the layers it runs inside its handler: the pipeline (Faust, aiokafka, chdb) and the live
sources (pybit) take about 0.7 s to import, which `papertape session pause` or `papertape sql` should not pay.
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from infra.archive import Archive, NoHistory
from infra.sql_endpoint import running
from papertape.app.formatting import for_display, format_table, money
from papertape.config import Settings, load_settings, run_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="papertape", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline on the embedded defaults (or a config file)")
    run.add_argument("--config", type=Path, help="TOML settings file")
    run.add_argument("--data-dir", type=Path)
    run.add_argument("--replay", type=Path, nargs="+", help="tapes to replay (default: the bundled recording)")
    run.add_argument("--speed", type=float, help="0 = as fast as possible (default), N = N x real time")
    run.add_argument("--seconds", type=float, dest="replay_seconds", help="replay only the first N seconds")
    run.add_argument("--fresh", action="store_true", help="delete the data directory first")
    run.add_argument("--broker", choices=["kafka", "tansu"],
                     help="the embedded broker: Apache Kafka (default; needs Java 17+) or Tansu")
    run.add_argument("--live", action="store_true", help="trade on Bybit's live public streams instead of a tape")
    run.add_argument("--record", type=Path, help="with --live: also record what arrives to this tape")
    run.add_argument("--for", type=float, dest="live_seconds", help="with --live: stop after N seconds")
    run.add_argument("--tokens", action="store_true", help="with --live: also price the DEX tokens from CoinGecko")
    run.add_argument("--coingecko-url", help="CoinGecko API base URL (default: api.coingecko.com)")
    run.add_argument("--mainnet", action="store_true",
                     help="allow sessions on Bybit mainnet (real money; also needs [bybit_trading] allow_mainnet)")
    _universe_args(run)

    record = sub.add_parser("record", help="record Bybit's live public streams to a tape")
    record.add_argument("out", type=Path, help="the tape to write (gzip)")
    record.add_argument("--config", type=Path)
    record.add_argument("--data-dir", type=Path)
    record.add_argument("--seconds", type=float, help="stop after N seconds")
    record.add_argument("--max-mb", type=float, help="stop when the tape reaches N MB")
    _universe_args(record)

    instruments = sub.add_parser("instruments", help="the Bybit universe the filters select (cached)")
    instruments.add_argument("--config", type=Path)
    instruments.add_argument("--data-dir", type=Path)
    instruments.add_argument("--json", action="store_true")
    _universe_args(instruments)

    worker = sub.add_parser("worker", help="run the Faust worker (every agent)")
    worker.add_argument("--settings-json", type=Path)
    worker.add_argument("--config", type=Path)
    worker.add_argument("--tansu", action="store_true", help="the broker is Tansu: apply its fixes")
    worker.add_argument("--index", type=int, help="set by `papertape run` for its I-th worker: metrics at "
                                                  "prometheus/worker-I.json, on the Prometheus port + I + 1")

    recorder = sub.add_parser("recorder", help="record every topic into ClickHouse and relay alerts")
    recorder.add_argument("--config", type=Path)
    recorder.add_argument("--data-dir", type=Path)

    relay = sub.add_parser("relay", help="deliver alerts (and fills, as trading alerts) to the configured channels: "
                                         "the relay alone, restartable (with [alerts] relay = \"external\")")
    relay.add_argument("--config", type=Path, help="TOML settings with [alerts] (default: the running run's)")
    relay.add_argument("--data-dir", type=Path, help="the run whose broker to use (its run.json), else KAFKA_BOOTSTRAP")

    sql = sub.add_parser("sql", help="query the history in ClickHouse")
    sql.add_argument("query")
    sql.add_argument("--data-dir", type=Path)
    sql.add_argument("--json", action="store_true", help="print JSON instead of a table")

    status = sub.add_parser("status", help="is a run in progress; sessions with their equity")
    status.add_argument("--data-dir", type=Path)

    audit = sub.add_parser("audit", help="recompute fees, realized P&L, funding and cash from ClickHouse; "
                                          "exit 1 on any mismatch")
    audit.add_argument("--data-dir", type=Path)
    audit.add_argument("--session", help="only this session")
    audit.add_argument("--json", action="store_true", help="print JSON instead of tables")
    audit.add_argument("--config", type=Path, help="TOML settings with the sessions' deposits (default: the run's)")

    metrics = sub.add_parser("metrics", help="performance metrics of each session (Sharpe, drawdown, trades, costs"
                                             "...) over the whole run or a window")
    metrics.add_argument("--data-dir", type=Path)
    metrics.add_argument("--config", type=Path, help="TOML settings ([metrics] step_ms)")
    metrics.add_argument("--session", action="append", help="only this session (repeatable)")
    metrics.add_argument("--from", dest="from_", metavar="TIME", help="window start (ISO 8601 UTC, or ms), exclusive")
    metrics.add_argument("--to", metavar="TIME", help="window end, inclusive")
    metrics.add_argument("--json", action="store_true", help="print JSON instead of tables")

    export = sub.add_parser("export", help="write fills, orders, order events, positions, equity, decisions and "
                                           "metrics to CSV or Parquet files")
    export.add_argument("out", type=Path, help="the directory to write into (one file per table)")
    export.add_argument("--format", choices=["csv", "parquet"], default="csv")
    export.add_argument("--tables", nargs="+", metavar="TABLE", help="only these (default: all of them)")
    export.add_argument("--session", action="append", help="only this session (repeatable)")
    export.add_argument("--from", dest="from_", metavar="TIME", help="window start (ISO 8601 UTC, or ms), exclusive")
    export.add_argument("--to", metavar="TIME", help="window end, inclusive")
    export.add_argument("--data-dir", type=Path)
    export.add_argument("--config", type=Path, help="TOML settings ([metrics] step_ms)")

    report = sub.add_parser("report", help="one self-contained HTML report of the run's sessions (opens offline)")
    report.add_argument("--out", type=Path, default=Path("papertape-report.html"))
    report.add_argument("--session", action="append", help="only this session (repeatable)")
    report.add_argument("--from", dest="from_", metavar="TIME", help="window start (ISO 8601 UTC, or ms), exclusive")
    report.add_argument("--to", metavar="TIME", help="window end, inclusive")
    report.add_argument("--compare", nargs=2, action="append", metavar=("A", "B"),
                        help="add papertape compare's section for runs A and B (repeatable)")
    report.add_argument("--data-dir", type=Path)
    report.add_argument("--config", type=Path, help="TOML settings ([metrics] step_ms)")

    compare = sub.add_parser("compare", help="two runs of a strategy side by side: trades matched, the P&L "
                                             "difference decomposed (slippage, timing, size, fees, funding...)")
    compare.add_argument("a", metavar="A", help="SESSION or SESSION@DATA_DIR")
    compare.add_argument("b", metavar="B", nargs="?", help="SESSION or SESSION@DATA_DIR")
    compare.add_argument("--shadow", action="store_true",
                         help="A alone: a session on Bybit against the paper venue's simulation of each of its orders "
                              "(the paper model's error in bps and ticks per order type and symbol)")
    compare.add_argument("--tolerance", type=float, default=60.0,
                         help="seconds between two trades' openings that still match them (default 60)")
    compare.add_argument("--data-dir", type=Path, help="where A and B are when they name no data directory")
    compare.add_argument("--config", type=Path)
    compare.add_argument("--json", action="store_true")

    api = sub.add_parser("api", help="the HTTP API and the dashboard (on 127.0.0.1:8000 by default)")
    api.add_argument("--config", type=Path)
    api.add_argument("--data-dir", type=Path)
    api.add_argument("--host", help="address to listen on (beyond loopback only with a token)")
    api.add_argument("--port", type=int)
    api.add_argument("--token-file", type=Path, help="the bearer token in a file (or PAPERTAPE_API_TOKEN)")

    alerts = sub.add_parser("alerts", help="list and acknowledge alerts")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True)
    alerts_list = alerts_sub.add_parser("list", help="alerts newest first, with their acknowledgement and deliveries")
    alerts_list.add_argument("--severity", action="append", choices=["info", "warning", "error", "critical"])
    alerts_list.add_argument("--type", action="append", choices=["price", "performance", "trading", "error", "system"])
    alerts_list.add_argument("--session")
    alerts_list.add_argument("--unacknowledged", action="store_true")
    alerts_list.add_argument("--limit", type=int, default=50)
    alerts_list.add_argument("--json", action="store_true")
    alerts_list.add_argument("--data-dir", type=Path)
    alerts_ack = alerts_sub.add_parser("ack", help="acknowledge alerts by id")
    alerts_ack.add_argument("ids", nargs="+", metavar="ID")
    alerts_ack.add_argument("--by", default="cli", help="who acknowledges (default: cli)")
    alerts_ack.add_argument("--data-dir", type=Path)

    demo = sub.add_parser("demo", help="Bybit demo money: fund the demo account, show its balance (keys from "
                                       "BYBIT_API_KEY / BYBIT_API_SECRET or [bybit_trading] keys_file)")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)
    demo_fund = demo_sub.add_parser("fund", help="ask Bybit for demo funds (at most 100,000 USDT or USDC, 15 BTC, "
                                                 "200 ETH a request)")
    demo_fund.add_argument("--coin", default="USDT", choices=["USDT", "USDC", "BTC", "ETH"])
    demo_fund.add_argument("--amount", required=True)
    demo_fund.add_argument("--config", type=Path)
    demo_balance = demo_sub.add_parser("balance", help="the demo account's wallet balance of a coin")
    demo_balance.add_argument("--coin", default="USDT")
    demo_balance.add_argument("--config", type=Path)

    gateway = sub.add_parser("gateway", help="the Bybit gateway alone: sessions' orders to Bybit, its private "
                                             "stream back (started by `papertape run` for sessions on Bybit)")
    gateway.add_argument("--settings-json", type=Path)
    gateway.add_argument("--config", type=Path)
    gateway.add_argument("--mainnet", action="store_true", help="allow Bybit mainnet (with allow_mainnet)")
    gateway.add_argument("--metrics-offset", type=int, default=0,
                         help="set by `papertape run`: metrics on the Prometheus port + N (after its workers')")
    reconcile = sub.add_parser("reconcile", help="check sessions on Bybit against the exchange now and print what "
                                                 "differs (exit 1 when something did)")
    reconcile.add_argument("--session", help="the session (default: every session of the run on Bybit)")
    reconcile.add_argument("--data-dir", type=Path)
    reconcile.add_argument("--wait-s", type=float, default=30.0, help="how long to wait for the answer")
    reconcile.add_argument("--json", action="store_true")

    _session_args(sub)

    args = parser.parse_args(argv)
    try:
        return {"run": cmd_run, "worker": cmd_worker, "recorder": cmd_recorder, "relay": cmd_relay, "sql": cmd_sql,
                "status": cmd_status, "record": cmd_record, "instruments": cmd_instruments,
                "audit": cmd_audit, "session": cmd_session, "metrics": cmd_metrics,
                "export": cmd_export, "report": cmd_report, "compare": cmd_compare, "api": cmd_api,
                "alerts": cmd_alerts, "demo": cmd_demo, "gateway": cmd_gateway,
                "reconcile": cmd_reconcile}[args.command](args)
    except KeyboardInterrupt:
        return 130


def _session_args(sub) -> None:
    """`papertape session ...` (papertape/app/sessions.py)."""
    session = sub.add_parser("session", help="start, stop, pause, resume, reconfigure, list and show sessions")
    commands = session.add_subparsers(dest="session_command", required=True, metavar="COMMAND")

    def command(name: str, help: str, with_id: bool = True) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, description=help)
        if with_id:
            p.add_argument("id", help="the session id")
        p.add_argument("--data-dir", type=Path, help="the data directory (default: papertape-data, or PAPERTAPE_DATA)")
        return p

    start = command("start", "start a session in the running pipeline (validated here first)")
    start.add_argument("--config", type=Path, help="TOML file of the session's fields, or a settings file with "
                                                   "[[sessions]] (the entry with this id, or its only one)")
    start.add_argument("--strategy", help="a built-in, or package.module:Class")
    start.add_argument("--intel", type=int, help="1 (cautious) .. 10 (aggressive)")
    start.add_argument("--balance", help="deposit in the settle coin")
    start.add_argument("--symbols", nargs="+", help='symbols to trade ("*": every one)')
    start.add_argument("--param", action="append", metavar="KEY=VALUE", help="a strategy parameter (repeatable)")
    start.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="any config field, dotted for nested ones: risk.max_daily_trades=3 (repeatable)")
    command("stop", "cancel the session's orders, close its positions at market, and end it")
    command("pause", "no new entries (exits, stops and take-profits go on)")
    command("resume", "undo pause")
    config = command("config", "change settings of a running or paused session")
    config.add_argument("changes", nargs="+", metavar="KEY=VALUE",
                        help="values are JSON when they parse, else text: intel=7 risk.max_daily_trades=3 "
                             "'symbols=[\"BTCUSDT\"]'")
    for name, help in (("list", "every session with its status, equity, positions, fills and breakers"),
                       ("show", "a session's status, config, positions and last decisions")):
        p = command(name, help, with_id=name == "show")
        p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _universe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--symbols", nargs="+", help="only these symbols (default: every one passing the filters)")
    p.add_argument("--exclude", nargs="+")
    p.add_argument("--min-turnover", type=str, dest="min_turnover_24h", help="minimum 24 h turnover, quote coin")
    p.add_argument("--category", choices=["linear", "spot"])
    p.add_argument("--settle-coin")
    p.add_argument("--ws-url", help="public WebSocket URL (default: Bybit mainnet)")
    p.add_argument("--rest-url", help="REST URL (default: Bybit mainnet)")


def _settings(args) -> Settings:
    overrides = {k: getattr(args, k, None) for k in ("data_dir", "replay", "speed", "replay_seconds", "broker")}
    settings = load_settings(getattr(args, "config", None), **overrides)
    bybit = {k: getattr(args, k, None) for k in ("symbols", "exclude", "min_turnover_24h", "category", "settle_coin",
                                                  "ws_url", "rest_url")}
    bybit = {k: v for k, v in bybit.items() if v is not None}
    if bybit:
        settings = settings.model_copy(update={"bybit": settings.bybit.model_copy(update=bybit)})
        settings = Settings.model_validate(settings.model_dump())  # validate the overrides
    return settings


def cmd_record(args) -> int:
    from papertape.app.live import record
    from streams.bybit.instruments import InstrumentsUnavailable

    settings = _settings(args)
    try:
        done = asyncio.run(record(settings, args.out, args.seconds, args.max_mb, sys.stdout))
    except (InstrumentsUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"recorded {done['messages']} messages ({done['bytes'] / 1e6:.2f} MB, {done['frames']} frames) of "
          f"{done['symbols']} symbols to {args.out}; replay it with: papertape run --replay {args.out}")
    return 0


def cmd_instruments(args) -> int:
    from papertape.app.live import universe
    from streams.bybit.instruments import INSTRUMENT_LIST, InstrumentsUnavailable

    settings = _settings(args)
    try:
        found = universe(settings)
    except InstrumentsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(INSTRUMENT_LIST.dump_json(found).decode())
        return 0
    cols = ["symbol", "tick_size", "lot_step", "min_qty", "min_notional", "max_leverage", "funding_interval_min"]
    print(format_table({"columns": cols, "rows": [[str(getattr(i, c)) for c in cols] for i in found]}))
    print(f"{len(found)} {settings.bybit.category} instruments")
    return 0


def cmd_run(args) -> int:
    from papertape.app.live import token_instruments, universe, with_tape_instruments
    from papertape.app.runtime import Pipeline
    from streams.bybit.instruments import InstrumentsUnavailable
    from streams.bybit.private import BybitPrivateError

    settings = _settings(args)
    if args.fresh and settings.data_dir.exists():
        shutil.rmtree(settings.data_dir)
    if args.live:
        try:
            instruments = universe(settings)
        except InstrumentsUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if args.tokens or settings.coingecko.enabled:
            cg = settings.coingecko.model_copy(update={"enabled": True, **(
                {"base_url": args.coingecko_url} if args.coingecko_url else {})})
            settings = settings.model_copy(update={"coingecko": cg})
            instruments = instruments + token_instruments(settings)
        settings = settings.model_copy(update={"instruments": instruments})
    else:
        settings = with_tape_instruments(settings)

    async def go() -> tuple[dict, list[dict], dict[str, int]]:
        pipe = Pipeline(settings, mainnet=args.mainnet)
        try:
            await pipe.start()
            if args.live:
                done = await _run_live(pipe, args)
            else:
                pipe.say(f"replaying {len(settings.replay)} file(s) for {len(settings.sessions)} sessions "
                         f"({'as fast as possible' if not settings.speed else f'{settings.speed:g}x real time'})")
                done = await pipe.replay()
                pipe.say(f"replay done: {done['frames']} frames, {done['trades']} trades; waiting for the pipeline")
                await pipe.wait_finished()
            return done, pipe.summary(), pipe.refusals()
        finally:
            await pipe.stop()

    try:
        done, rows, refused = asyncio.run(go())
    except BybitPrivateError as exc:  # a session on Bybit that cannot start: keys, environment, balance
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(done, rows, refused)
    return 0


async def _run_live(pipe, args) -> dict:
    from papertape.app.live import stop_on_signals

    stop = stop_on_signals(asyncio.Event())
    if args.live_seconds:
        asyncio.get_running_loop().call_later(args.live_seconds, stop.set)
    symbols = [i.symbol for i in pipe.settings.instruments if i.category != "dex"]  # tokens are not on Bybit
    done = await pipe.live(stop, symbols, args.record)
    pipe.say(f"live feed stopped: {done['frames']} frames, {done['trades']} trades; waiting for the pipeline")
    await pipe.wait_finished()
    return done


def print_summary(done: dict, rows: list[dict], refused: dict[str, int]) -> None:
    print(f"\nevents processed: {done['frames']} market frames ({done['trades']} trades)")
    if done.get("bad_lines"):
        print(f"lines the tape reader refused: {done['bad_lines']} (skipped); the first:")
        for example in done.get("bad_examples", ()):
            print(f"  {example}")
    if refused:
        print(f"messages refused: {sum(refused.values())} ({', '.join(f'{t}: {n}' for t, n in refused.items())}); "
              "why: papertape sql \"SELECT topic, error, count() FROM dead_letters GROUP BY topic, error\"")
    cols = ["session", "orders", "fills", "fees", "realized", "cash", "equity"]
    print(format_table({"columns": cols, "rows": [[money(r.get(c)) for c in cols] for r in rows]}))
    print(f"total fills: {sum(int(r.get('fills') or 0) for r in rows)}")


def _process_settings(args, name: str) -> tuple[Settings, str] | None:
    """A process `papertape run` starts (worker, gateway): its run's settings, or a config's with KAFKA_BOOTSTRAP,
    and the broker; None (said why) without one."""
    if args.settings_json:
        settings = Settings.model_validate_json(args.settings_json.read_text())
    else:
        settings = load_settings(args.config)
    if not settings.kafka_bootstrap:
        print(f"papertape {name} needs KAFKA_BOOTSTRAP (or --settings-json from `papertape run`)", file=sys.stderr)
        return None
    return settings, settings.kafka_bootstrap


def cmd_worker(args) -> int:
    from faust import Worker

    from agents.app import create_app, create_changelogs
    from infra.broker import ensure_topics
    from infra.prometheus import serve
    from schemas import partition_counts

    found = _process_settings(args, "worker")
    if found is None:
        return 2
    settings, bootstrap = found
    topics = partition_counts(settings.md_partitions, settings.session_partitions, settings.names)
    replication = asyncio.run(ensure_topics(bootstrap, topics))
    app = create_app(settings, use_tansu=args.tansu, replication=replication)
    asyncio.run(create_changelogs(app, bootstrap))

    # The code and the app's objects live as long as the process: keep the collector from rescanning them,
    # and let it run less often (ticks are short-lived tuples, freed by reference counting anyway).
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    if args.index is None:
        metrics = serve(settings, "worker", settings.data_dir)
    else:
        metrics = serve(settings, f"worker-{args.index}", settings.data_dir, offset=args.index + 1)
    atexit.register(metrics.close)
    worker = Worker(app, loglevel=settings.log_level, quiet=True)
    # Faust's terminal spinner turns on every debug record to spin on: the root logger goes to DEBUG, and aiokafka's
    # per-fetch and per-send debug calls built a record each (6% of the worker's CPU at 700 symbols)
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


def cmd_recorder(args) -> int:
    """The archive edge on its own (docker-compose): runs until SIGTERM or Ctrl-C."""
    from papertape.app.live import stop_on_signals
    from papertape.app.runtime import Pipeline

    settings = _settings(args)
    if not settings.kafka_bootstrap:
        print("papertape recorder needs KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2

    async def go() -> None:
        pipe = Pipeline(settings, console_alerts="info")
        stop = stop_on_signals(asyncio.Event())
        try:
            await pipe.start(worker=False)
            await stop.wait()
        finally:
            await pipe.stop()

    asyncio.run(go())
    return 0


def cmd_relay(args) -> int:
    """The alert relay alone (`[alerts] relay = "external"`), until SIGTERM or Ctrl-C. Killed and started again, it
    sends what it had not, and nothing twice (but a message a channel took just before the kill)."""
    from infra import prometheus
    from papertape.app.live import stop_on_signals
    from papertape.app.sessions import broker_of
    from streams.sinks.alert_channels import delivery_channels
    from streams.sinks.alerts import AlertRelay

    settings = _settings(args)
    if args.config is None and (run := run_settings(settings.data_dir)) is not None:
        settings = settings.model_copy(update={"alerts": run.alerts})  # the channels of the run in that directory
    where = broker_of(settings.data_dir, settings)
    if where is None:
        print(f"papertape relay needs a run in progress in {settings.data_dir} or KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2
    bootstrap, names = where
    try:
        channels = delivery_channels(settings.alerts, settings.webhook_url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not channels:
        print("no alert channel: add [[alerts.channels]] to the settings, or set PAPERTAPE_WEBHOOK_URL",
              file=sys.stderr)
        return 2

    async def go() -> None:
        relay = AlertRelay(bootstrap, channels, settings.alerts, names=names)
        stop = stop_on_signals(asyncio.Event())
        await relay.start()
        print(f"alert relay on {bootstrap}: {', '.join(c.name for c in channels)}; metrics: {metrics.url}",
              flush=True)
        try:
            await stop.wait()
        finally:
            await relay.stop()

    metrics = prometheus.serve(settings, "relay", settings.data_dir)
    try:
        asyncio.run(go())
    finally:
        metrics.close()
    return 0


def _archive(settings: Settings) -> Archive:
    return Archive(settings.data_dir, settings.clickhouse_url)


def cmd_sql(args) -> int:
    settings = _settings(args)
    try:
        with _archive(settings) as archive:
            result = archive.query(args.query)
    except Exception as exc:  # the message from ClickHouse is what the user needs
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, default=str) if args.json else format_table(result))
    return 0


def cmd_status(args) -> int:
    settings = _settings(args)
    info = running(settings.data_dir)
    print(f"run in progress (pid {info['pid']}, broker {info['bootstrap']})" if info else "no run in progress")
    try:
        archive = _archive(settings)
    except NoHistory as exc:
        print(exc)
        return 0
    with archive:
        _print_status(archive)
    return 0


def _print_status(archive: Archive) -> None:
    print(format_table(for_display(archive.query("""
        SELECT session, argMax(equity, ts) AS equity, argMax(cash, ts) AS cash,
               argMax(open_positions, ts) AS open_positions, max(ts) AS as_of_ms
        FROM equity GROUP BY session ORDER BY session"""))))
    print(format_table(archive.query("""
        SELECT (SELECT count() FROM fills) AS fills, (SELECT count() FROM order_events) AS order_events,
               (SELECT count() FROM md_trades) AS trades, (SELECT count() FROM dead_letters) AS dead_letters""")))


def cmd_session(args) -> int:
    from papertape.app.sessions import main as session

    return session(args)


def _metrics_settings(args) -> Settings:
    """Settings whose `[metrics]` are the config file's, else those of the run that wrote the data directory (its
    metrics table used them), else the defaults."""
    settings = _settings(args)
    if args.config is None and (run := run_settings(settings.data_dir)) is not None:
        settings = settings.model_copy(update={"metrics": run.metrics})
    return settings


def cmd_metrics(args) -> int:
    from papertape.app.performance import main as metrics

    return metrics(args, _metrics_settings(args))


def cmd_export(args) -> int:
    from papertape.app.export import main as export

    return export(args, _metrics_settings(args))


def cmd_report(args) -> int:
    from papertape.app.report import main as report

    return report(args, _metrics_settings(args))


def cmd_compare(args) -> int:
    from papertape.app.compare import main as compare

    return compare(args, _metrics_settings(args))


def cmd_api(args) -> int:
    import uvicorn

    from papertape.app.api.server import (
        LOOPBACK_NAMES,
        OpenToNetwork,
        api_token,
        check_exposure,
        create_app,
        is_loopback,
    )

    settings = load_settings(args.config, data_dir=args.data_dir)
    if args.token_file:
        settings = settings.model_copy(update={"api": settings.api.model_copy(update={"token_file": args.token_file})})
    host, port = args.host or settings.api.host, settings.api.port if args.port is None else args.port
    try:
        token = api_token(settings)
        check_exposure(host, token)
    except (OSError, OpenToNetwork) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"papertape api on http://{host}:{port}/ (dashboard), /api/v1 (OpenAPI: /docs), data in "
          f"{settings.data_dir}" + (", bearer token required" if token else ""), flush=True)
    uvicorn.run(create_app(settings, token, LOOPBACK_NAMES if is_loopback(host) else None), host=host, port=port,
                log_level=settings.log_level, access_log=False)
    return 0


def cmd_demo(args) -> int:
    from papertape.app.demo import main as demo_main

    return demo_main(args)


def cmd_gateway(args) -> int:
    """The Bybit gateway until SIGTERM or Ctrl-C; exit 2 when its settings or keys cannot work (not retried)."""
    from infra import prometheus
    from papertape.app.live import stop_on_signals
    from streams.bybit.gateway import BybitGateway
    from streams.bybit.private import BybitKeys, BybitPrivateError

    found = _process_settings(args, "gateway")
    if found is None:
        return 2
    settings, bootstrap = found
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        keys = BybitKeys.load(settings.bybit_trading, dict(os.environ))
        gateway = BybitGateway(bootstrap, settings, keys, args.mainnet, settings.bybit_trading.ws_url)
    except BybitPrivateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def go() -> None:
        await gateway.run(stop_on_signals(asyncio.Event()))

    metrics = prometheus.serve(settings, "gateway", settings.data_dir, offset=args.metrics_offset)
    try:
        asyncio.run(go())
    finally:
        metrics.close()
    return 0


def cmd_reconcile(args) -> int:
    from papertape.app.reconcile import main as reconcile_main

    return reconcile_main(args)


def cmd_alerts(args) -> int:
    from papertape.app.alerts import main as alerts_main

    return alerts_main(args)


def cmd_audit(args) -> int:
    from papertape.app.audit import main as audit

    settings = _settings(args)
    return audit(settings.data_dir, args.session, args.json, args.config, settings.clickhouse_url)


if __name__ == "__main__":
    sys.exit(main())
