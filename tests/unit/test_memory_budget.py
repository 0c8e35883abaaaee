"""The per-process memory budget: reservations, arrival order, bounded waits, the cap."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import InvalidParameter
from service.inference.budget import (
    MB,
    MemoryBudget,
    MemoryBusy,
    RequestMemory,
    largest_fitting,
)
from tasks import GraphMemory, get_task


def _need(mb: int) -> RequestMemory:
    return RequestMemory(graph=mb * MB)


def test_reservations_never_exceed_the_budget_and_are_granted_in_order() -> None:
    async def scenario() -> list[str]:
        budget = MemoryBudget(100 * MB, 100 * MB, wait_s=5, retry_after_s=1)
        order: list[str] = []
        release = asyncio.Event()

        async def request(name: str, mb: int) -> None:
            async with budget.reserve(_need(mb)):
                assert budget.reserved <= budget.total
                order.append(name)
                if name == "big-1":
                    await release.wait()

        first = asyncio.create_task(request("big-1", 80))
        while not order:
            await asyncio.sleep(0)
        # "big-2" waits for "big-1"; "small" arrives later and must not overtake it,
        # although it would fit beside "big-1".
        second = asyncio.create_task(request("big-2", 80))
        while budget.waiting < 1:
            await asyncio.sleep(0)
        third = asyncio.create_task(request("small", 10))
        while budget.waiting < 2:
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, second, third)
        assert budget.reserved == 0 and budget.peak <= budget.total
        return order

    assert asyncio.run(scenario()) == ["big-1", "big-2", "small"]


def test_a_wait_beyond_the_bound_is_overloaded_and_gives_way() -> None:
    async def scenario() -> None:
        budget = MemoryBudget(100 * MB, 100 * MB, wait_s=0.05, retry_after_s=3)
        async with budget.reserve(_need(90)):
            with pytest.raises(MemoryBusy) as refused:
                async with budget.reserve(_need(50)):
                    pass
            assert refused.value.headers == {"Retry-After": "3"}
            assert budget.waiting == 0
            async with budget.reserve(_need(10)):  # fits beside the first
                assert budget.reserved == 100 * MB
        assert budget.reserved == 0

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_nothing_reserved() -> None:
    async def scenario() -> None:
        budget = MemoryBudget(100 * MB, 100 * MB, wait_s=5, retry_after_s=1)
        async with budget.reserve(_need(90)):
            task = asyncio.create_task(budget.reserve(_need(50)).__aenter__())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert budget.reserved == 0 and budget.waiting == 0

    asyncio.run(scenario())


def test_one_request_beyond_its_share_is_a_422_naming_the_limit() -> None:
    budget = MemoryBudget(100 * MB, 40 * MB, wait_s=1, retry_after_s=1)
    with pytest.raises(InvalidParameter, match="TOONFORGE_MEMORY_REQUEST_MB"):
        budget.check(_need(41))
    budget.check(_need(40))


def test_largest_fitting_side() -> None:
    assert largest_fitting(100, lambda x: x * x, 1, 50) == 10
    assert largest_fitting(10_000, lambda x: x * x, 1, 50) == 50
    assert largest_fitting(0, lambda x: x * x, 7, 50) == 7  # never below the floor


def test_every_built_in_family_declares_its_graphs_memory() -> None:
    for task in ("cartoonize", "matte", "classify", "generate", "autoencode"):
        spec = get_task(task)
        assert set(spec.memory) == set(spec.graphs), task
        for model in spec.memory.values():
            assert isinstance(model, GraphMemory)
            assert model.run_bytes(1000, "fp32") > 0 and model.run_bytes(1000, "int8") > 0
