"""The embedded pipeline: broker, ClickHouse, recorder, alert relay, a worker process and the replay source.

`papertape run` drives one Pipeline; tests drive the same class (and kill its worker on purpose).
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

import schemas as s
import streams.sources.coingecko_tape as coingecko_tape
from infra import prometheus, tansu
from infra.archive import records
from infra.broker import die_with_parent, ensure_topics, wait_group_coordinator
from infra.clickhouse import connect, migrate
from infra.kafka import EmbeddedKafka, kafka_jars_cached, kafka_version
from infra.kafka import unavailable_reason as kafka_unavailable_reason
from infra.sql_endpoint import RUN_FILE, connect_reader, query_local, serve
from papertape import native
from papertape.app.live import feed_for, tape_header, token_prices
from papertape.config import Settings, write_run_settings
from schemas.topics import kafka_partition
from schemas.vocabulary import BYBIT_VENUES, Severity
from streams.bybit.gateway import check_exchange_sessions
from streams.bybit.instruments import INSTRUMENT_LIST
from streams.bybit.tape import TapeWriter
from streams.frames.wire import WireFrame
from streams.sinks.alert_channels import ConsoleChannel
from streams.sinks.alerts import alert_edges
from streams.sinks.metrics import MetricsWriter
from streams.sinks.recorder import Recorder
from streams.sinks.system_alerts import AlertSender, Episode
from streams.sources.replay import PACED_FLUSH_S, BatchSender, ReplaySource

STOP_TIMEOUT_S = 30.0


class FinishWatch:
    """An alert channel that notes which engine partitions reported the end of the tape."""

    min_severity: Severity = "info"

    def __init__(self) -> None:
        self.partitions: set[str] = set()

    async def send(self, alert: s.Alert) -> None:
        if alert.source == "engine" and alert.title == "tape finished":
            self.partitions.add(alert.id.split(":")[1])


class Pipeline:
    def __init__(self, settings: Settings, out=None, console_alerts: Severity = "warning",
                 mainnet: bool = False) -> None:
        self.settings = settings
        self.out = out or sys.stdout  # looked up now: a caller may have redirected it
        self.console_alerts = console_alerts
        self.broker: EmbeddedKafka | tansu.EmbeddedTansu | None = None
        self.tansu = False
        self.workers: list[subprocess.Popen | None] = [None] * settings.workers
        self.finish = FinishWatch()
        self.workers_started = 0
        self.mainnet = mainnet  # `--mainnet`: orders on Bybit mainnet (with [bybit_trading] allow_mainnet)
        self.gateway: subprocess.Popen | None = None
        self.gateways_started = 0
        self.max_worker_restarts = 3
        self._watchdog: asyncio.Task | None = None

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def start(self, worker: bool = True) -> "Pipeline":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # one endpoint for the supervisor, with its recorder's and relay's metrics (`papertape recorder`: the same)
        self.prometheus = prometheus.serve(self.settings, "supervisor" if worker else "recorder", self.data_dir)
        self.say(f"metrics: {self.prometheus.url}")
        self.say(native.status())
        bootstrap = self.settings.kafka_bootstrap
        if bootstrap is None:
            self.broker = self._start_embedded_broker()
            bootstrap = self.broker.bootstrap
            self.settings = self.settings.model_copy(update={"kafka_bootstrap": bootstrap})
        else:
            self.say(f"broker: {bootstrap}"
                     + (f" (namespace {self.settings.namespace!r})" if self.settings.namespace else ""))
        names = self.settings.names
        if isinstance(self.broker, EmbeddedKafka):
            await wait_group_coordinator(bootstrap)  # a new cluster: before any group joins
        await ensure_topics(bootstrap,
                            s.partition_counts(self.settings.md_partitions, self.settings.session_partitions, names))
        self.ch = connect(self.settings.clickhouse_url, self.data_dir)
        migrate(self.ch)
        where = self.settings.clickhouse_url or f"embedded (chdb) in {self.data_dir / 'clickhouse'}"
        self.say(f"clickhouse: {where}")
        self.sql_runner, port = await serve(connect_reader(self.settings.clickhouse_url, self.data_dir),
                                            close_client=True)
        (self.data_dir / RUN_FILE).write_text(json.dumps({"pid": os.getpid(), "sql_port": port,
                                                          "bootstrap": bootstrap,
                                                          "namespace": self.settings.namespace}))
        consumer: tansu.ConsumerSettings = tansu.CONSUMER_SETTINGS if self.tansu else {}
        self.metrics = MetricsWriter(self.ch, self.settings.metrics)
        self.alert_sender = AlertSender(bootstrap, names, **tansu.producer_settings(self.tansu))
        await self.alert_sender.start()
        self.inserts_failing = Episode(self.alert_sender, "clickhouse", "error", "ClickHouse inserts failing",
                                       "ClickHouse inserts succeed again")
        self.recorder_behind = Episode(self.alert_sender, "recorder-lag", "warning", "recorder behind",
                                       "recorder caught up")
        self.recorder = Recorder(bootstrap, self.ch, names=names, on_written=self.metrics.written,
                                 on_insert_failing=self.inserts_failing.report, **consumer)
        await self.recorder.start()
        self.metrics.start()
        self.alerts = alert_edges(bootstrap, self.settings, [ConsoleChannel(self.console_alerts, self.out),
                                                             self.finish], names=names, **consumer)
        await self.alerts.start()
        if worker:
            if any(c.venue in BYBIT_VENUES for c in self.settings.sessions):
                self.say(await asyncio.to_thread(check_exchange_sessions, self.settings, self.mainnet))
                self.start_gateway()
            for i in range(len(self.workers)):
                self.start_worker(i)
            self._watchdog = asyncio.create_task(self._watch())
        return self

    def _start_embedded_broker(self) -> EmbeddedKafka | tansu.EmbeddedTansu:
        """Apache Kafka in the data directory (a new one each run, as a run starts from its tape), or Tansu where
        it was asked for or Java is missing."""
        if self.settings.broker == "kafka":
            reason = kafka_unavailable_reason()
            if reason is None:
                shutil.rmtree(self.data_dir / "kafka", ignore_errors=True)
                if not kafka_jars_cached():
                    self.say(f"broker: resolving Apache Kafka {kafka_version()}'s jars with Maven (once)")
                kafka = EmbeddedKafka(self.data_dir / "kafka")
                self.say(f"broker: embedded Apache Kafka {kafka_version()} on {kafka.bootstrap}")
                return kafka
            self.say(f"broker: Apache Kafka cannot run here ({reason}); the embedded Tansu instead")
        self.tansu = True
        tansu.apply_to_clients(tansu=True)  # the recorder's and relay's consumers
        broker = tansu.EmbeddedTansu(self.data_dir / "broker.log")
        self.say(f"broker: embedded Tansu on {broker.bootstrap}")
        return broker

    async def _watch(self) -> None:
        """Replace a worker that died; restart an embedded Kafka broker that died, on its log directory."""
        for n in itertools.count():
            await asyncio.sleep(0.2)
            for i, worker in enumerate(self.workers):
                if worker is not None and worker.poll() is not None:
                    self._revive_worker(i, worker)
            if self.gateway is not None and self.gateway.poll() is not None:
                self._revive_gateway(self.gateway)
            if isinstance(self.broker, EmbeddedKafka):
                for node in range(self.broker.n):
                    if not self.broker.node_running(node):
                        self.say(f"broker node {node} died; restarting it on its log directory")
                        self.broker.start_node(node)  # from this (the main) thread: it must die with this process
                        self.alert_sender.post(f"broker-node-{node}", "error", "broker node restarted",
                                               f"embedded Kafka node {node} died; restarted on its log directory")
            if n % 25 == 0:  # every 5 s
                self._check_recorder_lag()

    def _check_recorder_lag(self) -> None:
        lag = prometheus.RECORDER_LAG.total()  # the metric's definition: fetched or not, not yet inserted
        self.recorder_behind.report(lag > self.settings.alerts.recorder_lag, f"{lag} messages not yet in ClickHouse")

    # --- the worker processes -------------------------------------------------------------------------------
    @property
    def worker(self) -> subprocess.Popen | None:
        return self.workers[0]

    def start_worker(self, i: int = 0) -> subprocess.Popen:
        self.workers_started += 1
        cfg = write_run_settings(self.settings, self.data_dir)
        log = open(self.data_dir / f"worker-{self.workers_started}.log", "wb")
        cmd = [sys.executable, "-m", "papertape.app.cli", "worker", "--settings-json", str(cfg), "--index", str(i)]
        if self.tansu:
            cmd.append("--tansu")
        # the worker dies with the supervisor (as the embedded broker does), however the supervisor ends
        worker = self.workers[i] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        if i == 0:
            (self.data_dir / "worker.pid").write_text(str(worker.pid))
        return worker

    def _revive_worker(self, i: int, dead: subprocess.Popen) -> None:
        """A worker that died is replaced; it resumes from the last checkpoint of each partition it gets."""
        code = dead.returncode
        if self.workers_started > self.max_worker_restarts + len(self.workers) - 1:
            raise RuntimeError(f"a worker exited with code {code}, after {self.workers_started} worker starts; "
                               f"see {self.data_dir}/worker-{self.workers_started}.log")
        self.say(f"worker exited with code {code}; starting a new one (it resumes from its checkpoints)")
        prometheus.WORKER_RESTARTS.inc()
        self.alert_sender.post(f"worker-{i}-exit-{dead.pid}", "error", "worker restarted",
                               f"worker {i} (pid {dead.pid}) exited with code {code}; a new one resumes from its "
                               "checkpoints")
        self.start_worker(i)

    def start_gateway(self) -> subprocess.Popen:
        """The Bybit gateway (sessions on Bybit): its own process, so a crash or a kill of it is a worker's."""
        self.gateways_started += 1
        cfg = write_run_settings(self.settings, self.data_dir)
        log = open(self.data_dir / f"gateway-{self.gateways_started}.log", "wb")
        cmd = [sys.executable, "-m", "papertape.app.cli", "gateway", "--settings-json", str(cfg), "--metrics-offset",
               str(len(self.workers) + 1)]  # the Prometheus ports after the supervisor's and its workers
        if self.mainnet:
            cmd.append("--mainnet")
        self.gateway = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                        preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        (self.data_dir / "gateway.pid").write_text(str(self.gateway.pid))
        return self.gateway

    def _revive_gateway(self, dead: subprocess.Popen) -> None:
        """A gateway that died is replaced (its requests not committed are sent again, never doubled); one that
        refused its settings (exit 2) would refuse them again: it is reported, not restarted in a loop."""
        code = dead.returncode
        if code == 2 or self.gateways_started > self.max_worker_restarts + 1:
            self.gateway = None
            why = f"see {self.data_dir}/gateway-{self.gateways_started}.log"
            self.say(f"the Bybit gateway exited with code {code}; not restarted ({why})")
            self.alert_sender.post(f"gateway-exit-{dead.pid}", "critical", "Bybit gateway stopped",
                                   f"the Bybit gateway exited with code {code} and is not restarted: {why}")
            return
        self.say(f"the Bybit gateway exited with code {code}; starting a new one")
        self.alert_sender.post(f"gateway-exit-{dead.pid}", "error", "Bybit gateway restarted",
                               f"the Bybit gateway (pid {dead.pid}) exited with code {code}; a new one sends what "
                               "it had not and reconciles")
        self.start_gateway()

    def kill_worker(self, sig: int = signal.SIGKILL, i: int = 0) -> None:
        worker = self.workers[i]
        if worker and worker.poll() is None:
            worker.send_signal(sig)
            worker.wait(timeout=60)

    # --- the source ------------------------------------------------------------------------------------------
    def md_events_producer(self) -> AIOKafkaProducer:
        """The sources' producer (not started). No linger: a source sends what it has for every partition in one turn
        of the loop, which the producer's next request takes whole; waiting only delays each tick (5 ms before:
        bench_latency p50 at 1k/s 40-61 ms with it, 27-73 without, median 45 -> 34; throughput the same)."""
        return AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, linger_ms=0,
                                max_batch_size=1 << 20, **tansu.producer_settings(self.tansu))

    async def _source_producer(self):
        """A started producer for md.events and the `send(topic, key, value, partition)` sources call."""
        producer = self.md_events_producer()
        await producer.start()
        names = self.settings.names

        async def send(topic, key, value, partition):
            await producer.send(names.topic(topic), value=value, key=key, partition=partition)

        return producer, send

    async def replay(self, progress: bool = True, frames=None, flush_every_s: float = PACED_FLUSH_S) -> dict:
        """Play the settings' tape (or `frames`, WireFrames in event-time order) onto md.events; paced, what is
        pending goes out every `flush_every_s` of wall time."""
        producer, send = await self._source_producer()
        try:
            source = ReplaySource(self.settings.replay, send, self.settings.md_partitions, kafka_partition,
                                  speed=self.settings.speed, max_seconds=self.settings.replay_seconds,
                                  progress=self._progress if progress else None, frames=frames,
                                  flush_every_s=flush_every_s)
            summary = await source.run()
            await producer.flush()
        finally:
            await producer.stop()
        return dataclasses.asdict(summary)

    async def live(self, stop: asyncio.Event, symbols: list[str], record_to: Path | None = None,
                   progress_every_s: float = 5.0) -> dict:
        """Bybit's live public streams for `symbols` onto md.events until `stop`; optionally also to a tape."""
        producer, send = await self._source_producer()
        writer = None
        if record_to is not None:
            writer = TapeWriter(record_to, tape_header(self.settings, list(self.settings.instrument_map().values())))
        out = BatchSender(send, self.settings.md_partitions, kafka_partition, origin="bybit")
        frames = trades = 0

        async def on_frames(batch) -> None:
            nonlocal frames, trades
            for frame in batch:
                await out.add(frame)
                trades += frame.trades
            await out.flush_all(feed.order.released_to)  # every partition learns how far event time got
            frames += len(batch)

        feed = feed_for(self.settings, symbols, on_frames, on_raw=writer.write if writer else None,
                        on_alert=lambda sev, title, text: self.say(f"  [{sev}] {title}: {text}"))
        self.say(f"live: {len(symbols)} Bybit {self.settings.bybit.category} symbols on {len(feed.connections)} "
                 f"connection(s)" + (f", recording to {record_to}" if writer else "")
                 + (f" (token prices to {coingecko_tape.companion(record_to)})"
                    if record_to is not None and self.settings.coingecko.enabled else ""))
        task = asyncio.create_task(feed.run(stop))
        tokens = answers = None
        if self.settings.coingecko.enabled:
            answers = self._answers_writer(record_to)

            def push(priced) -> None:  # frames of token prices join the feed's event-time order
                if answers is not None and (body := coingecko_tape.answer(priced, self.settings.coingecko.tokens)):
                    answers.write(time.time_ns(), body)
                for f in priced:
                    feed.saw(f.ts)
                    feed.order.push(WireFrame(f.ts, f.recv_ts, f.symbol, 0, f.model_dump_json().encode(),
                                              f.status == "live"))

            tokens = asyncio.create_task(token_prices(self.settings, push, stop))
        try:
            while not task.done():
                await asyncio.wait([task], timeout=progress_every_s)
                fills = self.recorder.rows_written.get("fills_log", 0)
                self.say(f"  live: {frames:>9} frames  stale {len(feed.watch.stale):>4}  gaps {feed.stats.gaps}  "
                         f"fills recorded {fills}")
            stats = task.result()
            if tokens is not None:
                await tokens
            await out.flush_all(max(feed.order.released_to, 0), end=True)  # sessions close their books
            await producer.flush()
        finally:
            for w in (writer, answers):
                if w is not None:
                    w.close()
            await producer.stop()
        return {"frames": frames, "trades": trades, "messages": stats.messages, "gaps": stats.gaps,
                "stale": stats.stale}

    def _answers_writer(self, record_to: Path | None) -> TapeWriter | None:
        """With a recording, the CoinGecko tape beside it (the tokens' prices, replayable with it)."""
        if record_to is None:
            return None
        tokens = [i for i in self.settings.instruments if i.category == "dex"]
        return TapeWriter(coingecko_tape.companion(record_to), coingecko_tape.header(
            self.settings.coingecko.tokens, INSTRUMENT_LIST.dump_python(tokens, mode="json")))

    def _progress(self, p) -> None:
        fills = self.recorder.rows_written.get("fills_log", 0)
        clock = time.strftime("%H:%M:%S", time.gmtime(p.event_ts / 1000))
        self.say(f"  replay: {p.frames:>8} frames  event time {clock}  {p.frames_per_s:>8.0f} frames/s"
                 f"  fills recorded {fills}")

    async def wait_finished(self, timeout: float = 600.0, progress_every_s: float = 2.0) -> None:
        """Until every engine partition has reported the end of the tape and all of it is in ClickHouse."""
        deadline = time.monotonic() + timeout
        want = self.settings.session_partitions
        next_report = time.monotonic() + progress_every_s
        while len(self.finish.partitions) < want:
            if progress_every_s and time.monotonic() >= next_report:
                next_report += progress_every_s
                rows = self.recorder.rows_written
                self.say(f"  pipeline: marks {rows.get('md_marks_log', 0)}  decisions {rows.get('decisions_log', 0)}"
                         f"  fills {rows.get('fills_log', 0)}  engine partitions done "
                         f"{len(self.finish.partitions)}/{want}")
            if self._watchdog is not None and self._watchdog.done():
                self._watchdog.result()  # the worker kept dying: raise why
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.finish.partitions)}/{want} engine partitions finished")
            await asyncio.sleep(0.1)
        await self.recorder.wait_caught_up(timeout=max(5.0, deadline - time.monotonic()))
        await self.metrics.flush()  # the final rows, from everything recorded

    # --- results --------------------------------------------------------------------------------------------
    def query(self, sql: str) -> dict:
        return query_local(self.ch, sql)

    def summary(self) -> list[dict]:
        """Per session: orders, fills, fees, realized P&L, cash, equity (from ClickHouse)."""
        res = self.query("""
            SELECT e.session AS session, o.orders, f.fills, f.fees, f.realized, e.cash, e.equity, e.unrealized
            FROM (SELECT session, argMax(cash, ts) AS cash, argMax(equity, ts) AS equity,
                         argMax(unrealized_pnl, ts) AS unrealized FROM equity GROUP BY session) AS e
            LEFT JOIN (SELECT session, count() AS fills, sum(fee) AS fees, sum(realized_pnl) AS realized
                       FROM fills GROUP BY session) AS f ON f.session = e.session
            LEFT JOIN (SELECT session, uniqExact(order_id) AS orders FROM order_events GROUP BY session) AS o
                   ON o.session = e.session
            ORDER BY e.session""")
        return records(res)

    def refusals(self) -> dict[str, int]:
        """Dead letters per topic: what the agents refused (with why, in the dead_letters table)."""
        return {r["topic"]: int(r["n"]) for r in records(self.query(
            "SELECT topic, count() AS n FROM dead_letters GROUP BY topic ORDER BY topic"))}

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._stop_workers()
        await self._stop_edges()
        if hasattr(self, "sql_runner"):
            await self.sql_runner.cleanup()
        if hasattr(self, "prometheus"):
            self.prometheus.close()
        (self.data_dir / RUN_FILE).unlink(missing_ok=True)
        if hasattr(self, "ch"):
            self.ch.close()
        if self.broker:
            self.broker.stop()

    def _stop_workers(self) -> None:
        running = [w for w in [*self.workers, self.gateway] if w is not None and w.poll() is None]
        for worker in running:
            worker.terminate()
        for worker in running:
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    async def _stop_edges(self) -> None:
        """The alert relay and the recorder, then the metrics of what the recorder wrote last."""
        if not hasattr(self, "metrics"):
            return
        await self.metrics.stop()
        for part in ("alerts", "recorder", "alert_sender"):
            if hasattr(self, part):
                try:  # a consumer whose group session was lost can retry its last commit for ever
                    await asyncio.wait_for(getattr(self, part).stop(), STOP_TIMEOUT_S)
                except asyncio.TimeoutError:
                    self.say(f"the {part} did not stop within {STOP_TIMEOUT_S:g} s; left behind (what it had not "
                             "committed is read again by the next one)")
        try:
            await asyncio.wait_for(self.metrics.flush(), STOP_TIMEOUT_S)
        except Exception as exc:
            self.say(f"metrics not refreshed at stop ({exc}); `papertape metrics` computes them from the archive")

    async def __aenter__(self) -> "Pipeline":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()
