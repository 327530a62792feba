"""A reconciler loop that ends by itself is fatal (the process restarts), a cancelled one is not."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from controller.operator import _loop_ended


async def _ended(coro_result: BaseException | None, *, cancel: bool = False) -> asyncio.Task[None]:
    async def loop() -> None:
        if cancel:
            await asyncio.sleep(3600)
        if coro_result is not None:
            raise coro_result

    task = asyncio.create_task(loop(), name="reconciler")
    if cancel:
        await asyncio.sleep(0)
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return task


@pytest.mark.parametrize(
    ("error", "cancel", "fatal"),
    [
        (KeyError("boom"), False, True),  # a bug in the loop
        (None, False, True),  # the loop returned: it never should
        (None, True, False),  # cleanup cancelled it: a normal stop
    ],
)
def test_a_loop_that_ends_by_itself_is_fatal(
    error: BaseException | None, cancel: bool, fatal: bool, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[BaseException] = []

    async def scenario() -> None:
        task = await _ended(error, cancel=cancel)
        _loop_ended(task, kopf.Memo(fatal=calls.append))

    asyncio.run(scenario())
    assert bool(calls) is fatal
    if error is not None:
        assert calls == [error]
    assert ("crashed" in caplog.text) is fatal
