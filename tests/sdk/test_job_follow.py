"""``wait_for_job`` without a server: the sans-I/O state machine (toonforge_client._follow)
step by step with a fake clock, then both clients' drivers over httpx.MockTransport (the
event stream, its polling fallback, an unknown job)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from toonforge_client import (
    AsyncClient,
    Client,
    JobFailedError,
    JobUpdate,
    NotFoundError,
    ToonforgeConnectionError,
    WaitTimeoutError,
)
from toonforge_client import _follow as f

T0 = "2024-01-01T00:00:00Z"


def job(status: str = "running", epoch: int = 0, updated: str = T0) -> dict[str, Any]:
    return {"id": "j1", "status": status, "epoch": epoch, "total_epochs": 2, "step": 0,
            "total_steps": None, "losses": None, "val_metrics": None, "eta_seconds": None,
            "error": "boom" if status == "failed" else None, "updated_at": updated}


def event(id: int, kind: str, **data: Any) -> dict[str, Any]:
    return {"id": id, "job_id": "j1", "created_at": T0, "kind": kind, "data": data}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drive(steps: f.Steps, answer: Callable[[f.Step], Any], clock: Clock | None = None
          ) -> tuple[Any, list[f.Step]]:
    """Run the state machine by hand: ``answer(step)`` is the result (an exception is thrown
    in); returns (the job, every step taken)."""
    taken: list[f.Step] = []
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value, taken
        taken.append(step)
        if isinstance(step, f.Sleep) and clock is not None:
            clock.now += step.seconds
        try:
            reply, error = answer(step), None
        except Exception as exc:
            reply, error = None, exc


def scripted(jobs: list[dict[str, Any]], events: list[Any]) -> Callable[[f.Step], Any]:
    """GET /jobs/{id} answers ``jobs`` in turn (the last one again); the stream yields
    ``events`` in turn (an exception in the list is raised there), then ends."""
    def answer(step: f.Step) -> Any:
        if isinstance(step, f.Send):
            assert step.call.path == "/jobs/j1"
            return jobs.pop(0) if len(jobs) > 1 else jobs[0]
        if isinstance(step, f.NextEvent):
            if not events:
                return None
            item = events.pop(0)
            if isinstance(item, Exception):
                raise item
            return item
        return None
    return answer


OPTIONS = f.WaitOptions(poll_interval=1.0, stream_read_timeout=5.0)


def test_the_stream_moves_the_job_until_its_terminal_event() -> None:
    answer = scripted([job(), job("succeeded", 2)], [
        event(1, "progress", epoch=1, losses={"loss": 0.5}),
        event(2, "status", status="exporting"),
        event(3, "status", status="succeeded"),
        event(4, "log", message="never read"),
    ])
    done, steps = drive(f.follow_job("j1", OPTIONS), answer)
    assert done["status"] == "succeeded" and done["epoch"] == 2
    updates = [s.update for s in steps if isinstance(s, f.Notify)]
    assert [(u.source, u.status, u.epoch) for u in updates] == [
        ("stream", "running", 1), ("stream", "exporting", 1), ("stream", "succeeded", 1)]
    assert updates[0].loss == 0.5 and updates[-1].finished
    kinds = [type(s).__name__ for s in steps]
    assert kinds[:2] == ["Send", "OpenEvents"] and kinds[-2:] == ["CloseEvents", "Send"]
    assert steps[1] == f.OpenEvents("j1", 5.0)


def test_a_broken_stream_falls_back_to_polling_changes_only() -> None:
    clock = Clock()
    jobs = [job(), job(), job(epoch=1, updated="t1"), job(epoch=1, updated="t1"),
            job("succeeded", 2, updated="t2")]
    answer = scripted(jobs, [ToonforgeConnectionError("reset")])
    done, steps = drive(f.follow_job("j1", OPTIONS, clock), answer, clock)
    assert done["status"] == "succeeded"
    polls = [s.update for s in steps if isinstance(s, f.Notify)]
    assert [(u.source, u.epoch, u.event) for u in polls] == [("poll", 1, None),
                                                            ("poll", 2, None)]
    assert [s.seconds for s in steps if isinstance(s, f.Sleep)] == [1.0, 1.0, 1.0]
    assert f.CloseEvents() in steps  # the broken stream is closed before polling


def test_unreadable_events_also_fall_back() -> None:
    answer = scripted([job(), job(), job("succeeded")], [ValueError("not JSON")])
    done, _ = drive(f.follow_job("j1", OPTIONS), answer)
    assert done["status"] == "succeeded"


def test_an_unknown_job_is_final() -> None:
    missing = NotFoundError(404, "job_not_found", "no job j1")
    with pytest.raises(NotFoundError):
        drive(f.follow_job("j1", OPTIONS), scripted([job()], [missing]))


def test_the_deadline_raises_and_bounds_sleeps_and_reads() -> None:
    clock = Clock()
    options = f.WaitOptions(timeout=2.5, poll_interval=1.0, stream=False)
    with pytest.raises(WaitTimeoutError) as exc:
        drive(f.follow_job("j1", options, clock), scripted([job()], []), clock)
    assert exc.value.job["id"] == "j1" and "after 2.5s" in str(exc.value)

    steps = f.follow_job("j1", f.WaitOptions(timeout=0.01), Clock())
    assert isinstance(next(steps), f.Send)
    assert steps.send(job()) == f.OpenEvents("j1", f.MIN_STREAM_READ_TIMEOUT_S)


def test_a_job_that_did_not_succeed() -> None:
    with pytest.raises(JobFailedError) as exc:
        drive(f.follow_job("j1", OPTIONS), scripted([job("failed")], []))
    assert exc.value.status == "failed" and "boom" in str(exc.value)
    lenient = f.WaitOptions(raise_on_failure=False)
    done, steps = drive(f.follow_job("j1", lenient), scripted([job("cancelled")], []))
    assert done["status"] == "cancelled" and len(steps) == 1  # finished: nothing to follow


# ----------------------------------------------------------------------------- drivers


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"id: {e['id']}\nevent: {e['kind']}\ndata: {json.dumps(e)}\n\n".encode()
                    for e in events) + b": keep-alive\n\n"


def transport(events_status: int) -> tuple[httpx.MockTransport, list[str]]:
    """GET /jobs/j1: running until the stream has ended it (or, without a stream, one poll
    later), then succeeded; the events answer ``events_status``."""
    answers = [job(), *([] if events_status == 200 else [job()]), job("succeeded", 2, "t2")]
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/jobs/j1/events":
            if events_status != 200:
                return httpx.Response(events_status, text="<html>bad gateway</html>")
            return httpx.Response(200, content=sse(
                event(1, "progress", epoch=1), event(2, "status", status="succeeded")),
                headers={"content-type": "text/event-stream"})
        if request.url.path == "/jobs/j1":
            return httpx.Response(200, json=answers.pop(0) if len(answers) > 1 else answers[0])
        return httpx.Response(404, json={"error": {"code": "job_not_found", "message": "no"}})

    return httpx.MockTransport(handle), seen


@pytest.mark.parametrize("events_status", [200, 502])
def test_sync_driver(events_status: int) -> None:
    mock, seen = transport(events_status)
    updates: list[JobUpdate] = []
    with Client("http://toonforge.test", transport=mock) as tf:
        done = tf.wait_for_job("j1", on_progress=updates.append, poll_interval=0.01)
        assert done["status"] == "succeeded"
        with pytest.raises(NotFoundError):
            tf.wait_for_job("nope")
    sources = {u.source for u in updates}
    assert sources == ({"stream"} if events_status == 200 else {"poll"})
    assert seen[:2] == ["/jobs/j1", "/jobs/j1/events"]


@pytest.mark.parametrize("events_status", [200, 502])
def test_async_driver(events_status: int) -> None:
    mock, _ = transport(events_status)
    updates: list[JobUpdate] = []

    async def on_progress(update: JobUpdate) -> None:
        updates.append(update)

    async def run() -> dict[str, Any]:
        async with AsyncClient("http://toonforge.test", transport=mock) as tf:
            return await tf.wait_for_job("j1", on_progress=on_progress, poll_interval=0.01)

    assert asyncio.run(run())["status"] == "succeeded"
    assert updates and updates[-1].status == "succeeded"
    assert {u.source for u in updates} == ({"stream"} if events_status == 200 else {"poll"})


def test_a_failing_callback_propagates_and_closes_the_stream() -> None:
    mock, _ = transport(200)

    def on_progress(update: JobUpdate) -> None:
        raise RuntimeError("callback broke")

    with Client("http://toonforge.test", transport=mock) as tf, \
            pytest.raises(RuntimeError, match="callback broke"):
        tf.wait_for_job("j1", on_progress=on_progress)
