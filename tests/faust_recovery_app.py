"""Tiny Faust app for tests/integration/test_broker_recovery.py, run as a worker subprocess:

    KAFKA_BOOTSTRAP=host:port APP_ID=x STATUS_FILE=path [TANSU_FIX=1] [WRITES_PER_EVENT=5] \
        python tests/faust_recovery_app.py worker

Each "inc" event on topic "$APP_ID-input" bumps a changelogged counter WRITES_PER_EVENT
times; every event, "probe" included, then writes the counter to STATUS_FILE as JSON.
TANSU_FIX=0 runs stock Faust (apply(tansu=False)), only with the 100 ms fetch wait.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faust  # noqa: E402

from agents.app import faust_settings  # noqa: E402
from infra.tansu import apply  # noqa: E402

WRITES_PER_EVENT = int(os.environ.get("WRITES_PER_EVENT", "5"))
APP_ID = os.environ.get("APP_ID", "recovery-test")

apply(tansu=os.environ.get("TANSU_FIX", "1") == "1", fetch_max_wait_ms=100)

app = faust.App(
    APP_ID,
    broker=f"kafka://{os.environ.get('KAFKA_BOOTSTRAP', '127.0.0.1:9092')}",
    datadir=os.environ.get("DATADIR", "/tmp/faust-recovery-test"),
    store="memory://",  # nothing local survives a restart: recovery is changelog-only
    topic_partitions=1,
    web_enabled=False,
    # An event's changelog writes usually share a batch at linger 0 too, but not
    # always; 50 ms makes the "last batch holds several records" case deterministic.
    **faust_settings(producer_linger=0.05),
)
inputs = app.topic(f"{APP_ID}-input", value_type=str, partitions=1)
counter = app.Table("counter", default=int, partitions=1)


def _write_status(**data: object) -> None:
    path = os.environ["STATUS_FILE"]
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


@app.agent(inputs)
async def count(stream):  # type: ignore[no-untyped-def]
    async for kind in stream:
        if kind == "inc":
            for _ in range(WRITES_PER_EVENT):
                counter["total"] += 1
        _write_status(kind=kind, total=counter["total"], pid=os.getpid())


if __name__ == "__main__":
    app.main()
