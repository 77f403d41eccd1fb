"""One bench, every embedded broker (`--brokers kafka,tansu`): a run per broker, then the figures side by side.

With more than one broker each is measured in its own child process (the same script, `--brokers B
--figures-out FILE`), one after the other: the supervisor's CPU and peak RSS, chdb's one open data directory and
the Tansu client fixes (process-wide once a Tansu pipeline started) do not carry over from one broker's run into
the next. A child prints its run as the script always did and writes its figures as JSON; the parent prints the
table. With one broker the run happens in-process.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from infra.kafka import EmbeddedKafka, unavailable_reason

BROKERS = ("kafka", "tansu")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--brokers", default="kafka,tansu",
                    help="embedded brokers to measure, one after the other, comma separated (default kafka,tansu)")
    ap.add_argument("--figures-out", help=argparse.SUPPRESS)  # a child run: write the figures here as JSON


def parse_brokers(text: str) -> list[str]:
    brokers = [b.strip().lower() for b in text.split(",") if b.strip()]
    bad = [b for b in brokers if b not in BROKERS]
    if bad or not brokers:
        raise SystemExit(f"--brokers: pick from {', '.join(BROKERS)} (got {text!r})")
    return list(dict.fromkeys(brokers))


def check_available(broker: str) -> None:
    """Refuse to measure Kafka where the Pipeline would quietly fall back to Tansu."""
    if broker == "kafka":
        if (why := unavailable_reason()) is not None:
            raise SystemExit(f"cannot measure Apache Kafka here: {why}")


def describe(pipe) -> str:
    """What the pipeline's embedded broker is, for the prints."""
    broker = pipe.broker
    if isinstance(broker, EmbeddedKafka):
        return f"embedded Apache Kafka {broker.version} (KRaft, {broker.n} node{'s' * (broker.n > 1)})"
    m = re.search(r"v?(\d+\.\d+\.\d+)", Path(getattr(broker, "binary", "")).name)
    return f"embedded Tansu{' ' + m.group(1) if m else ''} (memory storage)"


class Figures:
    """The figures of one broker's run: label, formatted cell, target text, whether it is met."""

    def __init__(self) -> None:
        self.broker = ""
        self.rows: list[dict] = []

    def add(self, label: str, value, fmt: str = "{:,.1f}", target: tuple[str, float] | None = None,
            target_text: str | None = None, check_at: int | None = None, met: bool | None = None) -> None:
        """`value`: a number, a list of numbers (shown "a / b / c"; `check_at` picks the one the target judges), a
        string, or None (not measured). `target`: (op, threshold), op one of >=, <=, <, >, ==; or `target_text`
        with `met` given."""
        if value is None or (isinstance(value, float) and value != value):
            cell = "-"
        elif isinstance(value, str):
            cell = value
        elif isinstance(value, (list, tuple)):
            cell = " / ".join("-" if v is None or v != v else fmt.format(v) for v in value)
        else:
            cell = fmt.format(value)
        if target is not None:
            op, threshold = target
            v = value[check_at] if isinstance(value, (list, tuple)) and check_at is not None else value
            if isinstance(v, (int, float)) and v == v:
                met = {">=": v >= threshold, "<=": v <= threshold, "<": v < threshold, ">": v > threshold,
                       "==": v == threshold}[op]
            else:
                met = False
            target_text = target_text or f"{op} {fmt.format(threshold)}"
        self.rows.append({"label": label, "cell": cell, "target": target_text or "", "met": met})

    def to_json(self) -> dict:
        return {"broker": self.broker, "rows": self.rows}


def print_table(title: str, results: dict[str, dict | str]) -> None:
    """results: broker -> Figures.to_json(), or a string saying why that run failed."""
    labels: list[str] = []
    targets: dict[str, str] = {}
    cells: dict[str, dict[str, str]] = {}
    for broker, res in results.items():
        cells[broker] = {}
        if isinstance(res, str):
            continue
        for row in res["rows"]:
            if row["label"] not in targets:
                labels.append(row["label"])
                targets[row["label"]] = row["target"]
            targets[row["label"]] = targets[row["label"]] or row["target"]
            mark = "" if row["met"] is None else ("  ok" if row["met"] else "  MISSED")
            cells[broker][row["label"]] = row["cell"] + mark
    brokers = list(results)
    head = ["figure", *brokers, "target"]
    body = [[label, *(cells[b].get(label, "-") for b in brokers), targets[label] or "-"] for label in labels]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:-1], widths[1:-1])]
                         + [r[-1].ljust(widths[-1])]).rstrip()

    print(f"\n=== {title}: per broker ===", flush=False)
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r in body:
        print(line(r))
    for broker, res in results.items():
        print(f"  {broker}: " + (f"FAILED: {res}" if isinstance(res, str) else res["broker"]))
    print("  ok / MISSED: the figure against its target", flush=True)


def run(args: argparse.Namespace, title: str, measure: Callable[[str], Awaitable[Figures]]) -> None:
    """Measure every broker of args.brokers with `measure(broker)` and print the table (see the module doc)."""
    brokers = parse_brokers(args.brokers)
    if args.figures_out or len(brokers) == 1:
        if not args.figures_out:
            print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}", flush=True)
        results = {}
        for broker in brokers:
            check_available(broker)
            results[broker] = asyncio.run(measure(broker)).to_json()
        if args.figures_out:
            Path(args.figures_out).write_text(json.dumps(results[brokers[0]]))
        else:
            print_table(title, results)
        return

    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; brokers, one after the other: "
          f"{', '.join(brokers)}", flush=True)
    results: dict[str, dict | str] = {}
    for broker in brokers:
        fd, out = tempfile.mkstemp(prefix=f"bench-figures-{broker}-", suffix=".json")
        os.close(fd)
        print(f"\n##### broker: {broker} #####", flush=True)
        started = time.monotonic()
        try:
            # the same arguments; the last --brokers wins in argparse
            code = subprocess.call([sys.executable, sys.argv[0], *sys.argv[1:], "--brokers", broker,
                                    "--figures-out", out])
            text = Path(out).read_text()
            results[broker] = json.loads(text) if code == 0 and text else f"exit code {code} (its output is above)"
        finally:
            os.unlink(out)
        print(f"##### {broker}: {time.monotonic() - started:.0f} s wall #####", flush=True)
    print_table(title, results)
