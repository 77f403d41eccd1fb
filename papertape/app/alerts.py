"""`papertape alerts list | ack`: the stored alerts with their acknowledgement and what each channel made of them,
and acknowledgements sent to `alerts.status` (as the API's ack button sends them)."""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from papertape.app.api import reads
from papertape.app.api.writes import Writer, acknowledgement
from papertape.app.formatting import format_table, utc_time
from papertape.app.sessions import SEND_TIMEOUT_S, CliError, bootstrap_servers, data_dir_of, from_archive


def main(args) -> int:
    try:
        return (cmd_list if args.alerts_command == "list" else cmd_ack)(args, data_dir_of(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


def cmd_list(args, data_dir: Path) -> int:
    found = from_archive(data_dir, lambda q: reads.alerts(q, args.severity or [], args.type or [], args.session,
                                                          False if args.unacknowledged else None, args.limit))
    if args.json:
        print(json.dumps(found, default=str))
        return 0
    rows = [[utc_time(a["ts"]), a["severity"], a["type"], a["session"] or "", a["title"], a["text"][:80],
             utc_time(a["acknowledged_ts"]) if a["acknowledged_ts"] else "",
             ", ".join(f"{d['channel']}: {d['outcome']}" for d in a["deliveries"]), a["id"]] for a in found]
    print(format_table({"columns": ["time", "severity", "type", "session", "title", "text", "acknowledged",
                                    "deliveries", "id"], "types": [""] * 9, "rows": rows}, max_width=80))
    return 0


def cmd_ack(args, data_dir: Path) -> int:
    unknown = from_archive(data_dir, lambda q: [i for i in args.ids if not reads.alert_exists(q, i)])
    if unknown:
        raise CliError(f"no alert {', '.join(map(repr, unknown))} in the archive (`papertape alerts list` shows ids)")
    bootstrap, names = bootstrap_servers(data_dir)
    now = int(time.time() * 1000)
    acks = [acknowledgement(i, args.by, now) for i in args.ids]

    async def send() -> None:
        writer = Writer(bootstrap, names)
        await writer.start()
        try:
            for ack in acks:
                await writer.send(ack)
        finally:
            await writer.stop()

    try:
        asyncio.run(asyncio.wait_for(send(), SEND_TIMEOUT_S))
    except Exception as exc:
        raise CliError(f"could not send to Kafka at {bootstrap}: {str(exc) or type(exc).__name__}") from None
    print(f"acknowledged {len(acks)} alert(s); the recorder stores it (alert_acks)")
    return 0
