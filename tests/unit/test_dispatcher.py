"""The dispatch caps: how many held jobs are sent at once, per provider and in all."""

from __future__ import annotations

import asyncio

from bot.services.dispatcher import Dispatcher


class Held:
    def __init__(self, jobs: list[tuple[int, str | None]]) -> None:
        self.jobs = jobs

    async def held_due(self, per_provider: int) -> list[tuple[int, str | None]]:
        return list(self.jobs)


class Sender:
    """Holds every dispatch at a gate; a job in `failing` raises once let through."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.gate = asyncio.Event()
        self.started: list[int] = []
        self.failing = failing

    async def dispatch(self, job_id: int) -> None:
        self.started.append(job_id)
        await self.gate.wait()
        if job_id in self.failing:
            raise RuntimeError("provider down")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_caps_per_provider_and_in_all() -> None:
    held = Held([(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b"), (6, None)])
    sender = Sender()
    dispatcher = Dispatcher(held, sender, lambda: None, retry_after=0.0, per_provider=2, total=4)
    await dispatcher.fill()
    await settle()
    assert sender.started == [1, 2, 4, 5]  # two of a, two of b, then the total is reached
    await dispatcher.fill()  # every slot taken: nothing more, nothing twice
    await settle()
    assert (sender.started, dispatcher.in_flight) == ([1, 2, 4, 5], 4)
    await dispatcher.close()


async def test_a_finished_dispatch_frees_its_slot_and_wakes_the_loop() -> None:
    held = Held([(1, "a"), (2, "a")])
    sender = Sender()
    wakes: list[None] = []
    dispatcher = Dispatcher(held, sender, lambda: wakes.append(None), retry_after=0.0, per_provider=1)
    await dispatcher.fill()
    await settle()
    assert sender.started == [1]
    held.jobs = [(2, "a")]  # job 1 was sent
    sender.gate.set()
    await settle()
    assert (dispatcher.in_flight, len(wakes)) == (0, 1)
    await dispatcher.fill()
    await settle()
    assert sender.started == [1, 2]
    await dispatcher.close()


async def test_a_failed_dispatch_keeps_its_slot_for_a_while_then_lets_go() -> None:
    sender = Sender(failing=frozenset({1}))
    wakes: list[None] = []
    dispatcher = Dispatcher(Held([(1, "a")]), sender, lambda: wakes.append(None), retry_after=0.05)
    await dispatcher.fill()
    sender.gate.set()
    await settle()
    assert dispatcher.in_flight == 1  # waiting out retry_after: no hot retry loop
    await asyncio.sleep(0.1)
    assert (dispatcher.in_flight, len(wakes)) == (0, 1)


async def test_close_cancels_dispatches_in_flight() -> None:
    sender = Sender()
    dispatcher = Dispatcher(Held([(1, "a")]), sender, lambda: None, retry_after=0.0)
    await dispatcher.fill()
    await settle()
    await dispatcher.close()
    assert dispatcher.in_flight == 0
