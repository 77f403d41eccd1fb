"""Issue 19's chaos run, reduced for CI (the full one: `python bench/chaos.py`, figures in the README): a minute of
the bundled real tape through two workers, the recorder and the alert relay on an Apache Kafka broker, while a
seeded schedule SIGKILLs the workers, the recorder and the relay, kills and restarts the broker, freezes the
archive and cuts one worker's network. Every table ends as in an uninterrupted run, sorted; every alert reached the
webhook."""
from __future__ import annotations

import sys

import pytest

from builders import ROOT
from infra.kafka import unavailable_reason

sys.path.insert(0, str(ROOT / "bench"))
import chaos  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200),
              pytest.mark.skipif(unavailable_reason() is not None, reason=f"Apache Kafka: {unavailable_reason()}")]


def test_a_reduced_chaos_run_loses_and_doubles_nothing(tmp_path):
    figures = chaos.run(tmp_path, seconds=60, speed=3, seed=19, kills=6, freeze_s=8, cut_s=6)
    assert figures["problems"] == [], "\n".join(figures["problems"] + figures["faults"])
    assert sum(figures["starts"].values()) >= 4 + 6  # each process started once, and once more per kill
    assert figures["rows"]["fills"] >= 6 and figures["rows"]["md_trades"] > 1000  # the scenario traded
    assert figures["alerts"] > 0
