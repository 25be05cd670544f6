"""The tracker's per-provider status slots: a bound like a semaphore, but a job its provider just
called back about is read before the safety polls already waiting."""

from __future__ import annotations

import asyncio

from bot.services.tracking import Slots


async def test_urgent_waiters_go_first_and_the_bound_holds() -> None:
    slots = Slots(2)
    order: list[str] = []
    running = 0
    peak = 0
    gate = asyncio.Event()

    async def read(name: str, *, urgent: bool = False) -> None:
        nonlocal running, peak
        async with slots.hold(urgent=urgent):
            running += 1
            peak = max(peak, running)
            order.append(name)
            await gate.wait()
            running -= 1

    tasks = [asyncio.create_task(read(f"safety-{i}")) for i in range(4)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(read("callback", urgent=True)))
    await asyncio.sleep(0)
    assert order == ["safety-0", "safety-1"]  # two slots, both taken
    gate.set()
    await asyncio.gather(*tasks)
    assert order[2] == "callback"  # ahead of safety-2 and safety-3, which waited longer
    assert peak == 2


async def test_a_cancelled_waiter_leaves_no_slot_taken() -> None:
    slots = Slots(1)
    gate = asyncio.Event()

    async def hold() -> None:
        async with slots.hold():
            await gate.wait()

    first = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiting.cancel()
    gate.set()
    await first
    # the slot is free again: one more holder gets it at once
    async with asyncio.timeout(1):
        async with slots.hold(urgent=True):
            pass
    assert waiting.cancelled()
