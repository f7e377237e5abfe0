"""The web UI over HTTP, as a browser without JavaScript sees it: login, sessions, CSRF,
the Run form and its messages, paging, escaping, and the pages' contents.

A real uvicorn server on 127.0.0.1 over a SQLite store (``ui_fixtures``); the
client keeps cookies like a browser and sends no bearer header.
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import unquote

import httpx
import pytest
from api_fixtures import T0, TOKEN
from ui_fixtures import LiveUi, csrf_of, ui_factory_fixture, ui_fixture  # noqa: F401

from orchestra.reconcile.daemon import SPEC_STATUS
from orchestra.reconcile.operations import set_paused
from orchestra.store import NewRun, ResourceWrite
from orchestra.ui import pages
from orchestra.ui.session import SESSION_COOKIE

PAGES = ["/", "/deployments", "/deployments/hello", "/runs", "/pools", "/pools/local", "/plan"]


def set_cookie_headers(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


# -- login and sessions ---------------------------------------------------------------


def test_pages_without_a_session_redirect_to_the_login_form_and_the_api_still_answers_401(ui: LiveUi) -> None:
    with ui.browser() as browser:
        for path in PAGES:
            response = browser.get(path + "?x=1")
            assert response.status_code == 303, path
            assert unquote(response.headers["location"]) == f"/login?next={path}?x=1"
        api = browser.get("/api/v1/runs")
        assert api.status_code == 401 and api.json()["detail"].startswith("missing bearer token")
        assert browser.get("/static/orchestra.js").status_code == 200  # assets need no session
        login = browser.get("/login")
        assert login.status_code == 200 and '<label for="token">API token</label>' in login.text


def test_login_keeps_a_signed_http_only_strict_cookie_not_the_token(ui: LiveUi) -> None:
    with ui.browser() as browser:
        form = browser.get("/login?next=/runs")
        refused = browser.post("/login", data={"token": "wrong", "csrf": csrf_of(form.text), "next": "/runs"})
        assert refused.status_code == 401 and "not the API&#39;s token" in refused.text
        assert SESSION_COOKIE not in browser.cookies
        form = browser.get("/login?next=/runs")
        response = browser.post("/login", data={"token": TOKEN, "csrf": csrf_of(form.text), "next": "/runs"})
        assert response.status_code == 303 and response.headers["location"] == "/runs"
        cookie = next(h for h in set_cookie_headers(response) if h.startswith(SESSION_COOKIE + "="))
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert TOKEN not in cookie
        assert browser.get("/runs").status_code == 200


def test_login_needs_the_forms_own_csrf_token_and_redirects_only_within_the_site(ui: LiveUi) -> None:
    with ui.browser() as browser:
        assert browser.post("/login", data={"token": TOKEN, "csrf": "forged", "next": "/"}).status_code == 403
        for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
            form = browser.get("/login")
            response = browser.post("/login", data={"token": TOKEN, "csrf": csrf_of(form.text), "next": target})
            assert response.headers["location"] == "/", target


def test_a_tampered_or_foreign_cookie_is_no_session(ui_factory) -> None:  # type: ignore[no-untyped-def]
    first, second = ui_factory(), ui_factory(token="another-token")
    client = first.logged_in()
    cookie = client.cookies[SESSION_COOKIE]
    nonce, expires, signature = cookie.split(".")
    for forged in (f"{nonce}.{int(expires) + 999999}.{signature}", f"x{nonce}.{expires}.{signature}", "garbage"):
        with first.browser() as browser:
            browser.cookies.set(SESSION_COOKIE, forged)
            assert browser.get("/").status_code == 303, forged
    with second.browser() as browser:  # a session of a server with another token
        browser.cookies.set(SESSION_COOKIE, cookie)
        assert browser.get("/").status_code == 303


def test_the_session_cookie_reads_the_api_but_writes_still_need_the_bearer_token(ui: LiveUi) -> None:
    client = ui.logged_in()
    assert client.get("/api/v1/runs").status_code == 200
    assert client.get("/openapi.json").status_code == 200  # the API's description, linked from every page
    assert client.post("/api/v1/deployments/hello/runs", json={}).status_code == 401
    assert client.post("/api/v1/deployments/hello/pause").status_code == 401


def test_logout_ends_the_session(ui: LiveUi) -> None:
    client = ui.logged_in()
    page = client.get("/")
    response = client.post("/logout", data={"csrf": csrf_of(page.text)})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert client.get("/").status_code == 303


def test_without_a_token_there_is_no_login_but_forms_still_need_their_csrf_token(ui_factory) -> None:  # type: ignore[no-untyped-def]
    ui = ui_factory(token=None)
    with ui.browser() as browser:
        page = browser.get("/deployments/hello")
        assert page.status_code == 200 and "Log out" not in page.text
        assert browser.get("/login").headers["location"] == "/"
        assert browser.post("/deployments/hello/run", data={"param.who": "x"}).status_code == 403
        ok = browser.post("/deployments/hello/run", data={"param.who": "x", "csrf": csrf_of(page.text)})
        assert ok.status_code == 303


# -- forms: CSRF, the Run form and its messages, pause, cancel ------------------------------


def test_every_ui_form_refuses_a_missing_or_foreign_csrf_token(ui: LiveUi) -> None:
    run = ui.store.create_run(NewRun(deployment="hello", pool="local", scheduled_time=T0 + timedelta(hours=1)))
    client, other = ui.logged_in(), ui.logged_in()
    foreign = csrf_of(other.get("/").text)
    for path in ("/deployments/hello/run", f"/runs/{run.id}/cancel", "/deployments/hello/pause",
                 "/pools/local/pause", "/queues/critical/pause", "/logout"):
        for token in (None, foreign, ""):
            data = {"param.who": "x"} | ({"csrf": token} if token is not None else {})
            response = client.post(path, data=data)
            assert response.status_code == 403, (path, token)
            assert "reload the page" in response.text
    assert ui.store.get_run(run.id).state == "Scheduled"
    assert not ui.store.get_resource("Deployment", "hello").paused
    assert len(ui.store.list_runs(deployment="hello")) == 1


def test_the_run_form_is_generated_from_the_parameter_schema(ui: LiveUi) -> None:
    client = ui.logged_in()
    page = client.get("/deployments/hello").text
    assert '<label for="param-who">who <span class="req">(required)</span>' in page
    assert 'name="param.who" type="text" value="world" required="required"' in page
    assert 'name="param.times" type="number" value="1" step="1" min="1"' in page
    assert 'name="jobVariables"' in page


def test_starting_a_run_with_parameters_redirects_to_the_run(ui: LiveUi) -> None:
    client = ui.logged_in()
    page = client.get("/deployments/hello")
    response = client.post("/deployments/hello/run", data={
        "csrf": csrf_of(page.text), "param.who": "web", "param.times": "3",
        "jobVariables": '{"env": {"LOG_LEVEL": "debug"}}'})
    assert response.status_code == 303
    run = ui.store.get_run(response.headers["location"].removeprefix("/runs/"))
    assert run.parameters == {"who": "web", "times": 3} and run.trigger == "ui"
    assert run.job_variables == {"env": {"LOG_LEVEL": "debug"}}
    assert "web" in client.get(response.headers["location"]).text


@pytest.mark.parametrize(("fields", "message"), [
    ({"param.times": "0"}, "0 is less than the minimum of 1"),
    ({"param.times": "abc"}, "&#39;abc&#39; is not a whole number"),
    ({"jobVariables": "{oops"}, "not valid JSON"),
    ({"jobVariables": "[1]"}, "must be a JSON object"),
    ({"jobVariables": '{"nope": 1}'}, "nope"),
])
def test_a_bad_value_comes_back_next_to_its_field(ui: LiveUi, fields: dict[str, str], message: str) -> None:
    client = ui.logged_in()
    page = client.get("/deployments/hello")
    data = {"csrf": csrf_of(page.text), "param.who": "web", "param.times": "2", **fields}
    response = client.post("/deployments/hello/run", data=data)
    fragment = client.post("/deployments/hello/run", data=data, headers={"X-Orchestra-Fragment": "run-form"})
    assert response.status_code == 422 and message in response.text
    assert 'class="field-error"' in response.text and 'aria-invalid="true"' in response.text
    assert "<h1>hello" in response.text  # the whole page, the form open with the submitted values
    assert fragment.status_code == 422 and fragment.text.lstrip().startswith("<form") and message in fragment.text
    assert ui.store.list_runs(deployment="hello") == []


def test_pause_and_resume_a_deployment_pool_and_queue(ui: LiveUi) -> None:
    client = ui.logged_in()
    csrf = csrf_of(client.get("/").text)
    response = client.post("/deployments/hello/pause", data={"csrf": csrf, "next": "/deployments/hello"})
    assert response.status_code == 303 and response.headers["location"] == "/deployments/hello"
    assert ui.store.get_resource("Deployment", "hello").paused
    assert "Resume" in client.get("/deployments/hello").text
    client.post("/deployments/hello/resume", data={"csrf": csrf})
    assert not ui.store.get_resource("Deployment", "hello").paused
    client.post("/pools/spare/pause", data={"csrf": csrf, "next": "https://evil.example"})
    client.post("/queues/critical/pause", data={"csrf": csrf})
    assert ui.store.get_resource("WorkPool", "spare").paused and ui.store.get_resource("WorkQueue", "critical").paused


def test_cancel_a_run_and_a_second_cancel_is_a_clear_409(ui: LiveUi) -> None:
    run = ui.store.create_run(NewRun(deployment="hello", pool="local", scheduled_time=T0))
    client = ui.logged_in()
    page = client.get(f"/runs/{run.id}")
    assert "Cancel run" in page.text
    response = client.post(f"/runs/{run.id}/cancel", data={"csrf": csrf_of(page.text)})
    assert response.status_code == 303 and ui.store.get_run(run.id).state == "Cancelled"
    again = client.post(f"/runs/{run.id}/cancel", data={"csrf": csrf_of(page.text)})
    assert again.status_code == 409 and "already Cancelled" in again.text
    assert "Cancel run" not in client.get(f"/runs/{run.id}").text


def test_unknown_things_are_404_pages_on_the_ui_and_json_on_the_api(ui: LiveUi) -> None:
    client = ui.logged_in()
    page = client.get("/deployments/nope")
    assert page.status_code == 404 and "Deployment/nope not found" in page.text and "<html" in page.text
    assert client.get("/runs/abcdef123456").status_code == 404
    assert client.get("/pools/nope").status_code == 404
    assert client.get("/api/v1/deployments/nope").json() == {"detail": "Deployment/nope not found"}


# -- what pages show --------------------------------------------------------------------


def test_names_parameters_reasons_and_log_lines_are_escaped(ui: LiveUi) -> None:
    evil = "<script>alert('x')</script>"
    run = ui.store.create_run(NewRun(deployment="hello", pool="local", scheduled_time=T0,
                                     parameters={"who": evil}, state_reason=evil))
    ui.settings.log_dir.mkdir(parents=True, exist_ok=True)
    (ui.settings.log_dir / f"{run.id}.log").write_text(f"line one\n{evil}\n<img src=x onerror=alert(1)>\n")
    ui.store.put_status(SPEC_STATUS, {"ok": False, "errors": [
        {"file": "specs/<b>bad</b>.yaml", "line": 3, "column": 1, "resource": None, "path": "spec",
         "message": evil, "hint": None, "severity": "error"}]})
    client = ui.logged_in()
    pages = [client.get(f"/runs/{run.id}").text, client.get("/runs").text, client.get("/").text,
             client.get("/deployments/hello").text]
    for html in pages:
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>bad" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in pages[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0]
    assert "specs/&lt;b&gt;bad&lt;/b&gt;.yaml:3:1" in pages[2]


def test_pages_forbid_inline_scripts_and_framing(ui: LiveUi) -> None:
    client = ui.logged_in()
    headers = client.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_runs_page_at_a_time_with_a_cursor_and_filters(ui: LiveUi) -> None:
    for i in range(120):
        ui.store.create_run(NewRun(deployment="hello" if i % 2 else "etl-nightly", pool="local",
                                   scheduled_time=T0 - timedelta(minutes=i)))
    client = ui.logged_in()
    seen: list[str] = []
    path = "/runs?deployment=hello"
    for _ in range(5):
        html = client.get(path).text
        seen += [part.split('"')[0] for part in html.split('<tr data-run-id="')[1:]]
        if 'rel="next"' not in html:
            break
        found = re.search(r'href="\?([^"]*)" rel="next"', html)
        assert found
        path = "/runs?" + found.group(1).replace("&amp;", "&")
    assert len(seen) == 60 and len(set(seen)) == 60
    assert client.get("/runs?state=Completed").text.count("<tr data-run-id=") == 0
    assert client.get("/runs?since=2040-01-01T00:00").text.count("<tr data-run-id=") == 0
    assert client.get("/runs?since=yesterday").status_code == 422


def test_deployments_are_paged_and_filtered_by_name_pool_and_label(ui: LiveUi) -> None:
    ui.store.apply_resources([
        ResourceWrite("Deployment", f"bulk-{i:03d}", {"name": f"bulk-{i:03d}", "labels": {"team": "bulk"}},
                      {"command": ["true"], "pool": "spare", "schedules": [{"cron": "0 3 * * *"}]},
                      None, None, f"h{i}", manager="api") for i in range(120)])
    client = ui.logged_in()
    first = client.get("/deployments").text
    assert "Showing 1–50 of 122 deployments." in first and "Page 1 of 3" in first
    third = client.get("/deployments?page=3").text
    assert "Showing 101–122 of 122" in third and "bulk-119" in third
    filtered = client.get("/deployments?label=team%3Dbulk&pool=spare&name=bulk-11").text
    assert "Showing 1–10 of 10" in filtered and "every day at 03:00" in filtered
    assert client.get("/deployments?label=team").status_code == 422


def test_deployment_page_shows_spec_source_schedules_in_their_zone_job_and_history(ui: LiveUi) -> None:
    ui.store.create_run(NewRun(deployment="hello", pool="local", scheduled_time=T0 - timedelta(hours=1)))
    client = ui.logged_in()
    html = client.get("/deployments/hello").text
    assert "hello.yaml:1" in html and "kind: Deployment" in html
    assert "every day at 02:30 (Europe/Berlin)" in html
    assert 'datetime="2030-01-02T01:30:00+00:00" data-local>2030-01-02 02:30 CET (Europe/Berlin)</time>' in html
    assert "Rendered job" in html and "hello world" in html
    assert html.count("<tr data-run-id=") == 1


def test_overview_shows_the_chart_late_and_failing_runs_pool_load_and_spec_errors(ui: LiveUi) -> None:
    late = ui.store.create_run(NewRun(deployment="hello", pool="local", scheduled_time=T0 - timedelta(minutes=30)))
    failed = ui.store.create_run(NewRun(deployment="etl-nightly", pool="spare", scheduled_time=T0))
    for state in ("Pending", "Running", "Failed"):
        ui.store.transition(failed.id, state, "exit code 3" if state == "Failed" else state)
    running = ui.store.create_run(NewRun(deployment="hello", pool="local", scheduled_time=T0))
    ui.store.transition(running.id, "Pending", "claimed")
    ui.store.put_status(SPEC_STATUS, {"ok": False, "errors": [
        {"file": "specs/hello.yaml", "line": 7, "column": 3, "resource": "Deployment/hello",
         "path": "spec.schedules[0].cron", "message": "not a cron expression", "hint": None, "severity": "error"}]})
    client = ui.logged_in()
    html = client.get("/").text
    assert "3 runs created since" in html and 'class="bar state-failed"' in html
    assert f'href="/runs/{late.id}"' in html.split('id="late-title"')[1].split("</section>")[0]
    assert "exit code 3" in html.split('id="failing-title"')[1].split("</section>")[0]
    assert '<meter min="0" max="4" value="1"' in html  # pool local: 1 active of its limit 4
    assert "specs/hello.yaml:7:3" in html and "not a cron expression" in html


def test_overview_lists_the_daemons_and_marks_one_gone_quiet(ui: LiveUi) -> None:
    client = ui.logged_in()
    assert "No daemon has served this store in the last day." in client.get("/").text
    base = {"paths": ["specs"], "workers": "all", "startedAt": (T0 - timedelta(hours=2)).isoformat()}
    ui.store.put_status("daemon:build-1:41", {**base, "host": "build-1", "pid": 41, "seenAt": T0.isoformat(),
                                              "stoppedAt": None, "schedules": "materializes"})
    ui.store.put_status("daemon:build-2:97", {**base, "host": "build-2", "pid": 97, "stoppedAt": None,
                                              "seenAt": (T0 - timedelta(minutes=5)).isoformat(),
                                              "schedules": "stands by"})
    ui.store.put_status("daemon:build-3:12", {**base, "host": "build-3", "pid": 12, "stoppedAt": None,
                                              "seenAt": (T0 - timedelta(seconds=5)).isoformat(),
                                              "schedules": "stands by"})
    section = client.get("/").text.split('id="daemons-title"')[1].split("</section>")[0]
    rows = section.split("<tbody>")[1].split("</tr>")
    assert "build-1:41" in rows[0] and "<td>running</td>" in rows[0] and "badge" not in rows[0]
    assert ">materializes them</span>" in rows[0]
    assert "build-3:12" in rows[1] and ">stands by</span>" in rows[1]
    assert "build-2:97" in rows[2] and '<span class="badge warn"' in rows[2] and "unresponsive" in rows[2]
    assert "stands by" not in rows[2]  # what an unresponsive daemon last said is not what it does
    ui.store.put_status("daemon:build-1:41", {**base, "host": "build-1", "pid": 41, "seenAt": T0.isoformat(),
                                              "stoppedAt": None, "unreachable": [
                                                  {"pool": "boxes", "since": (T0 - timedelta(minutes=3)).isoformat(),
                                                   "error": "cannot reach the Docker engine at unix:///x.sock"}]})
    section = client.get("/").text.split('id="daemons-title"')[1].split("</section>")[0]
    assert ('<span class="badge warn">pool boxes waits</span> since' in section
            and ": cannot reach the Docker engine at unix:///x.sock</p>" in section)


def test_pools_page_says_why_each_queued_run_waits(ui: LiveUi) -> None:
    set_paused(ui.store, "queue", "critical", True)
    first = ui.store.create_run(NewRun(deployment="hello", pool="local", queue="critical", scheduled_time=T0))
    second = ui.store.create_run(NewRun(deployment="etl-nightly", pool="spare", scheduled_time=T0))
    client = ui.logged_in()
    html = client.get("/pools").text
    single = client.get("/pools/local").text
    row = html.split(f'<tr data-run-id="{first.id}">')[1].split("</tr>")[0]
    assert "queue &#39;critical&#39; paused" in row
    assert first.id in single and second.id not in single

    def why_second() -> str:
        html = client.get("/pools").text
        return html.split(f'<tr data-run-id="{second.id}">')[1].split("</tr>")[0].split('class="why">')[1]

    assert why_second().startswith("ready; but no running daemon or online worker serves pool &#39;spare&#39;")
    seen = {"seenAt": T0.isoformat(), "stoppedAt": None, "startedAt": T0.isoformat(), "paths": ["specs"]}
    ui.store.put_status("daemon:h:1:a", {**seen, "host": "h", "pid": 1, "workers": "local"})  # not spare's
    assert why_second().startswith("ready; but no running daemon")
    ui.store.put_status("worker:b", {"worker": "remote:h:2:b", "pools": ["spare"], "seenAt": T0.isoformat()})
    assert why_second().startswith("ready; waiting for a worker")
    ui.store.put_status("worker:b", {"worker": "remote:h:2:b", "pools": ["spare"],
                                     "seenAt": (T0 - timedelta(minutes=1)).isoformat()})  # gone offline
    assert why_second().startswith("ready; but no running daemon")
    ui.store.put_status("daemon:h:1:a", {**seen, "host": "h", "pid": 1, "workers": "all"})
    assert why_second().startswith("ready; waiting for a worker")


def test_a_run_its_worker_put_back_says_why_beside_ready(ui: LiveUi) -> None:
    run = ui.store.create_run(NewRun(deployment="etl-nightly", pool="spare", scheduled_time=T0))
    ui.store.put_status("worker:b", {"worker": "remote:h:2:b", "pools": ["spare"], "seenAt": T0.isoformat()})
    ui.store.claim_runs("spare", now=T0, worker="remote:h:2:b", max_count=1, lease_seconds=30)
    ui.store.transition(run.id, "Scheduled", "not started: cannot reach the Docker engine at unix:///x.sock: "
                                             "no socket there: is dockerd running?; the run waits")
    client = ui.logged_in()
    expected = ("ready; waiting for a worker to claim it; its last start did not happen: cannot reach the Docker "
                "engine at unix:///x.sock: no socket there: is dockerd running?")
    row = client.get("/pools").text.split(f'<tr data-run-id="{run.id}">')[1].split("</tr>")[0]
    assert expected in row
    assert expected in client.get(f"/runs/{run.id}").text


def test_plan_page_shows_drift_of_the_watched_directory(ui: LiveUi) -> None:
    client = ui.logged_in()
    assert "No changes: the store matches the specs." in client.get("/plan").text
    (ui.spec_dir / "new.yaml").write_text(
        "apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: extra}\nspec: {type: process}\n")
    html = client.get("/plan").text
    assert "create WorkPool/extra" in html and "new.yaml:1" in html
    (ui.spec_dir / "broken.yaml").write_text("apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {}\n")
    html = client.get("/plan").text
    assert "The specs are invalid" in html and "broken.yaml" in html


def test_secret_parameters_never_reach_the_page(ui: LiveUi) -> None:
    spec = {"command": ["echo", "{{ parameters.user }}"], "pool": "local",
            "parameters": {"user": "me", "password": "default-hunter2"},
            "parameterSchema": {"type": "object", "properties": {
                "user": {"type": "string"}, "password": {"type": "string", "writeOnly": True}}}}
    ui.store.apply_resources([ResourceWrite("Deployment", "vault", {"name": "vault"}, spec, None, None, "h",
                                            manager="api")])
    client = ui.logged_in()
    page = client.get("/deployments/vault")
    assert "default-hunter2" not in page.text
    assert 'name="param.password" type="password" value=""' in page.text
    response = client.post("/deployments/vault/run", data={"csrf": csrf_of(page.text), "param.user": "web",
                                                           "param.password": "typed-s3cret"})
    assert response.status_code == 303
    run = ui.store.get_run(response.headers["location"].removeprefix("/runs/"))
    assert run.parameters["password"] == "typed-s3cret"  # stored for the worker, shown to nobody
    html = client.get(f"/runs/{run.id}").text
    assert "typed-s3cret" not in html and "&#34;password&#34;: &#34;***&#34;" in html


def test_pause_and_resume_one_schedule(ui: LiveUi) -> None:
    client = ui.logged_in()
    page = client.get("/deployments/hello").text
    identity = re.search(r'name="schedule" value="([^"]+)"', page)
    assert identity is not None
    response = client.post("/deployments/hello/schedules", data={
        "csrf": csrf_of(page), "schedule": identity.group(1), "action": "pause"})
    assert response.status_code == 303
    assert ui.store.paused_schedules(["hello"]) == {("hello", identity.group(1))}
    assert "Resume<span class=\"visually-hidden\"> schedule every day at 02:30" in client.get("/deployments/hello").text
    assert '<span class="badge warn">paused</span>' in client.get("/deployments").text
    client.post("/deployments/hello/schedules", data={"csrf": csrf_of(page), "schedule": identity.group(1),
                                                      "action": "resume"})
    assert ui.store.paused_schedules(["hello"]) == set()
    assert client.post("/deployments/hello/schedules", data={"csrf": csrf_of(page), "schedule": "9",
                                                             "action": "pause"}).status_code == 404


def test_the_overview_chart_is_shared_for_a_few_seconds_then_counted_again(ui: LiveUi) -> None:
    ticks = [0.0]
    cache = pages.ChartCache(seconds=10, clock=lambda: ticks[0])
    assert cache.get(ui.store, T0)["total"] == 0
    ui.store.create_run(NewRun(deployment="hello", pool="local", scheduled_time=T0))
    ticks[0] = 9.0
    assert cache.get(ui.store, T0)["total"] == 0  # within the window: the same count
    ticks[0] = 11.0
    assert cache.get(ui.store, T0)["total"] == 1
    ui.store.create_run(NewRun(deployment="hello", pool="local", scheduled_time=T0))
    assert cache.get(ui.store, T0 + timedelta(hours=1))["total"] == 2  # a new hour: counted again


def test_static_assets_are_served_from_the_package_and_cached_by_content(ui: LiveUi) -> None:
    client = ui.logged_in()
    html = client.get("/").text
    links = re.findall(r'(?:href|src)="(/static/[^"]+\?v=[0-9a-f]{12})"', html)
    assert sorted(link.split("?")[0] for link in links) == ["/static/orchestra.css", "/static/orchestra.js"]
    for link in links:
        response = client.get(link)
        assert response.status_code == 200 and "immutable" in response.headers["cache-control"]
    assert "EventSource" in client.get(links[1] if links[1].startswith("/static/orchestra.js") else links[0]).text
