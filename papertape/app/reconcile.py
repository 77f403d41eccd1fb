"""`papertape reconcile [--session S]`: a session on Bybit checked against the exchange now (a `reconcile` control;
the engine asks the gateway for a snapshot and writes what it found on `reconciliation`), and the check's rows
printed from the archive once the recorder stored them."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from papertape.app.formatting import format_table, utc_time
from papertape.app.sessions import CliError, _send, control, data_dir_of, from_archive
from papertape.config import run_settings
from schemas.vocabulary import BYBIT_VENUES

ROWS = ("SELECT ts, session, difference, symbol, order_id, papertape, exchange, adopted FROM reconciliation "
        "WHERE check = {check:String} ORDER BY id")


def main(args) -> int:
    try:
        return reconcile(args, data_dir_of(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


def reconcile(args, data_dir: Path) -> int:
    sessions = [args.session] if args.session else exchange_sessions(data_dir)
    differences = 0
    for session in sessions:
        ctrl = control(session, "reconcile")
        _send(data_dir, ctrl, say=False)
        rows = wait_for_rows(data_dir, ctrl.id, args.wait_s)
        differences += sum(1 for r in rows if r[2] != "none")
        if args.json:
            print(json.dumps([dict(zip(("ts", "session", "difference", "symbol", "order_id", "papertape",
                                        "exchange", "adopted"), r)) for r in rows], default=str))
            continue
        print(format_table({"columns": ["time", "session", "difference", "symbol", "order", "papertape", "exchange",
                                        "adopted"], "types": [""] * 8,
                            "rows": [[utc_time(r[0]), *("" if v is None else str(v) for v in r[1:])] for r in rows]},
                           max_width=70))
        print(f"{session}: {sum(1 for r in rows if r[2] != 'none')} differences")
    return 1 if differences else 0


def exchange_sessions(data_dir: Path) -> list[str]:
    settings = run_settings(data_dir)
    found = [c.id for c in settings.sessions if c.venue in BYBIT_VENUES] if settings else []
    if not found:
        raise CliError(f"no session on Bybit in the run of {data_dir}: name one with --session")
    return found


def wait_for_rows(data_dir: Path, check: str, wait_s: float) -> list[list]:
    """The check's rows, once its summary row (difference 'none', written last) is in the archive."""
    deadline = time.monotonic() + wait_s
    while True:
        rows = from_archive(data_dir, lambda q: q(ROWS, {"check": check})["rows"])
        if any(r[2] == "none" for r in rows):
            return rows
        if time.monotonic() > deadline:
            raise CliError(f"no reconciliation {check} within {wait_s:g} s: is the Bybit gateway running? "
                           f"(`papertape alerts list` shows its errors)")
        time.sleep(0.5)
