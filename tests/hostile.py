"""Hostile input at volume (issue 19): messages for the pipeline's input topics (md.events, orders, signals,
control), most of them broken on purpose, mixed with valid ones, each labelled with what papertape must do.

Plain seeded generators guided by the schemas' fields, not hypothesis: hypothesis draws outside a test
(`strategy.example()`) are neither deterministic nor fast enough for 100,000 messages a topic. A valid message is
built field by field as its model declares them; a hostile one is a valid one with one mutation. The label comes
from the mutation, never from papertape's code: the contract is the schema (what `Model.model_validate_json`
refuses) plus what no schema can know (an unknown symbol or session, a crossed quote, a frame on another symbol's
partition, a control that cannot apply). tests/unit/test_hostile_frames.py checks every label against the
schemas themselves, so a mutation that the schema happens to accept cannot pass as refused.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

import schemas as s
from schemas.codec import MAX_MESSAGE_BYTES
from schemas.topics import kafka_partition
from streams.sources.replay import Tape

TOPICS = ("md.events", "orders", "signals", "control")
UNKNOWN_SYMBOL = "NOPE1000USDT"
# What no schema refuses but papertape must: these mutations are refused by the agents, not by the schema.
SEMANTIC = {"unknown_symbol", "crossed_quote", "wrong_partition", "unknown_session", "bad_config",
            "restart_stopped"}
# An order, a signal or a control for a session no engine has is dead-lettered with the reason (papertape/core/
# engine.py); orders and signals got only an alert before issue 19.
DEAD_LETTERED_UNKNOWN_SESSION = {"control", "orders", "signals"}
# Orders whose quantity or price has more significant digits than the default decimal context (28) in a quotient by
# the lot step or tick size, or in its margin: they raised decimal.InvalidOperation in papertape/core and ended the
# engine worker at each restart (found here); the gate now refuses them with the reason (test_hostile_frames.py).
CRASHING = ({"qty": "1" + "0" * 30}, {"type": "limit", "tif": "IOC", "price": "1" + "0" * 30},
            {"type": "limit", "tif": "IOC", "price": "1", "qty": "9" * 38},
            {"qty": "1" + "0" * 24})
MAX_TEST_SESSIONS = 12  # started through control, beside the session under test
MODELS = {"order": s.Order, "signal": s.Signal, "control": s.Control, "frame": s.MarketFrame, "batch": s.MarketBatch,
          "watermark": s.Watermark}


@dataclass(frozen=True)
class World:
    """What the hostile traffic is aimed at: the tape's symbols and time, the running session, the partitions."""

    symbols: tuple[str, ...]
    session: str
    start: int  # the tape's first event time, ms
    span_ms: int  # valid orders and signals fall in [start, start + span_ms)
    md_partitions: int
    partition_of: Callable[[bytes, int], int]  # Kafka's default partitioner: (key, partitions) -> partition


@dataclass(frozen=True)
class Hostile:
    topic: str
    key: bytes | None
    value: bytes | None
    mutation: str  # "valid", or what was done to a valid message
    refusals: int  # dead letters papertape must write for it: 0 accepted, 1 refused, k for k bad frames of a batch
    partition: int | None = None  # an explicit partition (a frame sent where its symbol does not belong)
    event_of: str | None = None  # an external order that must get an order event: its id as order events name it

    @property
    def refused(self) -> bool:
        return self.refusals > 0


def generate(topic: str, n: int, world: World, seed: int = 19, valid_share: float = 0.4) -> list[Hostile]:
    """`n` messages for `topic`, the same for the same arguments."""
    gen = _Gen(topic, world, random.Random(f"{seed}:{topic}"), max(1, n // 5000))
    return [gen.valid() if gen.rng.random() < valid_share else gen.hostile() for _ in range(n)]


def interleaved(per_topic: int, world: World, seed: int = 19) -> list[Hostile]:
    """Every topic's messages, taken in turn."""
    return [h for group in zip(*(generate(t, per_topic, world, seed) for t in TOPICS)) for h in group]


class _Gen:
    def __init__(self, topic: str, world: World, rng: random.Random, oversized: int) -> None:
        self.topic, self.w, self.rng = topic, world, rng
        self.oversized_left = oversized  # 1 MiB each: a few per topic are enough
        self.n = 0
        self.sent: list[Hostile] = []  # valid ones, for duplicates
        self.controls: dict[str, str] = {}  # a started test session -> its state (control)

    def _id(self) -> str:
        self.n += 1
        return f"h{self.n}"

    def _ts(self) -> int:
        return self.w.start + self.rng.randrange(self.w.span_ms)

    def _symbol(self) -> str:
        return self.rng.choice(self.w.symbols)

    # --- valid messages, field by field as the models declare them ---------------------------------------------
    def base(self) -> dict:
        return getattr(self, "_" + self.topic.replace(".", "_"))()

    def _orders(self) -> dict:
        side = self.rng.choice(["buy", "sell"])
        o = {"kind": "order", "id": self._id(), "ts": self._ts(), "session": self.w.session, "symbol": self._symbol(),
             "side": side, "qty": self.rng.choice(["0.001", "0.01", "0.002"])}
        if self.rng.random() < 0.7:  # a limit IOC far from the market: an order event, no position
            o.update(type="limit", tif="IOC", price="1" if side == "buy" else "10000000")
        return o

    def _signals(self) -> dict:
        return {"kind": "signal", "id": self._id(), "ts": self._ts(), "session": self.w.session,
                "symbol": self._symbol(), "target": self.rng.choice(["long", "short", "flat"]),
                "confidence": round(self.rng.random(), 3), "reasoning": self.rng.choice(["", "é ✓ 中文", "x" * 300])}

    def _control(self) -> dict:
        # a session never started: a mutation the schema happens to take still cannot pause the session under test
        return {"kind": "control", "id": self._id(), "ts": self._ts(), "session": "hx-never", "command": "pause"}

    def _md_events(self) -> dict:
        sym = self._symbol()
        bid = self.rng.randrange(1000, 90000)
        return {"kind": "frame", "id": self._id(), "ts": self._ts(), "venue": "hostile", "symbol": sym,
                "recv_ts": 0, "bid": f"{bid}.5", "ask": f"{bid + 1}", "bid_qty": "1.25", "ask_qty": "3",
                "trades": [{"ts": self._ts(), "price": f"{bid}.5", "qty": "0.1", "side": "sell"}]}

    def valid(self) -> Hostile:
        if self.sent and self.rng.random() < 0.05:  # a duplicated id: the same message again
            return _replace(self.sent[self.rng.randrange(len(self.sent))], mutation="duplicate", event_of=None)
        if self.topic == "md.events":
            # Only what cannot move the market: valid frames injected here would change the sessions' results.
            # Watermarks and empty batches at time 0 promise nothing the tape has not.
            msg = self.rng.choice([{"kind": "watermark", "id": self._id(), "ts": 0, "origin": "hostile"},
                                   {"kind": "batch", "id": self._id(), "ts": 0, "origin": "hostile", "wm": 0,
                                    "frames": []}])
            return self._out(msg, "valid", 0, key=b"BTCUSDT")
        if self.topic == "control":
            return self._control_step()
        msg = self.base()
        event_of = f"{msg['session']}-x-{msg['id']}" if msg["kind"] == "order" else None
        h = self._out(msg, "valid", 0, event_of=event_of)
        self.sent.append(h)
        return h

    def _control_step(self) -> Hostile:
        """Test sessions of their own (at most MAX_TEST_SESSIONS: each one trades on every tick) through start,
        pause, resume, config and stop, one always left alive. The session under test is never paused or stopped:
        its orders must all be processed."""
        alive = [k for k, v in self.controls.items() if v != "stopped"]
        if not alive or len(self.controls) < MAX_TEST_SESSIONS and self.rng.random() < 0.05:
            sid = f"hx-{self._id()}"
            self.controls[sid] = "running"
            cfg = {"strategy": "scripted", "params": {"orders": []}, "symbols": [self._symbol()]}
            return self._out(self._ctl(sid, "start", cfg), "valid", 0)
        sid = self.rng.choice(alive)
        commands = ["pause", "resume", "config"] + ["stop"] * (len(alive) > 1 and self.rng.random() < 0.1)
        command = self.rng.choice(commands)
        self.controls[sid] = {"pause": "paused", "resume": "running", "stop": "stopped"}.get(command,
                                                                                             self.controls[sid])
        return self._out(self._ctl(sid, command, {"latency_ms": 20} if command == "config" else {}), "valid", 0)

    def _ctl(self, sid: str, command: str, config: dict) -> dict:
        return {"kind": "control", "id": self._id(), "ts": self._ts(), "session": sid, "command": command,
                "config": config}

    # --- hostile ones: a valid message and one mutation ----------------------------------------------------------
    def hostile(self) -> Hostile:
        mutations = list(_COMMON) + list(_BY_TOPIC[self.topic])
        name = self.rng.choice(mutations)
        if name == "oversized":
            if not self.oversized_left:
                name = "not_json"
            else:
                self.oversized_left -= 1
        return getattr(self, "m_" + name)()

    def m_not_json(self) -> Hostile:
        raw = self.rng.choice([b"{not json", b"", b"null", b"[]", b"42", b'"order"', b'{"kind": "order"',
                               json.dumps(self.base()).encode()[:-3]])
        return self._raw(raw, "not_json")

    def m_invalid_utf8(self) -> Hostile:
        text = json.dumps(self.base())
        cut = text.index('"id": "') + 7  # inside the id string: the JSON is well formed but for these bytes
        return self._raw(text[:cut].encode() + b"\xff\xfe\xc3(" + text[cut:].encode(), "invalid_utf8")

    def m_oversized(self) -> Hostile:
        msg = self.base()
        msg["id"] = msg["id"] + "x" * (MAX_MESSAGE_BYTES + 10)
        return self._out(msg, "oversized", 1)

    def m_drop_field(self) -> Hostile:
        msg = self.base()
        model = MODELS[msg["kind"]]
        # `kind` is required where the topic is a union of models (its discriminator); elsewhere it has a default
        required = [f for f, info in model.model_fields.items() if info.is_required()]
        del msg[self.rng.choice(required + ["kind"] * (self.topic in ("md.events", "orders")))]
        return self._out(msg, "drop_field", 1)

    def m_wrong_type(self) -> Hostile:
        msg = self.base()
        field = self.rng.choice([f for f in msg if f != "config"])
        msg[field] = self.rng.choice([[1], {"x": 1}] if field not in ("trades", "frames") else [{"x": 1}, "x"])
        return self._out(msg, "wrong_type", 1)

    def m_bad_number(self) -> Hostile:
        """NaN, infinities, negative, huge or exponent numbers where the schema wants a decimal."""
        msg = self.base()
        fields = {"orders": ["qty", "price"] if "price" in msg else ["qty"], "signals": ["confidence"],
                  "md.events": ["bid", "ask", "bid_qty", "ask_qty"], "control": ["ts"]}[self.topic]
        field = self.rng.choice(fields)
        bad = ["NaN", "Infinity", "-Infinity", "-1", "1e40", "1" + "0" * 40, "-0.5"]
        if self.topic == "md.events":
            bad += ["1E+5", "+1", " 1", "0x10", "1_000"]
        if field == "confidence":
            bad = [-1, 1.5, 1e40, "NaN", "inf"]
        if field == "ts":
            bad = [-1, 10**14, 10**18, 1.5, "NaN"]
        msg[field] = self.rng.choice(bad)
        return self._out(msg, "bad_number", 1)

    def m_bad_time(self) -> Hostile:
        msg = self.base()
        msg["ts"] = self.rng.choice([-1, -10**12, 10**14, 10**20, 2**63])
        return self._out(msg, "bad_time", 1)

    def m_extra_field(self) -> Hostile:
        msg = self.base()
        msg[self.rng.choice(["admin", "sesion", "__proto__", "qty2"])] = "1"
        return self._out(msg, "extra_field", 1)

    def m_bad_kind(self) -> Hostile:
        msg = self.base()
        msg["kind"] = self.rng.choice(["fill", "Order", "", "equity", 1])
        return self._out(msg, "bad_kind", 1)

    def m_too_long(self) -> Hostile:
        msg = self.base()
        field = self.rng.choice([f for f in ("session", "symbol", "id", "venue") if f in msg])
        msg[field] = "A" * {"session": 65, "symbol": 41, "id": 161, "venue": 41}[field]
        return self._out(msg, "too_long", 1)

    def m_bad_name(self) -> Hostile:
        msg = self.base()
        field = "symbol" if "symbol" in msg else "session"
        names = ["BTC USDT", "../etc", "BTC\u0000", "", "Ω", "a/b"] + ["btcusdt"] * (field == "symbol")
        msg[field] = self.rng.choice(names)
        return self._out(msg, "bad_name", 1)

    def m_unknown_symbol(self) -> Hostile:
        msg = self.base()
        msg["symbol"] = UNKNOWN_SYMBOL
        return self._out(msg, "unknown_symbol", 1)

    def m_unknown_session(self) -> Hostile:
        msg = self.base()
        msg["session"] = "no-such-session"
        if self.topic == "control":
            msg["command"] = self.rng.choice(["pause", "resume", "stop", "config"])
        return self._out(msg, "unknown_session", int(self.topic in DEAD_LETTERED_UNKNOWN_SESSION))

    def m_far_future(self) -> Hostile:
        """Valid by the schema (before 10^14 ms): accepted; an order then waits past the tape."""
        msg = self.base()
        msg["ts"] = 10**14 - 1 - self.rng.randrange(10**6)
        return self._out(msg, "far_future", 0)

    def m_old_time(self) -> Hostile:
        """Before the tape (out of order): accepted, and an order meets the market at the session's time."""
        msg = self.base()
        msg["ts"] = self.rng.randrange(0, self.w.start)
        return self._out(msg, "old_time", 0, event_of=f"{msg['session']}-x-{msg['id']}" if msg["kind"] == "order"
                         else None)

    def m_huge_qty(self) -> Hostile:
        """A quantity the schema takes (38 digits at most) and no account can pay: the session rejects it."""
        msg = self.base()
        msg["qty"] = self.rng.choice(["1" + "0" * 12, "9" * 20 + "." + "9" * 18, "0.000000000000000001"])
        return self._out(msg, "huge_qty", 0, event_of=f"{msg['session']}-x-{msg['id']}")

    def m_bad_shape(self) -> Hostile:
        """An order whose fields do not fit its type (the schema's own rule), or a cancel/amend that is empty."""
        msg = self.base()
        msg.pop("price", None)
        msg.pop("tif", None)
        variant = self.rng.randrange(6)
        if variant == 5:
            msg = {"kind": "amend", "id": msg["id"], "ts": msg["ts"], "session": msg["session"], "order_id": "h1"}
        else:
            msg.update([{"type": "limit"}, {"type": "market", "price": "5"}, {"type": "stop_market"},
                        {"type": "trailing_stop", "trigger_price": "5"}, {"tif": "PostOnly"}][variant])
        return self._out(msg, "bad_shape", 1)

    def m_crossed_quote(self) -> Hostile:
        msg = self.base()
        msg["bid"], msg["ask"] = msg["ask"], msg["bid"]
        return self._out(msg, "crossed_quote", 1)

    def m_wrong_partition(self) -> Hostile:
        msg = self.base()
        right = self.w.partition_of(msg["symbol"].encode(), self.w.md_partitions)
        return self._out(msg, "wrong_partition", 1, partition=(right + 1) % self.w.md_partitions)

    def m_bad_frames(self) -> Hostile:
        """A batch whose envelope is valid (promising nothing) and whose frames are all bad: one refusal each."""
        frames = []
        kinds = ("nan", "drop", "unknown", "crossed")  # the schema's refusals and the market actor's, in one batch
        for _ in range(self.rng.randint(1, 4)):
            f = self.base()
            kind = self.rng.choice(kinds)
            if kind == "nan":
                f["bid"] = "NaN"
            elif kind == "unknown":
                f["symbol"] = UNKNOWN_SYMBOL
            elif kind == "drop":
                del f["id"]
            else:
                f["bid"], f["ask"] = f["ask"], f["bid"]
            frames.append({k: v for k, v in f.items() if k != "kind"})
        batch = {"kind": "batch", "id": self._id(), "ts": 0, "origin": "hostile", "wm": 0, "frames": frames}
        return self._out(batch, "bad_frames", len(frames), key=frames[0]["symbol"].encode())

    def m_bad_envelope(self) -> Hostile:
        batch = {"kind": "batch", "id": self._id(), "ts": 0, "origin": "hostile", "wm": -5, "frames": [self.base()]}
        return self._out(batch, "bad_envelope", 1)

    def m_bad_config(self) -> Hostile:
        sid = f"hx-{self._id()}"
        cfg = self.rng.choice([{"strategy": "no_such_strategy"}, {"balance": "-5"}, {"id": "someone-else"},
                               {"latency_ms": "soon"}, {"intel": 11}, {"symbols": 5}])
        return self._out(self._ctl(sid, "start", cfg), "bad_config", 1)

    def m_restart_stopped(self) -> Hostile:
        stopped = [k for k, v in self.controls.items() if v == "stopped"]
        if not stopped:
            return self.m_bad_config()
        return self._out(self._ctl(self.rng.choice(stopped), "start", {}), "restart_stopped", 1)

    # --- output ------------------------------------------------------------------------------------------------
    def _key(self, msg: dict) -> bytes:
        if self.topic == "md.events":
            frames = msg.get("frames") or [msg]
            sym = frames[0].get("symbol") if isinstance(frames[0], dict) else None
            return sym.encode() if isinstance(sym, str) else b"BTCUSDT"
        s = msg.get("session")
        return s.encode() if isinstance(s, str) and s else self.w.session.encode()

    def _out(self, msg: dict, mutation: str, refusals: int, *, key: bytes | None = None, partition: int | None = None,
             event_of: str | None = None) -> Hostile:
        return Hostile(self.topic, key or self._key(msg), json.dumps(msg).encode(), mutation, refusals, partition,
                       event_of)

    def _raw(self, raw: bytes, mutation: str) -> Hostile:
        key = b"BTCUSDT" if self.topic == "md.events" else self.w.session.encode()
        return Hostile(self.topic, key, raw, mutation, 1)


def _replace(h: Hostile, **changes) -> Hostile:
    return Hostile(**{**h.__dict__, **changes})


_COMMON = ("not_json", "invalid_utf8", "oversized", "drop_field", "wrong_type", "bad_number", "bad_time",
           "extra_field", "bad_kind", "too_long", "bad_name")
_BY_TOPIC = {
    "orders": ("unknown_symbol", "unknown_session", "far_future", "old_time", "huge_qty", "bad_shape"),
    "signals": ("unknown_symbol", "unknown_session", "far_future", "old_time"),
    "control": ("unknown_session", "bad_config", "restart_stopped"),
    "md.events": ("unknown_symbol", "crossed_quote", "wrong_partition", "bad_frames", "bad_envelope"),
}


# --- through the real pipeline ------------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What a hostile run sent and what papertape made of it."""

    sent: list[tuple[Hostile, int, int]]  # each message with its partition and offset
    dead: list[dict]  # the dead_letters rows of the injected topics
    dead_alerts: int  # alerts of dead letters
    order_events: set[str]  # order ids with an order event
    sessions: dict[str, set[str]]  # each session's statuses
    workers: tuple[int, int]  # (worker processes started, workers)
    seconds: dict[str, float]  # produce, replay, until every dead letter was recorded

    def expected(self) -> Counter:
        """(topic, partition, offset) -> dead letters papertape must write for it."""
        return Counter({(h.topic, p, o): h.refusals for h, p, o in self.sent if h.refusals})

    def recorded(self) -> Counter:
        return Counter((d["topic"], d["partition"], d["offset"]) for d in self.dead)


async def run_hostile(pipe, per_topic: int, seed: int = 19, wait_s: float = 300) -> Outcome:
    """Send `per_topic` hostile messages to each input topic of a started Pipeline, replay its tape, and collect
    what came of them once the recorder holds every dead letter they must make (or `wait_s` passed)."""
    settings = pipe.settings
    first = next(iter(Tape(settings.replay).wire_frames()))
    span = int(min(settings.replay_seconds or 60, 60) * 1000) - 5_000
    world = World(tuple(sorted(settings.instrument_map())), settings.sessions[0].id, first.ts, span,
                  settings.md_partitions, kafka_partition)
    messages = interleaved(per_topic, world, seed)
    t0 = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=4 << 20, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(settings.names.topic(h.topic), h.value, key=h.key, partition=h.partition)
                   for h in messages]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    sent = [(h, m.partition, m.offset) for h, m in zip(messages, metas)]
    t1 = time.monotonic()
    await pipe.replay(progress=False)
    await pipe.wait_finished(timeout=wait_s)
    t2 = time.monotonic()
    ours = {(h.topic, p, o) for h, p, o in sent}
    must = sum(h.refusals for h in messages)
    sql = ("SELECT id, topic, partition, offset, error FROM dead_letters WHERE topic IN (%s)"
           % ", ".join(f"'{t}'" for t in TOPICS))
    dead: list[dict] = []
    while time.monotonic() < t2 + wait_s:
        rows = _rows(pipe.query(sql))
        # the tape's own refusals (md.events frames it should not have had) are not ours to count
        dead = [d for d in rows if d["topic"] != "md.events" or (d["topic"], d["partition"], d["offset"]) in ours]
        if len(dead) >= must:
            break
        await asyncio.sleep(0.5)
    t3 = time.monotonic()
    alerts = pipe.query("SELECT count() FROM alerts WHERE startsWith(id, 'alert:dlq:')")["rows"][0][0]
    events = {r[0] for r in pipe.query("SELECT DISTINCT order_id FROM order_events")["rows"]}
    status = {k: set(v) for k, v in pipe.query("SELECT session, groupUniqArray(status) FROM sessions GROUP BY session")[
        "rows"]}
    return Outcome(sent, dead, int(alerts), events, status, (pipe.workers_started, len(pipe.workers)),
                   {"produce": t1 - t0, "replay": t2 - t1, "dead letters": t3 - t0})


def broken_promises(out: Outcome) -> list[str]:
    """Every promise of a hostile run that did not hold: a worker died, a refusal without its dead letter or a dead
    letter without a refusal, a dead letter without its reason or its alert, a valid order without an order event,
    a test session started through control that never was, the session under test paused or stopped."""
    problems = []
    started, workers = out.workers
    if started != workers:
        problems.append(f"a worker died: {started} starts for {workers} workers")
    expected, recorded = out.expected(), out.recorded()
    by_offset = {(h.topic, p, o): h for h, p, o in out.sent}
    for what, keys in (("refusals without their dead letters", expected - recorded),
                       ("dead letters of messages the contract accepts", recorded - expected)):
        if keys:
            examples = [(by_offset[k].mutation, (by_offset[k].value or b"")[:200]) for k in list(keys)[:3]]
            problems.append(f"{sum(keys.values())} {what}, such as {examples}")
    if any(not d["error"].strip() for d in out.dead) or len({d["id"] for d in out.dead}) != len(out.dead):
        problems.append("dead letters without a reason, or two with one id")
    if out.dead_alerts < len(out.dead):  # the tape's own dead letters have alerts too
        problems.append(f"{len(out.dead)} dead letters but {out.dead_alerts} alerts of them")
    if lost := Counter(h.mutation for h, _, _ in out.sent if h.event_of and h.event_of not in out.order_events):
        problems.append(f"{sum(lost.values())} valid orders without an order event: {dict(lost)}")
    started_here = {h.key.decode() for h, _, _ in out.sent if h.topic == "control" and h.mutation == "valid" and h.key}
    if missing := started_here - set(out.sessions):
        problems.append(f"sessions started through control without a status: {sorted(missing)[:5]}")
    if (ext := out.sessions.get("ext")) != {"running"}:
        problems.append(f"the session under test was {ext}, not only running")
    return problems


def _rows(res: dict) -> list[dict]:
    return [dict(zip(res["columns"], r)) for r in res["rows"]]
