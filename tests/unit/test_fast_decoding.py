"""md.ticks decoded by msgspec (schemas.codec.decode_ticks) against the reference decoding, orjson and
papertape.core.engine.batch_of: the same values for every tick batch the schema allows, and never an acceptance
the reference refuses, over hypothesis' batches and their mutations (missing, retyped, truncated, garbled)."""
from __future__ import annotations

from typing import get_args

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import schemas as s
from papertape.core.engine import batch_of
from schemas.codec import InvalidMessage, decode_ticks
from schemas.vocabulary import FeedStatus, Side

# strings as the schema's patterns allow them (schemas/base.py): the decoder takes them as they come
prices = st.from_regex(r"\A[1-9][0-9]{0,6}(\.[0-9]{1,8})?\Z")
qtys = st.from_regex(r"\A(0|[1-9][0-9]{0,6})(\.[0-9]{1,8})?\Z")
times = st.integers(0, 10**14 - 1)


def maybe(values: st.SearchStrategy) -> st.SearchStrategy:
    return st.none() | values


trades = st.builds(s.TickTrade, times, prices, qtys, st.sampled_from(get_args(Side)))
changes = st.lists(st.tuples(st.floats(0.01, 1e7), st.one_of(qtys, st.just("0"))), max_size=4)
ticks = st.builds(
    s.Tick, st.from_regex(r"\A[A-Z0-9._-]{1,12}\Z"), times, maybe(prices), maybe(prices), maybe(qtys), maybe(qtys),
    st.lists(trades, max_size=3), st.integers(0, 2**62), maybe(prices), st.sampled_from(get_args(FeedStatus)),
    maybe(prices), maybe(st.tuples(changes, changes, st.booleans())),
    maybe(st.tuples(st.from_regex(r"\A-?0\.[0-9]{1,6}\Z"), times)))
batches = st.builds(s.TickBatch, id=st.text(min_size=1, max_size=20), ts=times, origin=st.integers(0, 255),
                    seq=st.integers(0, 2**40), wm=times, end=st.booleans(), ticks=st.lists(ticks, max_size=6))


def reference(value: bytes) -> s.TickBatch:
    return batch_of(orjson.loads(value))


def as_json(batch: s.TickBatch) -> bytes:
    return orjson.dumps({name: getattr(batch, name) for name in s.TickBatch.model_fields}, default=list)


def same(fast: s.TickBatch, ref: s.TickBatch) -> None:
    assert as_json(fast) == as_json(ref)
    assert fast.model_fields_set == ref.model_fields_set
    for mine, theirs in zip(fast.ticks, ref.ticks, strict=True):
        assert type(mine) is s.Tick and all(type(t) is s.TickTrade for t in mine.trades)
        # the core reads every field as the reference's: tuples where orjson gave lists unpack alike
        assert mine._replace(depth=None, funding=None) == theirs._replace(depth=None, funding=None)
        assert mine.funding == (None if theirs.funding is None else tuple(theirs.funding))
        if theirs.depth is not None:
            assert [list(map(tuple, side)) for side in theirs.depth[:2]] == list(mine.depth[:2])
            assert mine.depth[2] is theirs.depth[2]


@given(batches)
@hsettings(max_examples=100, deadline=None)
def test_every_batch_decodes_to_the_reference_values(batch):
    value = s.encode(batch)
    fast = decode_ticks(value)
    same(fast, reference(value))
    assert as_json(fast) == value  # and both are what the market actor sent


JUNK = [None, 1, -1, 1.5, "x", "", True, [], {}, [1, 2], {"a": 1}]


@st.composite
def mutated(draw) -> bytes:
    """A valid tick batch with one thing broken: a key dropped, a value of another JSON type, bytes cut or garbled,
    a string that is not UTF-8."""
    doc = orjson.loads(s.encode(draw(batches)))
    how = draw(st.sampled_from(["drop", "retype", "cut", "garble", "utf8"]))
    raw = orjson.dumps(doc)
    if how == "utf8":  # a byte that is no UTF-8, inside a string (a key or a value)
        at = draw(st.sampled_from([i for i, c in enumerate(raw) if c == ord('"')])) + 1
        return raw[:at] + b"\xff" + raw[at:]
    if how in ("cut", "garble"):
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] if how == "cut" else raw[:at] + draw(st.sampled_from([b"\xff", b"}", b",", b'"'])) + raw[at:]
    # walk to a random container inside the batch
    node = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        if isinstance(node[key], (dict, list)) and node[key] and draw(st.booleans()):
            node = node[key]
            continue
        if how == "drop":
            del node[key]
        else:
            node[key] = draw(st.sampled_from(JUNK))
        break
    return orjson.dumps(doc)


@given(mutated())
@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_broken_batch_is_never_taken_where_the_reference_refuses_it(value):
    try:
        ref = reference(value)
    except (KeyError, TypeError, ValueError):  # what the engine turned into "malformed tick batch"
        with pytest.raises(InvalidMessage, match="malformed tick batch"):
            decode_ticks(value)
        return
    try:
        fast = decode_ticks(value)
    except InvalidMessage:
        return  # the element types are checked too: a retyped value the reference passed along is refused here
    same(fast, ref)


def test_a_tick_without_its_trailing_defaults_takes_them():
    """The one acceptance beyond the reference (which unpacks exactly 13 elements): a shorter tick array gets the
    schema's defaults. The market actor always writes all 13."""
    short = orjson.dumps({"id": "b", "ts": 5, "origin": 0, "seq": 1, "wm": 5,
                          "ticks": [["BTCUSDT", 5, "1", "2", "3", "4", [], 7]]})
    tick = decode_ticks(short).ticks[0]
    assert tick == s.Tick("BTCUSDT", 5, "1", "2", "3", "4", [], 7)
    assert (tick.mark, tick.status, tick.last, tick.depth, tick.funding) == (None, "live", None, None, None)


def test_no_string_that_is_not_utf8_is_taken():
    """Each key and string value in turn gets a byte that is no UTF-8 (orjson refuses the whole message): refused,
    wherever it is (msgspec skips an undeclared field without checking it, so every field must be declared)."""
    tick = s.Tick("BTCUSDT", 5, "1", "2", "3", "4", [s.TickTrade(5, "1.5", "2", "buy")], 7, "1.5", "live", "1.5",
                  ([(1.5, "2")], [(2.5, "0")], False), ("0.0001", 9))
    raw = s.encode(s.TickBatch(id="b", ts=5, origin=0, seq=1, wm=5, ticks=[tick]))
    quotes = [i for i, c in enumerate(raw) if c == ord('"')]
    assert len(quotes) > 40
    for at in quotes:
        with pytest.raises(InvalidMessage):
            decode_ticks(raw[:at + 1] + b"\xff" + raw[at + 1:])
