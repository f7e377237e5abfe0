"""The worker routes of the API over real HTTP: claims, leases, reports under the lease, log shipping.

A live uvicorn server over a SQLite store (tests/api_fixtures.py), whose
clock stands at T0; runs are put in the store directly, as the scheduler
would. The remote worker process itself is tested in test_remote_worker.py.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestra.client import ApiClient
from orchestra.remote.shipper import LogShipper
from orchestra.api.app import create_app
from orchestra.api.server import ApiServer
from orchestra.api.settings import ApiSettings
from orchestra.store import NewRun, open_store
from tests.api_fixtures import (  # noqa: F401
    T0, TOKEN, LiveApi, api_factory_fixture, api_fixture, apply_specs, write_specs,
)
from tests.waiting import wait_for

DUE = T0 - timedelta(minutes=1)


def seed(api: LiveApi, count: int, *, deployment: str = "etl-nightly", pool: str = "spare",
         queue: str = "default", **extra: Any) -> None:
    api.store.insert_scheduled_runs([
        NewRun(deployment=deployment, pool=pool, queue=queue, scheduled_time=DUE, trigger="test",
               idempotency_key=f"{deployment}/{queue}/{i}/{time.monotonic_ns()}", **extra) for i in range(count)])


def claim(client: httpx.Client, worker: str, pool: str = "spare", count: int = 50, **body: Any) -> httpx.Response:
    return client.post(f"/api/v1/workers/{worker}/claim",
                       json={"pool": pool, "max": count, "leaseSeconds": 30, **body})


def report(run: dict[str, Any], to_state: str, **fields: Any) -> dict[str, Any]:
    return {"runId": run["id"], "attempt": run["attempt"], "toState": to_state, "reason": "test", **fields}


def test_four_workers_claiming_a_thousand_runs_at_once_get_each_run_exactly_once(api: LiveApi) -> None:
    seed(api, 1000)
    claimed: dict[str, list[str]] = {}
    go = threading.Event()

    def work(name: str) -> None:
        mine: list[str] = claimed.setdefault(name, [])
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
            go.wait(10)
            for _ in range(200):  # bounded: 1,000 runs take 20 full claims at most
                answer = claim(client, name)
                assert answer.status_code == 200, answer.text
                runs = answer.json()["runs"]
                if not runs:
                    return
                mine += [run["id"] for run in runs]
                assert {run["worker"] for run in runs} == {name}

    threads = [threading.Thread(target=work, args=(f"worker-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(60)
    every = [run_id for ids in claimed.values() for run_id in ids]
    assert len(every) == 1000 and len(set(every)) == 1000
    assert sum(1 for ids in claimed.values() if ids) >= 2, "the claims did not overlap in time"
    stored = api.store.get_runs(every)
    for name, ids in claimed.items():
        assert {stored[run_id].worker for run_id in ids} <= {name}
        assert all(stored[run_id].state == "Pending" for run_id in ids)


def test_a_claim_takes_only_the_queues_asked_for_and_respects_the_workers_limit(api: LiveApi) -> None:
    seed(api, 2, deployment="hello", pool="local", queue="critical")
    seed(api, 1, deployment="hello", pool="local", queue="default")
    only_default = claim(api.client, "q-worker", pool="local", queues=["default"]).json()["runs"]
    assert [run["queue"] for run in only_default] == ["default"]
    seed(api, 5)
    limited = claim(api.client, "small", limit=2).json()
    assert len(limited["runs"]) == 2 and limited["nextDueInSeconds"] == -60.0
    assert claim(api.client, "small", limit=2).json()["runs"] == []  # holds 2 already


def test_a_boolean_is_not_taken_for_a_number(api: LiveApi) -> None:
    seed(api, 1)
    for body in ({"leaseSeconds": True}, {"count": True}, {"limit": False}):
        answer = claim(api.client, "strict", **body)
        assert answer.status_code == 422, body
    assert claim(api.client, "strict", count=1).json()["runs"]  # nothing was claimed by the refused ones


def test_reports_apply_only_under_the_lease(api: LiveApi) -> None:
    seed(api, 2)
    first, second = claim(api.client, "holder", count=2).json()["runs"]
    running = api.client.post("/api/v1/workers/holder/transitions", json={"reports": [
        report(first, "Running", runnerIdent="pid:1", job={"command": ["true"]}, startTimeOffset=-1.5),
        report(second, "Running", attempt=7)]})  # not the attempt it holds
    assert running.status_code == 200, running.text
    results = running.json()["results"]
    assert [r["status"] for r in results] == [200, 409]
    assert "attempt 1, not 7" in results[1]["detail"]
    started = results[0]["run"]
    assert started["state"] == "Running" and started["runnerIdent"] == "pid:1"
    assert started["startTime"] == (T0 - timedelta(seconds=1.5)).isoformat()  # on the server's clock

    stranger = api.client.post("/api/v1/workers/stranger/transitions",
                               json={"reports": [report(first, "Completed", exitCode=0)]})
    assert stranger.status_code == 409 and "has worker 'holder', not 'stranger'" in stranger.text
    assert api.store.get_run(first["id"]).state == "Running"

    skipping = api.client.post("/api/v1/workers/holder/transitions",
                               json={"reports": [report(started, "Scheduled", nextAttempt=5)]})
    assert skipping.status_code == 409
    missing = api.client.post("/api/v1/workers/holder/transitions",
                              json={"reports": [report({"id": "ab" * 16, "attempt": 1}, "Completed")]})
    assert missing.status_code == 404

    beat = api.client.post("/api/v1/workers/holder/heartbeat",
                           json={"runIds": [first["id"], second["id"], "cd" * 16], "leaseSeconds": 10})
    assert sorted(beat.json()["kept"]) == sorted([first["id"], second["id"]])
    assert api.store.get_run(first["id"]).lease_expires_at == T0 + timedelta(seconds=10)
    assert api.client.post("/api/v1/workers/other/heartbeat",
                           json={"runIds": [first["id"]], "leaseSeconds": 10}).json()["kept"] == []


def test_log_chunks_are_appended_once_by_offset_and_only_by_the_runs_worker(api: LiveApi) -> None:
    seed(api, 1, max_attempts=2)
    run = claim(api.client, "shipper", count=1).json()["runs"][0]

    def ship(worker: str, offset: int, data: bytes, run_id: str = run["id"]) -> httpx.Response:
        return api.client.post(f"/api/v1/runs/{run_id}/logs", params={"worker": worker, "offset": offset},
                               content=data, headers={"Content-Type": "application/octet-stream"})

    assert ship("shipper", 0, b"hello ").json() == {"nextOffset": 6}
    assert ship("shipper", 0, b"hello ").json() == {"nextOffset": 6}  # a retried chunk: written once
    assert ship("shipper", 3, b"lo world\n").json() == {"nextOffset": 12}  # overlapping: only the new tail
    assert ship("shipper", 20, b"gap").json() == {"nextOffset": 12}  # a gap: nothing, send from 12
    assert ship("intruder", 0, b"not mine").status_code == 409
    assert api.log_path(run["id"]).read_bytes() == b"hello world\n"

    # A retry releases the run: its worker may finish its stream until another worker takes the run,
    # whose own stream (from its offset 0) then goes after it.
    api.client.post("/api/v1/workers/shipper/transitions", json={"reports": [report(run, "Running")]})
    retry = api.client.post("/api/v1/workers/shipper/transitions",
                            json={"reports": [report(run, "Scheduled", nextAttempt=2, scheduledTimeOffset=-1)]})
    assert retry.json()["results"][0]["run"]["worker"] is None
    assert ship("shipper", 12, b"last words\n").json() == {"nextOffset": 23}
    assert claim(api.client, "next", count=1).json()["runs"][0]["attempt"] == 2
    assert ship("next", 0, b"attempt 2\n").json() == {"nextOffset": 10}
    assert ship("shipper", 23, b"too late\n").status_code == 409
    page = api.client.get(f"/api/v1/runs/{run['id']}/logs").json()
    assert page["text"] == "hello world\nlast words\nattempt 2\n"
    assert ship("shipper", 0, b"x", run_id="ef" * 16).status_code == 404


def test_the_log_shipper_waits_out_an_unreachable_daemon_and_then_sends_every_byte_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a free loopback port, where nothing listens yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = open_store(f"sqlite:///{tmp_path / 'orchestra.db'}")
    apply_specs(store, write_specs(tmp_path))
    store.insert_scheduled_runs([NewRun(deployment="etl-nightly", pool="spare", scheduled_time=DUE)])
    run = store.claim_runs("spare", now=T0, worker="far", max_count=1)[0]
    settings = ApiSettings(token=TOKEN, state_dir=tmp_path / ".orchestra", clock=lambda: T0)
    server_log = settings.log_dir / f"{run.id}.log"
    log_dir = tmp_path / "worker-logs"
    log_dir.mkdir()
    local_log = log_dir / f"{run.id}.log"
    client = ApiClient(f"http://127.0.0.1:{port}", TOKEN, timeout=2)
    shipper = LogShipper(client, "far", log_dir)
    shipper.watch(run.id, run.attempt)
    local_log.write_bytes(b"first line\n")
    server = None
    caplog.set_level(logging.WARNING, "orchestra.worker")
    shipper.start()
    try:
        wait_for(lambda: "cannot ship logs" in caplog.text, message="a failed attempt to ship")
        with local_log.open("ab") as out:
            out.write(b"second line\n")
        server = ApiServer(create_app(store, settings=settings), "127.0.0.1", port)
        server.start()
        wait_for(lambda: server_log.exists() and server_log.read_bytes() == b"first line\nsecond line\n",
                 timeout=30, message="the log shipped once the daemon answers")
        with local_log.open("ab") as out:
            out.write(b"third\n")
        shipper.flush([run.id])  # what the worker does before it reports the end
        assert server_log.read_bytes() == b"first line\nsecond line\nthird\n"
    finally:
        shipper.stop(flush_timeout=2)
        client.close()
        if server is not None:
            server.stop()
        store.close()


def test_a_batch_of_log_chunks_answers_chunk_by_chunk(api: LiveApi) -> None:
    seed(api, 2)
    first, second = claim(api.client, "batcher", count=2).json()["runs"]
    other = claim(api.client, "someone-else", count=1)  # nothing left: both runs are the batcher's
    assert other.json()["runs"] == []

    def chunk(run_id: str, offset: int, data: bytes) -> dict[str, Any]:
        return {"runId": run_id, "offset": offset, "data": base64.b64encode(data).decode()}

    answer = api.client.post("/api/v1/workers/batcher/logs", json={"chunks": [
        chunk(first["id"], 0, b"one\n"), chunk(second["id"], 0, b"two\n"), chunk(first["id"], 4, b"more\n"),
        {"runId": second["id"], "offset": 4, "data": "not base64!"}, chunk("ab" * 16, 0, b"x")]})
    assert answer.status_code == 200, answer.text
    assert [(r["status"], r["nextOffset"]) for r in answer.json()["results"]] == [
        (200, 4), (200, 4), (200, 9), (400, None), (404, None)]
    assert api.log_path(first["id"]).read_bytes() == b"one\nmore\n"
    assert api.log_path(second["id"]).read_bytes() == b"two\n"
    refused = api.client.post("/api/v1/workers/someone-else/logs", json={"chunks": [chunk(first["id"], 0, b"x")]})
    assert refused.json()["results"][0]["status"] == 409
    assert api.log_path(first["id"]).read_bytes() == b"one\nmore\n"


@pytest.mark.parametrize("forgotten", [False, True], ids=["stream-lingering", "stream-forgotten"])
def test_attempts_alternating_between_workers_all_reach_the_log(
        api: LiveApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forgotten: bool) -> None:
    """Attempt 1 on worker a, 2 on b, 3 on a again: the log holds each attempt's output, whole,
    in order, whether a's shipper still followed the run's log or had let it go."""
    seed(api, 1, max_attempts=3)
    client = ApiClient(api.url, TOKEN, timeout=5)
    shippers = {name: LogShipper(client, name, tmp_path / name) for name in ("a", "b")}
    for name in shippers:
        (tmp_path / name).mkdir()

    def attempt(worker: str, output: bytes, next_attempt: int | None) -> None:
        run = claim(api.client, worker, count=1).json()["runs"][0]
        shipper = shippers[worker]
        shipper.watch(run["id"], run["attempt"])
        with (tmp_path / worker / f"{run['id']}.log").open("ab") as out:
            out.write(output)
        shipper.flush([run["id"]])  # as the worker does before it reports the attempt's end
        api.client.post(f"/api/v1/workers/{worker}/transitions", json={"reports": [report(run, "Running")]})
        end = (report(run, "Scheduled", nextAttempt=next_attempt, scheduledTimeOffset=-1) if next_attempt
               else report(run, "Completed", exitCode=0))
        assert api.client.post(f"/api/v1/workers/{worker}/transitions", json={"reports": [end]}).status_code == 200
        shipper.release([run["id"]])
        if forgotten:
            monkeypatch.setattr("orchestra.remote.shipper.LINGER", 0.0)
            shipper.flush([run["id"]])
            shipper._forget_finished()  # what its thread does once the last lines are sent

    try:
        attempt("a", b"attempt 1 on a: a longer line\n", 2)
        attempt("b", b"2 on b\n", 3)
        attempt("a", b"3 on a\n", None)
        run_id = api.store.list_runs()[0].id
        assert api.log_path(run_id).read_bytes() == b"attempt 1 on a: a longer line\n2 on b\n3 on a\n"
    finally:
        client.close()


def test_an_attempt_put_back_and_claimed_again_here_goes_on_in_the_log_where_it_stopped(
        api: LiveApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start put back for want of resources (Pending -> Scheduled, the same attempt) and
    claimed by this worker again once its stream was forgotten: the server counts the
    attempt's bytes from its first try, so the second try's lines must follow them, not be
    taken for bytes it already holds."""
    seed(api, 1)
    client = ApiClient(api.url, TOKEN, timeout=5)
    shipper = LogShipper(client, "w", tmp_path)
    monkeypatch.setattr("orchestra.remote.shipper.LINGER", 0.0)

    def try_once(output: bytes, end: str) -> str:
        run = claim(api.client, "w", count=1).json()["runs"][0]
        assert run["attempt"] == 1
        shipper.watch(run["id"], run["attempt"])
        with (tmp_path / f"{run['id']}.log").open("ab") as out:
            out.write(output)
        shipper.flush([run["id"]])
        reports = [report(run, "Scheduled")] if end == "put back" else [
            report(run, "Running"), report(run, "Completed", exitCode=0)]
        for one in reports:
            assert api.client.post("/api/v1/workers/w/transitions", json={"reports": [one]}).status_code == 200
        shipper.release([run["id"]])
        shipper._forget_finished()  # what its thread does once the last lines are sent
        return str(run["id"])

    try:
        first = try_once(b"[orchestra] not started: short of resources\n", "put back")
        second = try_once(b"[orchestra] started\nthe whole output\n", "completed")
        assert first == second
        assert api.log_path(first).read_bytes() == (b"[orchestra] not started: short of resources\n"
                                                    b"[orchestra] started\nthe whole output\n")
    finally:
        client.close()


def test_keep_logs_deletes_the_old_copies_no_stream_watches_and_nothing_else(
        api: LiveApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's copy goes once it was last written longer ago than ``keep`` and is not being
    shipped: the copy of a run still held here stays however old, and so do other files."""
    seed(api, 1)
    run = claim(api.client, "keeper", count=1).json()["runs"][0]
    log_dir = tmp_path / "worker-logs"
    (log_dir / ".jobs").mkdir(parents=True)  # the worker's journal lives here too
    client = ApiClient(api.url, TOKEN, timeout=5)
    shipper = LogShipper(client, "keeper", log_dir, keep=timedelta(days=7))
    shipper.watch(run["id"], run["attempt"])  # claimed here: what its log gains from now on is this attempt's
    week_ago = time.time() - 8 * 86400
    files = {name: log_dir / name for name in ("sent-long-ago.log", "recent.log", f"{run['id']}.log", "notes.txt")}
    for path in files.values():
        path.write_bytes(b"output\n")
    for name in ("sent-long-ago.log", f"{run['id']}.log", "notes.txt"):
        os.utime(files[name], (week_ago, week_ago))
    os.utime(log_dir / ".jobs", (week_ago, week_ago))
    try:
        assert shipper.delete_old_copies(time.time() - 7 * 86400) == 1
        assert sorted(p.name for p in log_dir.iterdir()) == sorted([".jobs", "recent.log", f"{run['id']}.log",
                                                                   "notes.txt"])
        # The run's attempt ends here and its log is all sent: the stream is forgotten, then the old copy goes.
        shipper.flush([run["id"]])
        assert api.log_path(run["id"]).read_bytes() == b"output\n"
        shipper.release([run["id"]])
        monkeypatch.setattr("orchestra.remote.shipper.LINGER", 0.0)
        shipper._forget_finished()
        os.utime(files[f"{run['id']}.log"], (week_ago, week_ago))
        assert shipper.delete_old_copies(time.time() - 7 * 86400) == 1
        assert not files[f"{run['id']}.log"].exists() and files["recent.log"].exists()
    finally:
        client.close()


def test_the_shipper_thread_deletes_old_copies_when_keep_logs_is_given(
        api: LiveApi, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log_dir = tmp_path / "worker-logs"
    log_dir.mkdir()
    old, kept = log_dir / "old.log", log_dir / "kept.log"
    old.write_bytes(b"x\n")
    kept.write_bytes(b"y\n")
    os.utime(old, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    caplog.set_level(logging.INFO, "orchestra.worker")
    client = ApiClient(api.url, TOKEN, timeout=5)
    shipper = LogShipper(client, "keeper", log_dir, keep=timedelta(days=1))
    shipper.start()
    try:
        wait_for(lambda: not old.exists(), timeout=10, message="the old copy deleted by the shipper's thread")
        assert kept.exists()
        assert "deleted 1 local log copy(ies) last written more than 1d ago (--keep-logs)" in caplog.text
    finally:
        shipper.stop(flush_timeout=2)
        client.close()


def test_a_log_shipped_before_streams_were_counted_per_attempt_goes_on_where_it_stood(tmp_path: Path) -> None:
    from orchestra.remote.logsink import append_chunk

    log = tmp_path / "r.log"
    log.write_bytes(b"from b\nfrom a\n")
    (tmp_path / "r.log.streams").write_text('{"b": 0, "a": 7}')  # the old form: where each stream began
    assert append_chunk(tmp_path, "r", "a", 0, b"from a\n") == 7  # a has that already
    assert append_chunk(tmp_path, "r", "a", 7, b"and more\n") == 16
    assert append_chunk(tmp_path, "r", "a", 0, b"attempt 2\n", attempt=2) == 10  # a new stream
    assert log.read_bytes() == b"from b\nfrom a\nand more\nattempt 2\n"


def test_a_remote_worker_asks_for_many_runs_and_resources_in_requests_a_proxy_lets_through(api: LiveApi) -> None:
    from urllib.parse import urlencode

    from orchestra.remote.store_client import QUERY_BUDGET, RemoteStore, query_batches

    ids = [f"{i:032x}" for i in range(2000)]
    batches = list(query_batches(ids, "id"))
    assert [i for batch in batches for i in batch] == ids  # all of them, in order, once
    assert all(len(urlencode({"id": batch}, doseq=True)) <= QUERY_BUDGET for batch in batches)
    odd = ["é" * 100, "x", "a&b=c"]  # percent-encoded, they weigh more
    assert all(len(urlencode({"name": batch}, doseq=True)) <= 1000 for batch in query_batches(odd * 50, "name", 1000))

    seed(api, 3)
    claimed = [run["id"] for run in claim(api.client, "far", count=3).json()["runs"]]
    client = ApiClient(api.url, TOKEN, timeout=5)
    try:
        remote = RemoteStore(client, "far")
        assert sorted(remote.get_runs(ids + claimed)) == sorted(claimed)
        names = [f"deployment-{i:05d}" for i in range(1500)] + ["etl-nightly"]
        assert list(remote.get_resources("Deployment", names)) == ["etl-nightly"]
    finally:
        client.close()
