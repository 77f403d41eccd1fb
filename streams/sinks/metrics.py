"""Keeps the `metrics` table current: a session whose equity, fills or funding the recorder wrote is recomputed
from the archive (infra.history -> papertape.core.metrics) at most every `refresh_s`, and once more when the
pipeline has drained. Rows replace the previous ones of their key (infra/clickhouse/004_metrics.sql)."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import datetime, timezone
from typing import Any, Iterable

from infra.clickhouse import client_lock
from infra.history import input_rows, load_history
from infra.sql_endpoint import query_local
from papertape.config import MetricsSettings
from papertape.core.metrics.definitions import DEFINITIONS
from papertape.core.metrics.execution import OrderMids
from papertape.core.metrics.summary import MetricsRow, session_metrics
from streams.sinks.rows import COLUMNS, Row

log = logging.getLogger(__name__)

SOURCE_TABLES = ("equity_log", "fills_log", "funding_log")
_TIME_COLUMNS = {"from_ts", "to_ts", *(name for name, (kind, _) in DEFINITIONS.items() if kind == "time")}
METRICS_COLUMNS = ["session", "strategy", "symbol", "period_ms", "version",
                   *[f.name for f in dataclasses.fields(MetricsRow) if f.name not in ("session", "strategy", "symbol",
                                                                                        "period_ms")]]


def _utc(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def table_row(row: MetricsRow, version: int) -> list[Any]:
    values = dataclasses.asdict(row) | {"version": version}
    return [_utc(values[c]) if c in _TIME_COLUMNS else values[c] for c in METRICS_COLUMNS]


class MetricsWriter:
    """The recorder tells it what it wrote (`written`); a task refreshes the sessions due (`start`, `stop`)."""

    def __init__(self, client: Any, settings: MetricsSettings) -> None:
        self.client = client
        self.settings = settings
        self.dirty: set[str] = set()
        self._task: asyncio.Task | None = None
        self._flushing = asyncio.Lock()
        # per session, the orders whose mids were found: a quote is never recorded late for its own symbol's
        # partition, so a mid found stays; one not found yet is asked again
        self._mids: dict[str, dict[str, OrderMids]] = {}

    def written(self, rows: dict[str, list[Row]]) -> None:
        """The recorder wrote these rows: their sessions' metrics are due."""
        for table in SOURCE_TABLES:
            if table_rows := rows.get(table):
                at = COLUMNS[table].index("session")
                self.dirty.update(r[at] for r in table_rows)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_s)
            try:
                await self.flush()
            except Exception as exc:  # ClickHouse away: the sessions stay due, the next round retries
                log.warning("metrics: refresh failed, retrying in %.0fs: %s", self.settings.refresh_s, exc)

    async def flush(self, sessions: Iterable[str] | None = None) -> None:
        """Recompute the due sessions (or these) now, after any refresh already under way. A session's mark is
        taken before it is read, so rows written meanwhile mark it due again instead of being missed."""
        async with self._flushing:
            for session in sorted(self.dirty if sessions is None else set(sessions)):
                self.dirty.discard(session)
                try:
                    await asyncio.to_thread(self.refresh, session)
                except BaseException:
                    self.dirty.add(session)
                    raise

    def refresh(self, session: str) -> list[MetricsRow]:
        """Blocking (each query takes the client's lock in turn): the session's rows, computed and inserted."""
        def query(sql: str) -> dict:
            return query_local(self.client, sql)
        version = input_rows(query, session)
        history = load_history(query, session, self.settings.step_ms, self._mids.get(session))
        self._mids[session] = {oid: m for oid, m in history.mids.items()
                               if m.decision is not None and m.arrival is not None}
        rows = session_metrics(history, self.settings.periods)
        with client_lock(self.client):
            self.client.insert("metrics_log", [table_row(r, version) for r in rows], column_names=METRICS_COLUMNS)
        return rows
