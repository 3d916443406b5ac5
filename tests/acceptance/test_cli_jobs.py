"""``longjobs submit | watch | ls | get | cancel | result | kinds`` as real commands against a real
``longjobs serve``; ``watch`` also in a pseudo-terminal, as a person at a terminal sees it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pexpect
import pytest

from tests.acceptance.harness import (
    LONGJOBS,
    Cluster,
    LongjobsProcess,
    create_key,
    free_port,
    wait_for_status,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]


class Shell:
    """Runs ``longjobs`` commands against one server, as a user's shell would."""

    def __init__(self, server: LongjobsProcess, directory: Path) -> None:
        assert server.base_url is not None
        self.server = server.base_url
        self.directory = directory
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LONGJOBS_")}
        self.env["LONGJOBS_SERVER"] = self.server

    def run(
        self, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(LONGJOBS), *args],
            cwd=self.directory,
            env={**self.env, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def spawn(self, *args: str) -> pexpect.spawn[str]:
        """The command in a pseudo-terminal of 100 x 30."""
        return pexpect.spawn(
            str(LONGJOBS),
            list(args),
            cwd=str(self.directory),
            env={**self.env, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"},
            dimensions=(30, 100),
            encoding="utf-8",
            timeout=60,
        )


@pytest.fixture
def shell(cluster: Cluster, tmp_path: Path) -> Shell:
    return Shell(cluster.serve(), tmp_path)


@pytest.fixture
def api(shell: Shell) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shell.server) as client:
        yield client


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("longjobs: ")
    return lines[0]


def test_submit_prints_the_id_and_get_shows_the_job(shell: Shell) -> None:
    done = shell.run("submit", "sleepy", "--input", '{"seconds": 0}')
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert job_id.startswith("job_")
    job = shell.json("get", job_id)
    assert job["id"] == job_id
    assert job["input"] == {"seconds": 0}


def test_submit_with_wait_from_a_file_and_from_stdin(shell: Shell) -> None:
    (shell.directory / "in.json").write_text('{"seconds": 0}')
    done = shell.run("submit", "sleepy", "--input", "@in.json", "--wait", "10")
    assert done.returncode == 0, done.stderr
    _, status = done.stdout.split()
    assert status == "completed"

    job = json.loads(shell.run("submit", "sleepy", "--input", "-", "--wait", "10", "--json",
                               stdin='{"seconds": 0}').stdout)  # fmt: skip
    assert job["status"] == "completed"
    assert job["result"] == {"slept": 0, "attempt": 1}


def test_a_wait_that_runs_out_exits_6(shell: Shell) -> None:
    done = shell.run("submit", "sleepy", "--input", '{"seconds": 30}', "--wait", "0.2")
    assert done.returncode == 6
    assert "is still" in one_line_error(done)
    job_id = done.stdout.split()[0]
    assert shell.run("cancel", job_id).returncode == 0


def test_bad_input_is_one_line_and_a_usage_exit(shell: Shell) -> None:
    cases = [
        (["submit", "sleepy", "--input", "{nope"], 2, "not valid JSON"),
        (["submit", "sleepy", "--input", "@missing.json"], 2, "cannot read missing.json"),
        (["submit", "sleepy", "--input", '{"seconds": "x"}'], 2, "seconds"),
        (["submit", "no_such_kind"], 5, "unknown job kind"),
        (["get", "job_missing"], 5, "not found"),
        (["result", "job_missing"], 5, "not found"),
        (["ls", "--status", "sleeping"], 2, "sleeping"),
        (["submit", "sleepy", "--input", "NaN"], 2, "not a JSON number"),
        (["submit", "sleepy", "--input", '{"seconds": 1e999}'], 2, "too large"),
        (["submit", "sleepy", "--input", "@latin1.json"], 2, "not UTF-8"),
        (["ls", "--api-key", "ключ"], 2, "printable ASCII"),
    ]
    (shell.directory / "latin1.json").write_bytes(b'{"seconds": "\xe9"}')
    for args, code, text in cases:
        done = shell.run(*args)
        assert done.returncode == code, (args, done.stderr)
        assert text in one_line_error(done), args


def test_a_server_that_is_down_is_one_line_and_exit_1(shell: Shell) -> None:
    down = {"LONGJOBS_SERVER": f"http://127.0.0.1:{free_port()}"}
    done = shell.run("ls", env=down)
    assert done.returncode == 1
    assert "cannot reach" in one_line_error(done)


def test_ls_cancel_result_and_kinds(shell: Shell, api: httpx.Client) -> None:
    finished = shell.json("submit", "sleepy", "--input", '{"seconds": 0}', "--wait", "10")
    running = shell.json("submit", "sleepy", "--input", '{"seconds": 60}')

    listed = shell.json("ls")
    assert [job["id"] for job in listed] == [running["id"], finished["id"]]
    assert [job["id"] for job in shell.json("ls", "--status", "completed")] == [finished["id"]]
    table = shell.run("ls").stdout
    assert running["id"] in table
    assert finished["id"] in table

    assert json.loads(shell.run("result", finished["id"]).stdout) == {"slept": 0, "attempt": 1}
    out = shell.directory / "out.json"
    assert shell.run("result", finished["id"], "-o", str(out)).returncode == 0
    assert json.loads(out.read_text()) == {"slept": 0, "attempt": 1}
    early = shell.run("result", running["id"])
    assert early.returncode == 6
    assert "not finished" in one_line_error(early).lower() or "running" in early.stderr

    assert shell.run("cancel", running["id"]).returncode == 0
    assert wait_for_status(api, running["id"], {"cancelled"}, timeout=30)
    cancelled = shell.run("result", running["id"])
    assert cancelled.returncode == 4

    kinds = {kind["name"] for kind in shell.json("kinds")}
    assert {"sleepy", "ledger_job", "crash"} <= kinds
    assert "ledger_job" in shell.run("kinds").stdout


def test_watch_in_a_terminal_shows_the_bar_reach_100_percent(shell: Shell) -> None:
    job_id = shell.run("submit", "ledger_job", "--input", '{"steps": 20, "step_ms": 100}').stdout
    watch = shell.spawn("watch", job_id.strip())
    watch.expect(r"stepping · step \d+ of 20")
    seen_partial = watch.expect([r"\b[1-9]\d%", r"100%"]) == 0
    watch.expect("100%")
    watch.expect(f"{job_id.strip()} completed")
    watch.expect(pexpect.EOF)
    watch.close()
    assert watch.exitstatus == 0
    assert seen_partial, "the bar moved through intermediate percentages"


def test_submit_watch_of_a_failing_job_exits_3(shell: Shell) -> None:
    watch = shell.spawn("submit", "crash", "--watch")
    watch.expect(pexpect.EOF)
    watch.close()
    assert watch.exitstatus == 3
    assert "failed" in (watch.before or "")


def test_watch_streams_events_as_json_lines(shell: Shell) -> None:
    job_id = shell.run("submit", "ledger_job", "--input", '{"steps": 3, "step_ms": 10}').stdout
    done = shell.run("watch", job_id.strip(), "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "status"
    assert events[-1]["status"] == "completed"


def test_ctrl_c_in_watch_asks_and_cancels_the_job(shell: Shell, api: httpx.Client) -> None:
    job_id = shell.run("submit", "sleepy", "--input", '{"seconds": 60}').stdout.strip()
    wait_for_status(api, job_id, {"running"}, timeout=30)
    watch = shell.spawn("watch", job_id)
    watch.expect("running")
    watch.kill(signal.SIGINT)
    watch.expect(r"cancel job_\w+\?")
    watch.sendline("y")
    watch.expect(pexpect.EOF)
    watch.close()
    assert watch.exitstatus == 130
    assert wait_for_status(api, job_id, {"cancelled"}, timeout=30)["status"] == "cancelled"


def test_cancel_on_interrupt_needs_no_answer(shell: Shell, api: httpx.Client) -> None:
    job_id = shell.run("submit", "sleepy", "--input", '{"seconds": 60}').stdout.strip()
    wait_for_status(api, job_id, {"running"}, timeout=30)
    watch = shell.spawn("watch", job_id, "--cancel-on-interrupt")
    watch.expect("running")
    watch.kill(signal.SIGINT)
    watch.expect(pexpect.EOF)
    watch.close()
    assert watch.exitstatus == 130, watch.before
    assert wait_for_status(api, job_id, {"cancelled"}, timeout=30)["status"] == "cancelled"


def test_the_api_key_comes_from_the_environment_or_the_flag(cluster: Cluster, shell: Shell) -> None:
    _, key = create_key(cluster, "acme")
    refused = shell.run("ls")
    assert refused.returncode == 1
    assert "401" in one_line_error(refused) or "API key" in refused.stderr
    assert shell.run("ls", "--api-key", key).returncode == 0
    done = shell.run("submit", "sleepy", "--input", '{"seconds": 0}', env={"LONGJOBS_API_KEY": key})
    assert done.returncode == 0, done.stderr
    listed = json.loads(shell.run("ls", "--api-key", key, "--json").stdout)
    assert [job["id"] for job in listed] == [done.stdout.strip()]
