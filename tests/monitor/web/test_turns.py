"""The bound on heavy work shared by dashboard pages and report renders."""

from __future__ import annotations

import asyncio

import pytest

from monitor.web.requests import Turns, TurnsFull


def test_turns_run_so_many_queue_so_many_more_and_refuse_the_rest() -> None:
    async def main() -> tuple[int, list[int], int]:
        turns, release = Turns(1, 3), asyncio.Event()
        running, peak, done = [0], [0], []

        async def work(i: int) -> None:
            async with turns.take():
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                await release.wait()
                running[0] -= 1
                done.append(i)

        tasks = [asyncio.create_task(work(i)) for i in range(4)]
        await asyncio.sleep(0)
        with pytest.raises(TurnsFull):  # 1 in, 3 waiting: the 5th is refused at once
            async with turns.take():
                pass
        release.set()
        await asyncio.gather(*tasks)
        async with turns.take():  # free again
            pass
        return peak[0], done, turns.inside

    peak, done, inside = asyncio.run(main())
    assert (peak, sorted(done), inside) == (1, [0, 1, 2, 3], 0)
