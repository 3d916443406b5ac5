"""Contract: text a store cannot hold as it is (a NUL) never breaks a write or a lookup."""

from __future__ import annotations

from longjobs.backends.base import Backend
from tests.backends.contract import TENANT, WORKER, get, start, update


async def test_a_report_whose_message_holds_a_nul_is_kept_and_the_job_goes_on(
    backend: Backend,
) -> None:
    job = await start(backend)
    report = update(job, ("log", {"message": "a\x00b"}), progress=0.5, message="step\x00one")

    lost = await backend.append_events(WORKER, [report])

    assert lost == set()
    stored = await get(backend, job.id)
    assert stored.progress == 0.5
    assert stored.message is not None
    assert stored.message.startswith("step")
    assert stored.message.endswith("one")
    events = await backend.list_events(TENANT, job.id)
    assert events is not None
    assert events[-1].data == {"message": "a\x00b"}  # event data is JSON: kept exactly


async def test_an_id_holding_a_nul_names_no_job(backend: Backend) -> None:
    await start(backend)
    missing = "job_\x00"

    assert await backend.get_job(TENANT, missing) is None
    assert await backend.list_events(TENANT, missing) is None
    assert await backend.get_result(TENANT, missing) is None
    assert await backend.stream_result(TENANT, missing) is None
    assert await backend.request_cancel(TENANT, missing) is None
    assert await backend.delete_job(TENANT, missing) is False
    assert (await backend.list_jobs(TENANT, kind=["a\x00"])).data == []
