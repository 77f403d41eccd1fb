"""ClickHouse access: connect (embedded chdb or a server), versioned migrations, serialized async calls."""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import threading
import weakref
from pathlib import Path
from typing import Any, Callable

import clickhouse_connect
from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "clickhouse"
_MIGRATION_FILE = re.compile(r"^(\d{3,})_[A-Za-z0-9_]+\.sql$")


class DataDirInUse(RuntimeError):
    """Another process has the embedded ClickHouse data directory open."""


def connect(url: str | None, data_dir: Path) -> Client:
    """A server client for `http(s)://user:pass@host:8123/db`, else the embedded engine in `data_dir/clickhouse`.

    chdb opens one data directory per process and one process per directory (it flocks `status`).
    Close the client before opening another directory in the same process.
    """
    if url:
        return clickhouse_connect.get_client(dsn=url)
    path = Path(data_dir) / "clickhouse"
    path.mkdir(parents=True, exist_ok=True)
    _check_not_locked(path)
    try:
        return clickhouse_connect.get_client(interface="chdb", path=str(path))
    except Exception:
        _check_not_locked(path)  # lost a race with another process: say so clearly
        raise


def _check_not_locked(path: Path) -> None:
    status = path / "status"
    if not status.exists() or f"PID: {os.getpid()}\n" in status.read_text(errors="replace"):
        return  # chdb allows more clients on the directory this process already has open
    with open(status, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = status.read_text(errors="replace").strip().replace("\n", ", ")
            raise DataDirInUse(
                f"ClickHouse data directory {path} is in use by another process ({owner}); chdb allows one "
                "process per directory: query that process's SQL endpoint, or use a ClickHouse server "
                "(CLICKHOUSE_URL)"
            ) from None
        fcntl.flock(f, fcntl.LOCK_UN)


# --- migrations ---------------------------------------------------------------------------------------------

def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, Path]]:
    found = []
    for path in directory.iterdir():
        if m := _MIGRATION_FILE.match(path.name):
            found.append((int(m.group(1)), path.stem, path))
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise ValueError(f"duplicate migration versions in {directory}")
    return sorted(found)


def split_statements(sql: str) -> list[str]:
    """Split on `;` outside quotes and comments; drop comments and empty statements."""
    statements, current, i, n = [], [], 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            i = sql.find("\n", i)
            i = n if i < 0 else i
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c in "'`\"":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            current.append(sql[i:j + 1])
            i = j + 1
        elif c == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(c)
            i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def migrate(client: Client, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the migrations not yet recorded in `schema_migrations`, in order. Returns the versions applied.

    ClickHouse DDL is not transactional: a version is recorded after all its statements ran, so a
    partly applied file runs again from its start. Write statements that may repeat (IF NOT EXISTS).
    """
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}
    applied = []
    for version, name, path in migration_files(directory):
        if version in done:
            continue
        for statement in split_statements(path.read_text()):
            try:
                client.command(statement)
            except Exception as exc:
                raise RuntimeError(f"migration {path.name} failed at: {statement[:120]!r}: {exc}") from exc
        client.insert("schema_migrations", [(version, name)], column_names=["version", "name"])
        log.info("applied ClickHouse migration %s", path.name)
        applied.append(version)
    return applied


# --- serialized calls ---------------------------------------------------------------------------------------

_client_locks: "weakref.WeakKeyDictionary[Client, threading.Lock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def client_lock(client: Client) -> threading.Lock:
    """The one lock that serializes every call on `client` in this process."""
    with _locks_guard:
        lock = _client_locks.get(client)
        if lock is None:
            lock = _client_locks[client] = threading.Lock()
        return lock


async def call(client: Client, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `fn(*args, **kwargs)` (a blocking call on `client`) in a worker thread, one call at a time.

    A thread lock rather than an asyncio.Lock: it also serializes callers on other event loops or threads.
    """
    lock = client_lock(client)

    def locked() -> Any:
        with lock:
            return fn(*args, **kwargs)

    return await asyncio.to_thread(locked)
