"""Issue 19's chaos run, reduced for CI (the full one: `python bench/chaos.py`, figures in the README): a minute of
the bundled real tape through two workers, the recorder and the alert relay on an Apache Kafka broker, while a
seeded schedule SIGKILLs the workers, the recorder and the relay, kills and restarts the broker, freezes the
archive and cuts one worker's network. Every table ends as in an uninterrupted run, sorted; every alert reached the
webhook."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from builders import ROOT
from infra.kafka import unavailable_reason

# bench/ is not a package, and bench/hostile.py would shadow tests/hostile.py on sys.path: loaded by its file
_spec = importlib.util.spec_from_file_location("bench_chaos", ROOT / "bench" / "chaos.py")
assert _spec is not None and _spec.loader is not None
chaos = importlib.util.module_from_spec(_spec)
sys.modules["bench_chaos"] = chaos  # the dataclasses of the module look themselves up there
_spec.loader.exec_module(chaos)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200),
              pytest.mark.skipif(unavailable_reason() is not None, reason=f"Apache Kafka: {unavailable_reason()}")]


def test_a_reduced_chaos_run_loses_and_doubles_nothing(tmp_path):
    figures = chaos.run(tmp_path, seconds=60, speed=3, seed=19, kills=6, freeze_s=8, cut_s=6)
    assert figures["problems"] == [], "\n".join(figures["problems"] + figures["faults"])
    assert sum(figures["starts"].values()) >= 4 + 6  # each process started once, and once more per kill
    assert figures["rows"]["fills"] >= 6 and figures["rows"]["md_trades"] > 1000  # the scenario traded
    assert figures["alerts"] > 0
