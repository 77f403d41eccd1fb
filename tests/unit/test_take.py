"""agents/take.py: the agents' input batches, on a real Faust agent (its test context: a channel, no broker)."""
import asyncio

import faust

from agents.take import input_batches


def run_agent(feed, max_: int, most: float, work_s: float = 0.0) -> list[list]:
    """The batches an agent reading `input_batches` gets while `feed(put, got)` puts values; each batch takes
    `work_s`. The agent stops when `feed` returns."""
    app = faust.App("take-test", store="memory://")
    got: list[list] = []

    @app.agent()
    async def agent(stream):
        async for events in input_batches(stream, max_, most):
            got.append([e.value for e in events])
            await asyncio.sleep(work_s)

    async def go():
        async with agent.test_context() as running:
            await feed(running.put, got)
    asyncio.run(go())
    return got


def test_every_event_comes_once_in_order_in_batches_of_at_most_max():
    async def feed(put, got):
        for i in range(23):
            await put(i)
        await asyncio.sleep(0.2)
        await put(99)
        await asyncio.sleep(0.2)

    got = run_agent(feed, max_=5, most=0.05)
    assert [v for batch in got for v in batch] == [*range(23), 99]
    assert all(1 <= len(batch) <= 5 for batch in got)
    assert got[-1] == [99]


def test_a_lone_event_does_not_wait_for_the_longest_window():
    """Faust's take would hold it for the whole window (10 s here)."""
    async def feed(put, got):
        await put("alone")
        for _ in range(40):
            await asyncio.sleep(0.05)
            if got:
                return

    assert run_agent(feed, max_=100, most=10.0) == [["alone"]]


def test_after_a_slow_batch_the_next_waits_as_long_for_more():
    """The wait follows the work: after a batch that took 1 s, the next gathers for 1 s from its first event, so a
    loaded agent makes fewer, larger batches (with only the least wait, 2, 3 and 4 would each be a batch)."""
    async def feed(put, got):
        await put(0)
        await asyncio.sleep(0.2)
        await put(1)  # while 0 is processed: opens the next batch once that is done (at about 1 s)
        await asyncio.sleep(0.95)
        for i in range(2, 5):  # at 1.15, 1.2, 1.25 s: before that batch goes (at about 2 s)
            await put(i)
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.5)

    got = run_agent(feed, max_=100, most=2.0, work_s=1.0)
    assert got == [[0], [1, 2, 3, 4]]
