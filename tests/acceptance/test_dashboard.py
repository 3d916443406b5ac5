"""The dashboard in a real headless Chromium against a real ``longjobs serve`` of the bundled
example app: the jobs table follows a job live to 100 % without a reload, the job page shows its
events, output and result, Cancel ends a running job in ``cancelled``, the queue overview counts
and charts, API keys are asked for once per browser session and never leave the header, the job
page follows its job across a server restart, and the page works on a phone-width screen with
nothing fetched from elsewhere. A screenshot of each page is saved in ``test-artifacts/dashboard``.
Where the store makes no difference to the page, a test runs on SQLite alone."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.acceptance.browser import artifact, browser
from tests.acceptance.conftest import report_on_failure
from tests.acceptance.harness import Cluster, create_key, submit, wait_terminal, wait_until

__all__ = ["browser"]

APP = "examples.docs:app"
SAMPLE = json.loads(
    (Path(__file__).resolve().parents[2] / "examples" / "sample_input.json").read_text()
)
TIMEOUT_MS = 30_000


def paced(pace_seconds: float, *, chunk_size: int = 400) -> dict[str, Any]:
    """The sample document, analysed in chunks of ``chunk_size`` characters with a pause each."""
    return {**SAMPLE, "chunk_size": chunk_size, "pace_seconds": pace_seconds}


@pytest.fixture
def dashboard(request: pytest.FixtureRequest, cluster: Cluster) -> str:
    """The base URL of a ``longjobs serve`` of the example app, as ``make run`` starts it."""
    report_on_failure(request, cluster)
    # Debug logging: access lines too, so that a key in a URL would show in the logs.
    process = cluster.serve("--log-level", "debug", app=APP, concurrency=4)
    assert process.base_url is not None
    return process.base_url


@dataclass
class Browsing:
    """What the page did: every URL it asked for, and every uncaught script error."""

    requested: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def seen() -> Browsing:
    return Browsing()


@pytest.fixture
def context(browser: Browser, dashboard: str, seen: Browsing) -> Iterator[BrowserContext]:
    """A fresh browser profile (no stored key) whose requests and script errors are recorded."""
    opened = browser.new_context(
        viewport={"width": 1280, "height": 900}, base_url=dashboard, reduced_motion="reduce"
    )
    opened.set_default_timeout(TIMEOUT_MS)
    opened.on("request", lambda request: seen.requested.append(request.url))
    opened.on("page", lambda page: page.on("pageerror", lambda e: seen.errors.append(str(e))))
    try:
        yield opened
    finally:
        opened.close()


def open_page(context: BrowserContext, path: str = "/") -> Page:
    page = context.new_page()
    page.goto(path)
    return page


def test_a_job_appears_and_its_bar_reaches_100_without_a_reload(
    context: BrowserContext, dashboard: str, seen: Browsing
) -> None:
    page = open_page(context)
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.notReloaded = true")
    page.evaluate(RECORD_BARS)
    with httpx.Client(base_url=dashboard, timeout=30) as client:
        job_id = submit(client, "analyze_document", paced(0.12), metadata={"note": XSS})
    row = page.locator(f'#jobs-body tr[data-id="{job_id}"]')
    expect(row).to_be_visible()
    expect(row.locator(".badge")).to_have_text("completed", timeout=60_000)
    expect(row.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    expect(row.locator(".bar-label")).to_contain_text("100 %")
    expect(row.locator(".duration")).to_have_text(re.compile(r"\d"))
    values = page.evaluate("window.bars")
    between = [value for value in values if 0 < value < 100]
    assert len(set(between)) >= 3, f"the bar did not advance step by step: {values}"
    assert between == sorted(between), f"the bar went back: {values}"
    assert page.evaluate("window.notReloaded") is True
    page.screenshot(path=artifact("jobs.png"), full_page=True)

    row.get_by_role("link").click()
    expect(page).to_have_url(re.compile(f"#/jobs/{job_id}$"))
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#job-bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#job-result")).to_contain_text('"keywords"')
    expect(page.locator("#job-output")).not_to_be_empty()
    expect(page.locator("#events-body tr").first).to_contain_text("pending")
    expect(page.locator("#events-body tr").last).to_contain_text("completed")
    assert page.locator("#events-body tr").count() >= 5
    expect(page.locator("#job-facts")).to_contain_text("1 of")
    expect(page.locator("#job-facts")).to_contain_text(XSS)  # shown as text, never run
    page.locator("#input-panel summary").click()
    expect(page.locator("#job-input")).to_contain_text('"pace_seconds": 0.12')
    assert page.evaluate("window.pwned") is None
    expect(page.locator("#cancel-button")).to_be_hidden()
    page.screenshot(path=artifact("job.png"), full_page=True)
    assert seen.errors == []
    offsite = [url for url in seen.requested if not url.startswith(dashboard)]
    assert offsite == [], "the dashboard must work offline"


XSS = "<img src=x onerror=window.pwned=1>"


def seen_once(numbers: list[str]) -> bool:
    """Whether the event log shows each sequence number once, in order, from 0."""
    return [int(number) for number in numbers] == list(range(len(numbers)))


RECORD_BARS = """() => {
  window.bars = [];
  new MutationObserver((changes) => {
    for (const change of changes) {
      const bar = change.target;
      if (bar.classList && bar.classList.contains("bar")) {
        window.bars.push(Number(bar.getAttribute("aria-valuenow")));
      }
    }
  }).observe(document.getElementById("jobs-body"), {
    subtree: true, attributes: true, attributeFilter: ["aria-valuenow"]
  });
}"""
"""Records every value a bar of the jobs table takes, in the page, as it changes."""

RECORD_STATES = """() => {
  window.states = [];
  const note = document.getElementById("job-cancel-note");
  const status = document.getElementById("job-status");
  const record = () =>
    window.states.push(status.textContent + (note.hidden ? "" : " + cancel requested"));
  const everything = {subtree: true, attributes: true, childList: true, characterData: true};
  new MutationObserver(record).observe(document.getElementById("view-job"), everything);
  record();
}"""


@pytest.mark.sqlite_only
def test_cancel_on_a_running_job_shows_cancel_requested_then_cancelled(
    context: BrowserContext, dashboard: str, seen: Browsing
) -> None:
    with httpx.Client(base_url=dashboard, timeout=30) as client:
        job_id = submit(client, "analyze_document", paced(2.0, chunk_size=100))
        page = open_page(context, f"/#/jobs/{job_id}")
        expect(page.locator("#job-status")).to_have_text("running")
        expect(page.locator("#job-stage")).to_have_text("analyzing")
        expect(page.locator("#job-message")).to_contain_text("chunk 1 of")
        expect(page.locator("#job-eta")).to_contain_text("left")
        page.evaluate(RECORD_STATES)
        page.get_by_role("button", name="Cancel job…").click()
        dialog = page.get_by_role("dialog", name="Cancel this job?")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text(job_id)
        page.screenshot(path=artifact("cancel-confirm.png"))
        with page.expect_response(f"**/v1/jobs/{job_id}/cancel") as answer:
            dialog.get_by_role("button", name="Cancel job").click()
        acknowledged = answer.value.json()  # the server's word, not the page's own
        assert acknowledged["cancel_requested"] or acknowledged["status"] == "cancelled"
        expect(page.locator("#job-status")).to_have_text("cancelled")
        expect(page.locator("#job-cancel-note")).to_be_hidden()
        expect(page.locator("#cancel-button")).to_be_hidden()
        expect(page.locator("#events-body tr").last).to_contain_text("cancelled")
        states = page.evaluate("window.states")
        assert "running + cancel requested" in states, states
        assert states.index("running + cancel requested") < states.index("cancelled"), states
        assert wait_terminal(client, job_id)["status"] == "cancelled"
    page.screenshot(path=artifact("job-cancelled.png"), full_page=True)
    assert seen.errors == []


@pytest.mark.sqlite_only
def test_keeping_it_running_cancels_nothing(context: BrowserContext, dashboard: str) -> None:
    with httpx.Client(base_url=dashboard, timeout=30) as client:
        job_id = submit(client, "analyze_document", paced(1.0, chunk_size=100))
        page = open_page(context, f"/#/jobs/{job_id}")
        expect(page.locator("#job-status")).to_have_text("running")
        page.get_by_role("button", name="Cancel job…").click()
        page.get_by_role("dialog").get_by_role("button", name="Keep it running").click()
        expect(page.get_by_role("dialog")).to_be_hidden()
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "running"
        assert job["cancel_requested"] is False
        client.post(f"/v1/jobs/{job_id}/cancel")
        expect(page.locator("#job-status")).to_have_text("cancelled")  # a cancel from elsewhere


@pytest.mark.sqlite_only
def test_an_api_key_is_asked_once_per_browser_session_and_shows_only_its_tenant(
    browser: Browser, context: BrowserContext, dashboard: str, cluster: Cluster, seen: Browsing
) -> None:
    _, key_a = create_key(cluster, "tenant-a")
    _, key_b = create_key(cluster, "tenant-b")
    with httpx.Client(base_url=dashboard, timeout=30) as client:
        wait_until(
            lambda: client.get("/v1/jobs").status_code == 401, timeout=10, what="keys required"
        )
    ids = []
    for key in (key_a, key_b):
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=dashboard, timeout=30, headers=headers) as client:
            ids.append(submit(client, "analyze_document", paced(0.0)))
    mine, theirs = ids
    page = open_page(context)
    dialog = page.get_by_role("dialog", name="API key")
    expect(dialog).to_be_visible()
    page.screenshot(path=artifact("api-key.png"))
    dialog.get_by_label("API key").fill("lj_not_a_key")
    dialog.get_by_role("button", name="Use key").click()
    expect(dialog).to_contain_text("refused")
    dialog.get_by_label("API key").fill(key_a)
    dialog.get_by_role("button", name="Use key").click()
    expect(dialog).to_be_hidden()
    expect(page.locator(f'#jobs-body tr[data-id="{mine}"]')).to_be_visible()
    expect(page.locator("#jobs-body tr")).to_have_count(1)
    expect(page.locator("#live")).to_have_text("live")

    page.reload()  # the same tab: the key is remembered for its session
    expect(page.locator(f'#jobs-body tr[data-id="{mine}"]')).to_be_visible()
    expect(dialog).to_be_hidden()
    page.goto(f"/#/jobs/{theirs}")  # another tenant's job is a missing one
    expect(page.locator("#notice")).to_contain_text("There is no job")

    assert page.evaluate("sessionStorage.getItem('longjobs.apiKey')") == key_a
    assert page.evaluate("localStorage.length") == 0  # nothing outlives the session
    other = context.new_page()  # another tab of the session: the open one hands it the key
    other.goto("/")
    expect(other.locator(f'#jobs-body tr[data-id="{mine}"]')).to_be_visible()
    expect(other.get_by_role("dialog", name="API key")).to_be_hidden()

    assert not [url for url in seen.requested if key_a in url or key_b in url]
    logs = "".join(
        process.stderr() + (cluster.directory / f"{process.name}.stdout.log").read_text()
        for process in cluster.processes
    )
    assert f"/v1/jobs/{theirs}" in logs  # the access log is on
    assert key_a not in logs
    assert key_b not in logs
    fresh = browser.new_context(base_url=dashboard)  # another browser session asks again
    try:
        tab = fresh.new_page()
        tab.goto("/")
        expect(tab.get_by_role("dialog", name="API key")).to_be_visible()
        expect(tab.locator("#jobs-body tr")).to_have_count(0)
    finally:
        fresh.close()


@pytest.mark.sqlite_only
def test_phone_width_keyboard_labels_and_download(
    browser: Browser, dashboard: str, tmp_path: Path
) -> None:
    with httpx.Client(base_url=dashboard, timeout=30) as client:
        job_id = submit(client, "analyze_document", paced(0.0))
        job = wait_terminal(client, job_id)
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, base_url=dashboard, reduced_motion="reduce"
    )
    try:
        page = phone.new_page()
        page.goto("/")
        row = page.locator(f'#jobs-body tr[data-id="{job_id}"]')
        expect(row.locator(".badge")).to_have_text("completed")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        unlabelled = page.evaluate(
            "[...document.querySelectorAll('select, input')].filter(e => !e.labels.length)"
            ".map(e => e.id)"
        )
        assert unlabelled == []
        page.screenshot(path=artifact("jobs-phone.png"), full_page=True)

        link = row.get_by_role("link")
        for _ in range(30):  # reach the job's link with the keyboard alone
            page.keyboard.press("Tab")
            if link.evaluate("node => node === document.activeElement"):
                break
        else:
            pytest.fail("the job's link cannot be reached with Tab")
        page.keyboard.press("Enter")
        expect(page.locator("#job-status")).to_have_text("completed")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=artifact("job-phone.png"), full_page=True)

        with page.expect_download() as download:
            page.get_by_role("button", name="Download result").click()
        saved = tmp_path / "result.json"
        download.value.save_as(saved)
        assert json.loads(saved.read_text()) == job["result"]
    finally:
        phone.close()


@pytest.mark.sqlite_only
def test_the_queue_overview_counts_charts_and_workers(
    context: BrowserContext, dashboard: str, seen: Browsing
) -> None:
    with httpx.Client(base_url=dashboard, timeout=30) as client:
        done = [submit(client, "analyze_document", paced(0.0)) for _ in range(3)]
        for job_id in done:
            assert wait_terminal(client, job_id)["status"] == "completed"
        later = submit(client, "analyze_document", paced(0.0), delay_seconds=600)
        assert client.post(f"/v1/jobs/{later}/cancel").json()["status"] == "cancelled"
        submit(client, "analyze_document", paced(0.0), delay_seconds=600)
        stats = client.get("/v1/stats").json()
    assert stats["counts"] == {
        "pending": 1,
        "running": 0,
        "completed": 3,
        "failed": 0,
        "cancelled": 1,
    }
    assert stats["workers"] == 1

    page = open_page(context, "/#/queue")
    cards = page.get_by_role("list", name="Jobs by status")
    expect(cards.locator(".status-completed .count")).to_have_text("3")
    expect(cards.locator(".status-cancelled .count")).to_have_text("1")
    expect(cards.locator(".status-pending .count")).to_have_text("1")
    expect(page.locator("#worker-count")).to_have_text("1")
    throughput = page.locator("#chart-throughput")
    expect(throughput.get_by_role("img")).to_have_attribute("aria-label", re.compile("completed"))
    assert throughput.locator("rect").count() >= 1
    throughput.get_by_text("Show the numbers").click()
    numbers = throughput.get_by_role("table")
    expect(numbers.locator("tbody tr")).to_have_count(15)
    finished = sum(
        int(text) for text in numbers.locator("tbody tr td:nth-child(2)").all_inner_texts()
    )
    assert finished == 3
    expect(page.locator("#kinds-body")).to_contain_text("analyze_document")
    page.screenshot(path=artifact("queue.png"), full_page=True)
    assert seen.errors == []


@pytest.mark.sqlite_only
def test_filters_and_pages_stay_right_while_jobs_arrive(
    context: BrowserContext, dashboard: str
) -> None:
    with httpx.Client(base_url=dashboard, timeout=30) as client:
        later = [
            submit(client, "analyze_document", paced(0.0), delay_seconds=600) for _ in range(30)
        ]
        quick = submit(client, "classify_batch", {"texts": ["I was charged twice"]})
        wait_terminal(client, quick)
        page = open_page(context, "/#/?status=pending&limit=25")
        rows = page.locator("#jobs-body tr")
        expect(rows).to_have_count(25)
        expect(page.locator("#filter-status")).to_have_value("pending")
        expect(page.locator(f'#jobs-body tr[data-id="{later[-1]}"]')).to_be_visible()
        expect(page.locator(f'#jobs-body tr[data-id="{quick}"]')).to_have_count(0)
        newest = submit(client, "analyze_document", paced(0.0), delay_seconds=600)
        expect(page.locator(f'#jobs-body tr[data-id="{newest}"]')).to_be_visible()
        expect(rows).to_have_count(25)  # the page keeps its size: the oldest row moved on
        first_page = set(rows.evaluate_all("rows => rows.map(row => row.dataset.id)"))

        page.get_by_role("button", name="Next page").click()
        expect(page.locator("#page-label")).to_have_text("page 2")
        expect(rows).to_have_count(6)
        second_page = set(rows.evaluate_all("rows => rows.map(row => row.dataset.id)"))
        assert first_page | second_page == {*later, newest}
        assert not first_page & second_page
        expect(page.get_by_role("button", name="Next page")).to_be_disabled()
        page.get_by_role("button", name="Previous page").click()
        expect(page.locator("#page-label")).to_have_text("page 1")
        expect(page.locator(f'#jobs-body tr[data-id="{newest}"]')).to_be_visible()

        page.locator("#filter-kind").select_option("classify_batch")
        page.locator("#filter-status").select_option("")
        expect(page).to_have_url(re.compile(r"#/\?kind=classify_batch&limit=25$"))
        expect(rows).to_have_count(1)
        expect(page.locator(f'#jobs-body tr[data-id="{quick}"]')).to_be_visible()
        client.post(f"/v1/jobs/{later[0]}/cancel")  # another kind: the table does not change
        moved = submit(client, "classify_batch", {"texts": ["the upload fails"]})
        expect(page.locator(f'#jobs-body tr[data-id="{moved}"]')).to_be_visible()
        expect(rows).to_have_count(2)


@pytest.mark.sqlite_only
def test_a_failed_job_shows_its_error_and_a_large_result_is_downloaded(
    browser: Browser, cluster: Cluster, tmp_path: Path
) -> None:
    process = cluster.serve()  # the acceptance tests' app: kinds that crash or return a lot
    assert process.base_url is not None
    with httpx.Client(base_url=process.base_url, timeout=30) as client:
        crashed = submit(client, "crash")
        large = submit(client, "large_result", {"kilobytes": 400})
        assert wait_terminal(client, crashed)["status"] == "failed"
        assert wait_terminal(client, large)["status"] == "completed"
        expected = client.get(f"/v1/jobs/{large}/result").json()
    opened = browser.new_context(base_url=process.base_url)
    errors: list[str] = []
    try:
        page = opened.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"/#/jobs/{crashed}")
        expect(page.locator("#job-status")).to_have_text("failed")
        error = page.locator("#job-error")
        expect(error).to_contain_text("boom")
        expect(error).to_contain_text("Retryable")
        expect(page.locator("#job-facts")).to_contain_text("3 of 3")
        expect(page.locator("#result-panel")).to_be_hidden()
        page.screenshot(path=artifact("job-failed.png"), full_page=True)

        page.goto(f"/#/jobs/{large}")
        expect(page.locator("#job-status")).to_have_text("completed")
        expect(page.locator("#result-note")).to_contain_text("too large to show")
        with page.expect_download() as download:
            page.get_by_role("button", name="Download result").click()
        saved = tmp_path / "large.json"
        download.value.save_as(saved)
        assert download.value.suggested_filename == f"{large}.json"
        assert json.loads(saved.read_text()) == expected
        assert errors == []
    finally:
        opened.close()


@pytest.mark.sqlite_only
def test_the_job_page_follows_its_job_across_a_server_restart(
    browser: Browser, cluster: Cluster
) -> None:
    first = cluster.serve(app=APP)
    assert first.base_url is not None
    port = int(first.base_url.rsplit(":", 1)[1])
    with httpx.Client(base_url=first.base_url, timeout=30) as client:
        job_id = submit(client, "analyze_document", paced(0.25))
    opened = browser.new_context(base_url=first.base_url)
    try:
        page = opened.new_page()
        page.goto(f"/#/jobs/{job_id}")
        expect(page.locator("#job-stage")).to_have_text("analyzing")
        first.signal_group(signal.SIGTERM)  # a deployment: the job goes back to the queue
        assert first.wait(30) == 0
        expect(page.locator("#live")).not_to_have_text("live")
        cluster.serve(app=APP, port=port)
        expect(page.locator("#job-status")).to_have_text("completed", timeout=60_000)
        expect(page.locator("#job-bar")).to_have_attribute("aria-valuenow", "100")
        log = page.locator("#events-body")
        expect(log).to_contain_text("released")  # seen live, across both servers
        expect(log).to_contain_text("resuming at chunk")
        assert seen_once(log.locator("td:first-child").all_inner_texts())
    finally:
        opened.close()
