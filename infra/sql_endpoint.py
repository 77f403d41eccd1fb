"""SQL over HTTP for the process that owns the embedded ClickHouse (chdb opens a data dir in one process only).

POST /sql with the query as the body -> {"columns": [...], "types": [...], "rows": [[...]]}; Decimal, datetime
and other non-JSON values are rendered as strings. POST /sql?params=<a JSON object> binds the query's
`{name:Type}` placeholders (ClickHouse's own syntax) to its values, typed as JSON types them (arrays as lists).
POST /sql?format=F (a ClickHouse output format: Parquet, CSVWithNames...) -> the result in that format, as
ClickHouse writes it. A failing query -> HTTP 400 with ClickHouse's message.

Readers connect with `connect_reader`: ClickHouse itself refuses their writes and DDL.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from clickhouse_connect.driver.client import Client

from infra.clickhouse import call, client_lock, connect

RUN_FILE = "run.json"  # in the data directory while `papertape run` owns it: {"pid", "sql_port", ...}


def running(data_dir: Path) -> dict | None:
    """run.json of the process that owns the embedded ClickHouse of `data_dir`, if it is alive."""
    try:
        info = json.loads((data_dir / RUN_FILE).read_text())
        os.kill(info["pid"], 0)
        return info
    except (OSError, ValueError, KeyError):
        return None


# ClickHouse's readonly level of every reader: SELECT with SETTINGS of its own (the readers set join_use_nulls), never
# INSERT (into a table or a file), DDL, ALTER or OPTIMIZE, nor `readonly` lowered; level 1 would refuse those SETTINGS
READ_ONLY = 2


def connect_reader(url: str | None, data_dir: Path) -> Client:
    """`infra.clickhouse.connect`, read-only for the client's whole session (chdb: its own handle, so the process's
    writers are unaffected). A server user whose profile is read-only already stays as it is."""
    client = connect(url, data_dir)
    current = client.server_settings.get("readonly")
    if current is None or current.value == "0":
        client.set_client_setting("readonly", READ_ONLY)
    return client


class SqlError(RuntimeError):
    """The query failed; the text is ClickHouse's message."""


Params = dict[str, Any] | None  # values of the query's {name:Type} placeholders


def query_local(client: Any, sql: str, params: Params = None) -> dict:
    """Run `sql` on `client` (blocking, serialized with the process's other calls on it)."""
    with client_lock(client):
        return _run(client, sql, params)


def query_local_raw(client: Any, sql: str, fmt: str, params: Params = None) -> bytes:
    """The result of `sql` in ClickHouse's output format `fmt` (the query has no FORMAT clause of its own)."""
    with client_lock(client):
        return client.raw_query(sql, parameters=params, fmt=fmt)


def _run(client: Any, sql: str, params: Params = None) -> dict:
    result = client.query(sql, parameters=params)
    return {"columns": list(result.column_names), "types": [t.name for t in result.column_types],
            "rows": [[_json_value(v) for v in row] for row in result.result_rows]}


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)  # Decimal, datetime, date, UUID, IP addresses


async def serve(client: Any, host: str = "127.0.0.1", port: int = 0,
                close_client: bool = False) -> tuple[web.AppRunner, int]:
    """Start the endpoint on `client` (`connect_reader`'s, so that it only reads); returns the runner
    (`await runner.cleanup()` stops it, and closes the client with `close_client`) and the bound port."""

    async def sql(request: web.Request) -> web.Response:
        text = (await request.text()).strip()
        if not text:
            return web.Response(status=400, text="empty query")
        fmt = request.query.get("format")
        try:
            params = json.loads(request.query["params"]) if "params" in request.query else None
        except ValueError as exc:
            return web.Response(status=400, text=f"params is not a JSON object: {exc}")
        try:
            if fmt:
                return web.Response(body=await call(client, client.raw_query, text, parameters=params, fmt=fmt),
                                    content_type="application/octet-stream")
            return web.json_response(await call(client, _run, client, text, params))
        except Exception as exc:
            return web.Response(status=400, text=str(exc))

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=16 << 20)
    app.router.add_post("/sql", sql)
    app.router.add_get("/health", health)
    if close_client:
        async def close(_: web.Application) -> None:
            await call(client, client.close)
        app.on_cleanup.append(close)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]  # the bound port, also when port=0


def query_remote(port: int, sql: str, host: str = "127.0.0.1", timeout: float = 60.0, params: Params = None) -> dict:
    """Ask the owning process's endpoint; raises SqlError with ClickHouse's message if the query fails."""
    return _post(port, sql, host, timeout, _url_params(params)).json()


def query_remote_raw(port: int, sql: str, fmt: str, host: str = "127.0.0.1", timeout: float = 60.0,
                     params: Params = None) -> bytes:
    """query_remote, the result in ClickHouse's output format `fmt`."""
    return _post(port, sql, host, timeout, {"format": fmt} | _url_params(params)).content


def _url_params(params: Params) -> dict[str, str]:
    return {"params": json.dumps(params)} if params else {}


def _post(port: int, sql: str, host: str, timeout: float, params: dict[str, str] | None = None) -> httpx.Response:
    response = httpx.post(f"http://{host}:{port}/sql", params=params, content=sql.encode(), timeout=timeout)
    if response.status_code == 400:
        raise SqlError(response.text)
    response.raise_for_status()
    return response
