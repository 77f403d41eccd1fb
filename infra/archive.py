"""The one client that reads the archive: the running pipeline's SQL endpoint when a run owns the embedded
ClickHouse (chdb lets one process open a data directory), else a ClickHouse server (CLICKHOUSE_URL), else the
embedded engine in the data directory itself. Read-only whichever it is: ClickHouse refuses a write or DDL
(`readonly`, see infra.sql_endpoint.connect_reader), so `papertape sql` and the API cannot change the archive.

Every reader (`papertape sql`, `status`, `session list/show`, `audit`) goes through it, so an archive that is
missing or unreachable reads the same way everywhere: `NoHistory`, or ClickHouse's own message as the error.
"""
from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, TypeVar

import httpx

from infra.clickhouse import DataDirInUse
from infra.sql_endpoint import (
    Params,
    connect_reader,
    query_local,
    query_local_raw,
    query_remote,
    query_remote_raw,
    running,
)

RELEASE_WAIT_S = 5.0  # a run that just ended still holds the data directory for a moment
T = TypeVar("T")


class NoHistory(FileNotFoundError):
    """Nothing to read: no run in progress, no CLICKHOUSE_URL and no embedded archive in the data directory."""


class Archive:
    """SQL on the history; `query` returns {"columns", "types", "rows"} (sql_endpoint's result), `raw` the bytes
    of a ClickHouse output format (Parquet, CSVWithNames...)."""

    def __init__(self, data_dir: Path, url: str | None = None, timeout: float = 60.0) -> None:
        self.data_dir = Path(data_dir)
        self.url = url
        self.timeout = timeout
        self._client: Any = None
        self._port: int | None = None
        info = running(self.data_dir)
        if info and not url:
            self._port = int(info["sql_port"])
        elif not url and not (self.data_dir / "clickhouse").exists():
            raise NoHistory(f"no history in {self.data_dir} (and no CLICKHOUSE_URL)")

    def query(self, sql: str, params: Params = None) -> dict:
        """`params` bind the query's {name:Type} placeholders (values never pasted into the SQL)."""
        return self._ask(lambda port: query_remote(port, sql, timeout=self.timeout, params=params),
                         lambda client: query_local(client, sql, params))

    def raw(self, sql: str, fmt: str, params: Params = None) -> bytes:
        """The result of `sql` (without a FORMAT clause) as ClickHouse writes it in the output format `fmt`."""
        return self._ask(lambda port: query_remote_raw(port, sql, fmt, timeout=self.timeout, params=params),
                         lambda client: query_local_raw(client, sql, fmt, params))

    def _ask(self, remote: Callable[[int], T], local: Callable[[Any], T]) -> T:
        if self._port is not None:
            try:
                return remote(self._port)
            except httpx.ConnectError:  # the run ended meanwhile: read its data directory once it lets go
                self._port = None
                self._client = self._connect_when_released()
        if self._client is None:
            self._client = connect_reader(self.url, self.data_dir)
        return local(self._client)

    def _connect_when_released(self) -> Any:
        deadline = time.monotonic() + RELEASE_WAIT_S
        while True:
            try:
                return connect_reader(self.url, self.data_dir)
            except DataDirInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def ms(column: str) -> str:
    """A DateTime64 column as ms since the epoch (how papertape's code reads event times)."""
    return f"toUnixTimestamp64Milli({column})"


def sql_string(text: str) -> str:
    """`text` as a ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tables(query: Callable[[str], dict]) -> set[str]:
    """The archive's tables and views (an archive from before a migration lacks its tables)."""
    return {r[0] for r in query("SELECT name FROM system.tables WHERE database = currentDatabase()")["rows"]}


def records(result: dict) -> list[dict]:
    """A query result's rows as {column: value} dicts."""
    return [dict(zip(result["columns"], row)) for row in result["rows"]]


def columns(query: Callable[[str], dict], table: str) -> set[str]:
    """A table's columns (an archive from before a migration lacks its columns)."""
    return {r[0] for r in query("SELECT name FROM system.columns WHERE database = currentDatabase() "
                                f"AND table = {sql_string(table)}")["rows"]}
