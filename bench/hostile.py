"""Hostile input at volume (issue 19), the full run: `--per-topic` generated messages on each of md.events,
orders, signals and control (tests/hostile.py: most broken on purpose, the rest valid), then the bundled tape,
through the embedded pipeline. Prints, per topic, what was sent and what papertape made of it side by side, the
throughput, and every broken promise (exit 1 if any): a worker that died, a refusal without its dead letter or a
dead letter without its refusal, a valid order without an order event.

    python bench/hostile.py --per-topic 100000
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from hostile import TOPICS, Outcome, broken_promises, run_hostile  # noqa: E402

from papertape.app.runtime import Pipeline  # noqa: E402
from papertape.config import Settings  # noqa: E402
from papertape.core.session.config import SessionConfig  # noqa: E402


async def main(per_topic: int, seconds: int, seed: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="papertape-hostile-") as tmp:
        session = SessionConfig(id="ext", strategy="scripted", params={"orders": []}, latency_ms=50)
        settings = Settings(data_dir=Path(tmp), md_partitions=2, session_partitions=2, sessions=[session],
                            replay_seconds=seconds).with_env()
        pipe = Pipeline(settings, console_alerts="critical")
        await pipe.start()
        try:
            return await run_hostile(pipe, per_topic, seed, wait_s=1800)
        finally:
            await pipe.stop()


def report(out: Outcome) -> list[str]:
    expected = out.expected()
    sent = Counter(h.topic for h, _, _ in out.sent)
    must = Counter({t: 0 for t in TOPICS})
    for (topic, _, _), n in expected.items():
        must[topic] += n
    got = Counter(d["topic"] for d in out.dead)
    events = Counter(h.topic for h, _, _ in out.sent if h.event_of)
    served = Counter(h.topic for h, _, _ in out.sent if h.event_of and h.event_of in out.order_events)
    print(f"{'topic':<10} {'sent':>9} {'must refuse':>12} {'dead letters':>13} {'valid orders':>13} "
          f"{'with events':>12}")
    for t in TOPICS:
        print(f"{t:<10} {sent[t]:>9,} {must[t]:>12,} {got[t]:>13,} {events[t]:>13,} {served[t]:>12,}")
    total = len(out.sent)
    s = out.seconds
    print(f"\nproduced {total:,} messages in {s['produce']:.1f} s ({total / s['produce']:,.0f}/s); tape replayed and "
          f"finished in {s['replay']:.1f} s; every dead letter recorded {s['dead letters']:.1f} s after the first send "
          f"({sum(got.values()) / s['dead letters']:,.0f} dead letters/s)")
    print("mutations:", ", ".join(f"{m} {n:,}" for m, n in Counter(h.mutation for h, _, _ in out.sent).most_common()))
    return broken_promises(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-topic", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=60, help="of the bundled tape to replay")
    ap.add_argument("--seed", type=int, default=19)
    args = ap.parse_args()
    problems = report(asyncio.run(main(args.per_topic, args.seconds, args.seed)))
    print("\n".join(["", *problems]) if problems else "\nevery promise kept")
    sys.exit(1 if problems else 0)
