"""Issue 20: the compiled core (mypyc, papertape/native.py and setup.py) against its .py, the reference.

The same run (md.events batches -> MarketPartition -> Engine partitions with EMA-cross sessions, a scripted session
placing market and resting limit orders, and a seeded session placing, amending and cancelling at random) goes once
in a subprocess on the compiled modules and once in a subprocess with PAPERTAPE_PURE_PYTHON=1: every message either
sends (encoded by schemas.encode) must be the same bytes, and every checkpoint (to_dict) the same. The compiled run
must really have run compiled modules: a missing, failed or stale build fails here (rebuild: `pip install -e .`).

This file is also the runner of those subprocesses: `python tests/unit/test_compiled_core.py OUT SCENARIO...`.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # as a script (the subprocesses), the repository is not on the path


def _load(name: str) -> Any:
    """bench/ is not a package, and bench/hostile.py would shadow tests/hostile.py on sys.path: loaded by file."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synthetic = _load("synthetic")  # before bench_core, which imports it by this name
bench_core = _load("bench_core")

import schemas as s  # noqa: E402
from papertape import native  # noqa: E402
from papertape.core.engine import Engine  # noqa: E402
from papertape.core.instruments import DEFAULT_INSTRUMENTS  # noqa: E402
from papertape.core.session.config import SessionConfig  # noqa: E402
from papertape.core.session.risk import RiskSettings  # noqa: E402
from streams.frames.wire import WireFrame  # noqa: E402

SPECS = {"BTCUSDT": (Decimal("0.1"), Decimal("0.001"), 600_000), "ETHUSDT": (Decimal("0.01"), Decimal("0.01"), 300_000)}
T0 = 1_723_161_600_000


# --- the run (in the subprocesses) ---------------------------------------------------------------------------
def random_frames(seed: int, n: int) -> list[WireFrame]:
    """n frames of BTCUSDT and ETHUSDT in event-time order: random walks of the mid, books built and changed level
    by level (snapshots, removals, stale levels left crossing the new mid), trades through them, tickers with
    marks and funding, a feed going stale now and then."""
    rng = random.Random(seed)
    mid = {sym: spec[2] for sym, spec in SPECS.items()}  # in ticks
    ts, out, seen = T0, [], set()
    for i in range(n):
        sym = rng.choice(list(SPECS))
        tick, lot, _ = SPECS[sym]
        ts += rng.choice((0, 0, 1, 3, 20, 150, 900))
        mid[sym] += rng.randint(-4, 4)

        def px(k: int, m: int = mid[sym], tick: Decimal = tick) -> str:
            return format((m + k) * tick, "f")

        def qty(zero: float = 0.0, lot: Decimal = lot) -> str:
            return "0" if rng.random() < zero else format(rng.randint(1, 400) * lot, "f")

        snapshot = sym not in seen or rng.random() < 0.01
        seen.add(sym)
        fields: dict[str, Any] = {"id": f"r{seed}:{i}", "ts": ts, "venue": "random", "symbol": sym,
                                  "recv_ts": ts * 1_000_000, "snapshot": snapshot}
        if snapshot or rng.random() < 0.6:
            depth = 20 if snapshot else rng.randint(1, 4)
            fields["bids"] = [(px(-rng.randint(1, 30)), qty(0 if snapshot else 0.3)) for _ in range(depth)]
            fields["asks"] = [(px(rng.randint(1, 30)), qty(0 if snapshot else 0.3)) for _ in range(depth)]
        else:
            fields |= {"bid": px(-1), "bid_qty": qty(), "ask": px(1), "ask_qty": qty()}
        if rng.random() < 0.4:
            fields["trades"] = [{"ts": ts, "price": px(rng.randint(-6, 6)), "qty": qty(),
                                 "side": rng.choice(("buy", "sell"))} for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.05:
            fields["ticker"] = {"mark": px(rng.randint(-2, 2)), "last": px(0),
                                "funding_rate": format(Decimal(rng.randint(-50, 50)) / 100_000, "f"),
                                "next_funding_ts": ts - ts % 3_600_000 + 3_600_000}
        if rng.random() < 0.005:
            fields["status"] = rng.choice(("stale", "unavailable"))
        frame = s.MarketFrame(**fields)
        out.append(WireFrame(ts, ts * 1_000_000, sym, len(frame.trades), frame.model_dump_json().encode(),
                             frame.status == "live"))
    return out


def random_orders(seed: int, frames: list[s.MarketFrame]) -> SessionConfig:
    """A session placing market and limit orders on both symbols at random (sizes from one lot to far beyond the
    cash), amending and cancelling some of them."""
    rng = random.Random(seed + 1)
    orders: list[dict[str, Any]] = []
    for f in rng.sample(frames, min(len(frames), 300)):
        tick, lot, _ = SPECS[f.symbol]
        ref = Decimal(f.trades[-1].price if f.trades else f.bid or f.ask or (f.bids or f.asks)[0][0])
        item = {"at": f.ts, "id": f"o{len(orders)}", "symbol": f.symbol, "side": rng.choice(("buy", "sell")),
                "qty": format(lot * rng.choice((1, 3, 20, 500, 50_000)), "f")}
        if rng.random() < 0.6:
            item |= {"type": "limit", "price": format(ref + tick * rng.randint(-30, 30), "f")}
        orders.append(item)
        if rng.random() < 0.2:
            change = {"cancel": item["id"]} if rng.random() < 0.5 else {
                "amend": item["id"], "price": format(ref + tick * rng.randint(-10, 10), "f")}
            orders.append({"at": f.ts + rng.randint(0, 5_000), **change})
    return SessionConfig(id="random", strategy="scripted", params={"orders": orders}, risk=RiskSettings.off())


def run(scenario: str) -> dict[str, Any]:
    """Every message of the run (encoded) and every checkpoint at its end."""
    kind, _, arg = scenario.partition(":")
    wire = synthetic.load_tape() if kind == "tape" else random_frames(int(arg), 4000)
    batches = [(p, s.decode("md.events", v)) for p, v in bench_core.md_messages(wire)]
    frames = [f for _, b in batches for f in b.frames]
    sessions = synthetic.ema_sessions(3) + [bench_core.scripted_session(frames)]
    if kind == "random":
        sessions.append(random_orders(int(arg), frames))
    market, engines = bench_core.new_market(sessions, 2), bench_core.new_engines(sessions, 2)
    messages = [s.encode(m).decode() for m in bench_core.chained(market, engines, batches)]
    checkpoints = [json.dumps(x.to_dict(), sort_keys=True, default=repr) for x in [*market, *engines]]
    return {"messages": messages, "checkpoints": checkpoints}


def loaded_from() -> dict[str, str]:
    return {m: sys.modules[m].__file__ or "" for m in native.COMPILED if m in sys.modules}


# --- the tests -------------------------------------------------------------------------------------------------
def both(*scenarios: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The scenarios' results from a compiled run and from a pure-Python run (each its own subprocess)."""
    results = []
    for pure in (False, True):
        env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV} | ({native.PURE_ENV: "1"} if pure else {})
        done = subprocess.run([sys.executable, __file__, *scenarios], env=env, capture_output=True, text=True,
                              cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results.append(json.loads(done.stdout))
    return results[0], results[1]


def assert_compiled(result: dict[str, Any]) -> None:
    """Every module of native.COMPILED ran from its build: a missing, failed or stale build fails here."""
    built = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    py = {m: f for m, f in result["loaded_from"].items() if not f.endswith(built)}
    assert set(result["loaded_from"]) == set(native.COMPILED), "a compiled module was not imported by the run"
    assert not py, f"{result['status']}: these ran from their .py: {sorted(py)}; rebuild with `pip install -e .`"


def assert_identical(compiled: dict[str, Any], pure: dict[str, Any]) -> None:
    assert all(f.endswith(".py") for f in pure["loaded_from"].values()), pure["loaded_from"]
    for scenario, got in compiled["runs"].items():
        want = pure["runs"][scenario]
        first = next((i for i, (a, b) in enumerate(zip(got["messages"], want["messages"])) if a != b), None)
        assert first is None, f"{scenario}: message {first} differs:\ncompiled {got['messages'][first]}\n" \
                              f"pure     {want['messages'][first]}"
        assert len(got["messages"]) == len(want["messages"]), scenario
        assert got["checkpoints"] == want["checkpoints"], scenario


@pytest.mark.slow
def test_random_input_gives_identical_bytes_compiled_and_pure() -> None:
    compiled, pure = both("random:1", "random:2", "random:3")
    assert_identical(compiled, pure)
    assert_compiled(compiled)
    kinds = {json.loads(m)["kind"] for r in pure["runs"].values() for m in r["messages"]}
    assert {"ticks", "mark", "fill", "order_event"} <= kinds, kinds  # the runs did trade


@pytest.mark.slow
def test_bundled_tape_gives_identical_bytes_compiled_and_pure() -> None:
    compiled, pure = both("tape")
    assert_identical(compiled, pure)
    assert_compiled(compiled)
    assert sum('"kind":"fill"' in m for m in pure["runs"]["tape"]["messages"]) > 100


def test_an_engine_restored_from_its_json_checkpoint_goes_on_as_the_uninterrupted_one() -> None:
    """The compiled core checks the types it declares: a checkpoint's ticks come back from JSON with arrays where a
    Tick has tuples (depth, its level changes, funding), and with string level keys when saved before they were
    floats. Ticks of one origin wait in the merger for the other's watermark when the checkpoint is taken."""
    cfg = SessionConfig(id="e", strategy="ema_cross", params={"fast": 2, "slow": 3, "bar_ms": 100})

    def batch(origin: int, seq: int, ticks: list[s.Tick], wm: int) -> s.TickBatch:
        return s.TickBatch(id=f"{origin}:{seq}", ts=wm, origin=origin, seq=seq, wm=wm, ticks=ticks)

    waiting = [s.Tick("BTCUSDT", 1000 + 50 * i, f"{60000 + i}.5", f"{60001 + i}.5", "1", "2",
                      [s.TickTrade(1000 + 50 * i, f"{60001 + i}.5", "0.01", "buy")], i, None, "live", None,
                      ([(60000.5 + i, "1"), (59990.0, "0")], [(60001.5 + i, "2")], i == 0), ("0.0001", 1_000_000))
               for i in range(12)]
    engines = [Engine(0, 2, DEFAULT_INSTRUMENTS, [cfg]) for _ in range(3)]
    for eng in engines:
        eng.on_ticks(batch(0, 0, waiting, 2000))
    saved = orjson.loads(orjson.dumps(engines[0].to_dict(), default=list))
    assert len(saved["merger"]["queues"][0]) == 12  # the ticks wait for origin 1
    old = orjson.loads(orjson.dumps(saved))
    for t in old["merger"]["queues"][0]:  # as saved before level keys were floats
        t[11] = [[[repr(p), q] for p, q in t[11][0]], [[repr(p), q] for p, q in t[11][1]], t[11][2]]
    engines[1] = Engine(0, 2, DEFAULT_INSTRUMENTS, [cfg])
    engines[1].load(saved)
    engines[2] = Engine(0, 2, DEFAULT_INSTRUMENTS, [cfg])
    engines[2].load(old)
    outs = [eng.on_ticks(batch(1, 0, [], 2000)) for eng in engines]
    assert outs[0], "nothing came out: the run tests nothing"
    assert [[m.model_dump_json() for m in out] for out in outs[1:]] == [[m.model_dump_json() for m in outs[0]]] * 2
    states = [orjson.dumps(eng.to_dict(), default=list) for eng in engines]
    assert states[1] == states[0] and states[2] == states[0]


def touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def test_the_build_is_used_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mypyc's modules call each other's compiled code: a missing or stale part sends every module to its .py."""
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]

    def base(module: str) -> Path:
        return tmp_path.joinpath(*module.split("."))

    first, last = native.COMPILED[0], native.COMPILED[-1]
    pys = [touch(base(m).with_suffix(".py"), 1_000) for m in native.COMPILED]
    assert native.choose(first, str(tmp_path)) == native.Choice(first, str(pys[0]), False, native.NOT_BUILT)
    shims = [touch(Path(str(base(m)) + suffix), 2_000) for m in native.COMPILED]
    assert native.choose(first, str(tmp_path)).compiled is False  # no shared library yet
    lib = touch(Path(str(base(native.SHARED_LIB)) + suffix), 2_000)
    assert native.choose(first, str(tmp_path)) == native.Choice(first, str(shims[0]), True)
    assert native.choose(native.SHARED_LIB, str(tmp_path)) is None  # the default finders load it
    os.utime(pys[-1], (3_000, 3_000))  # another module's source changed: the whole build is stale
    assert native.choose(first, str(tmp_path)) == native.Choice(first, str(pys[0]), False, native.STALE)
    os.utime(lib, (4_000, 4_000))
    assert native.choose(first, str(tmp_path)).compiled is True
    shims[-1].unlink()
    assert native.choose(first, str(tmp_path)).reason == native.NOT_BUILT
    touch(shims[-1], 4_000)
    monkeypatch.setenv(native.PURE_ENV, "1")
    assert native.choose(last, str(tmp_path)) == native.Choice(last, str(pys[-1]), False, f"{native.PURE_ENV} set")


def test_a_leftover_build_of_a_module_not_listed_is_refused(tmp_path: Path) -> None:
    name = "papertape.core.not_listed"
    base = tmp_path.joinpath(*name.split("."))
    assert native.choose(name, str(tmp_path)) is None  # not ours: the default finders load it
    touch(base.with_suffix(".py"), 1_000)
    touch(Path(str(base) + importlib.machinery.EXTENSION_SUFFIXES[0]), 2_000)
    assert native.choose(name, str(tmp_path)) == native.Choice(name, str(base.with_suffix(".py")), False,
                                                                "a leftover build, not in native.COMPILED")


if __name__ == "__main__":
    runs = {scenario: run(scenario) for scenario in sys.argv[1:]}
    print(json.dumps({"status": native.status(), "loaded_from": loaded_from(), "runs": runs}))
