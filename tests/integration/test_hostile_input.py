"""Hostile input at volume through the real pipeline (issue 19): thousands of generated messages on md.events,
orders, signals and control (tests/hostile.py), most of them broken, mixed with valid ones, then the tape.
No worker may die; every message the contract refuses is a dead letter with its reason (one per bad frame of a
batch), at its own offset, and nothing else is; every valid order gets its order events; the test sessions started
and stopped through control end as their controls said. `python bench/hostile.py --per-topic 100000` is the full
run."""
import asyncio
from collections import Counter

import pytest
from hostile import TOPICS, Outcome, broken_promises, run_hostile

from builders import run_settings
from papertape.app.runtime import Pipeline
from papertape.core.session.config import SessionConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
PER_TOPIC = 2000
SECONDS = 30


async def hostile_run(tmp_path, per_topic: int) -> Outcome:
    session = SessionConfig(id="ext", strategy="scripted", params={"orders": []}, latency_ms=50)
    settings = run_settings(data_dir=tmp_path, md_partitions=2, session_partitions=2, sessions=[session],
                            replay_seconds=SECONDS)
    pipe = Pipeline(settings, console_alerts="critical")
    await pipe.start()
    try:
        return await run_hostile(pipe, per_topic, wait_s=120)
    finally:
        await pipe.stop()


def test_hostile_input_at_volume_is_refused_message_by_message_and_the_rest_is_processed(tmp_path):
    out = asyncio.run(hostile_run(tmp_path, PER_TOPIC))
    assert not broken_promises(out), broken_promises(out)
    kinds = Counter(h.mutation for h, _, _ in out.sent)
    assert len(out.sent) == PER_TOPIC * len(TOPICS) and len(kinds) >= 20, kinds
    assert sum(h.refused for h, _, _ in out.sent) > PER_TOPIC  # most of it hostile
