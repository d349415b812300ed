"""The console over plain HTTP (httpx against the real app on uvicorn), on SQLite and PostgreSQL:
login and sessions, CSRF, roles, lock-out, admin actions and what they record."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from dicom_node.audit.accounts import ConsoleAction
from dicom_node.audit.models import Job, JobEvent, Series
from dicom_node.console import users
from tests.console.conftest import Running, csrf_of
from tests.console.harness import ADMIN, RADIOLOGIST
from tests.console.seed import ACCESSION, CALLING_AE, PATIENT_ID, PATIENT_NAME

PAGES = ["/", "/series", "/jobs", "/associations", "/failures", "/settings", "/activity"]
ADMIN_ONLY = ["/associations", "/failures", "/settings", "/activity"]


def _job(console: Running) -> Job:
    with console.sessions() as session:
        job = session.get(Job, console.seeded.job_id)
        assert job is not None
        return job


def _actions(console: Running) -> list[tuple]:
    with console.sessions() as session:
        return [
            (a.user_name, a.action, a.target, a.outcome)
            for a in session.scalars(select(ConsoleAction).order_by(ConsoleAction.id))
        ]


def test_nothing_without_a_login_but_healthz(console: Running) -> None:
    with console.client() as client:
        for page in PAGES + [f"/jobs/{console.seeded.job_id}", f"/series/{console.seeded.series_uid}"]:
            response = client.get(page)
            assert response.status_code == 303, page
            assert response.headers["location"].startswith("/login?next=")
        for api in [
            "/api/series",
            "/api/jobs",
            f"/api/jobs/{console.seeded.job_id}",
            "/api/failures",
            f"/api/jobs/{console.seeded.job_id}/preview.png",
        ]:
            response = client.get(api)
            assert response.status_code == 401 and "Basic" in response.headers["www-authenticate"], api
        assert client.post(f"/jobs/{console.seeded.job_id}/retry").status_code == 303  # to the login page
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok", "model": "test-model"}
        assert client.get("/metrics").status_code == 404  # metrics are off
    assert _job(console).state.value == "failed"


def test_login_cookie_logout_and_headers(console: Running) -> None:
    client = console.login()
    [cookie] = [c for c in client.cookies.jar if c.name == "meddet_session"]
    assert cookie.has_nonstandard_attr("HttpOnly") and not cookie.secure
    assert cookie.get_nonstandard_attr("SameSite").lower() == "lax"
    page = client.get("/")
    assert page.status_code == 200 and "alice (admin)" in page.text and "test-model" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    stolen = cookie.value
    response = client.post("/logout", data={"csrf_token": csrf_of(client)})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    with console.client(cookies={"meddet_session": stolen}) as replay:  # the session is over
        assert replay.get("/").status_code == 303
    assert ("alice", "logout", None, "ok") in _actions(console)


def test_login_form_needs_its_csrf_cookie(console: Running) -> None:
    with console.client() as client:
        response = client.post("/login", data={"csrf_token": "forged", "username": ADMIN[0], "password": ADMIN[1]})
        assert response.status_code == 403 and "meddet_session" not in client.cookies
        client.get("/login")
        response = client.post("/login", data={"csrf_token": "other", "username": ADMIN[0], "password": ADMIN[1]})
        assert response.status_code == 403 and "meddet_session" not in client.cookies


def test_login_goes_back_to_the_page_asked_for_and_never_elsewhere(console: Running) -> None:
    with console.client() as client:
        login = client.get(f"/login?next=/jobs/{console.seeded.job_id}")
        token = client.cookies["meddet_login"]
        for target, expected in [
            (f"/jobs/{console.seeded.job_id}", f"/jobs/{console.seeded.job_id}"),
            ("//evil.example/x", "/"),
            ("https://evil.example/", "/"),
        ]:
            client.cookies.set("meddet_login", token)
            response = client.post(
                "/login", data={"csrf_token": token, "username": ADMIN[0], "password": ADMIN[1], "next": target}
            )
            assert response.status_code == 303 and response.headers["location"] == expected
        assert f'value="/jobs/{console.seeded.job_id}"' in login.text


def test_posts_need_the_session_csrf_token(console: Running) -> None:
    client = console.login()
    retry = f"/jobs/{console.seeded.job_id}/retry"
    assert client.post(retry).status_code == 403
    assert client.post(retry, data={"csrf_token": "wrong"}).status_code == 403
    token = csrf_of(client, f"/jobs/{console.seeded.job_id}")
    cross = client.post(retry, data={"csrf_token": token}, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    assert _job(console).state.value == "failed" and _job(console).run == 1

    done = client.post(retry, data={"csrf_token": token})
    assert done.status_code == 303 and done.headers["location"] == f"/jobs/{console.seeded.job_id}"
    page = client.get(done.headers["location"])
    assert "queued (run 2)" in page.text
    job = _job(console)
    assert job.state.value == "queued" and job.run == 2
    with console.sessions() as session:
        details = list(session.scalars(select(JobEvent.detail).where(JobEvent.job_id == job.id)))
    assert "retry requested by alice (console)" in details
    assert ("alice", "retry", f"job {job.id}", "ok") in _actions(console)
    again = client.post(retry, data={"csrf_token": token})  # queued now: refused, and recorded
    assert "only failed or quarantined jobs retry" in client.get(again.headers["location"]).text
    assert ("alice", "retry", f"job {job.id}", "refused") in _actions(console)


def test_an_admin_reanalyses_a_job_of_another_model_with_the_consoles(console: Running) -> None:
    client = console.login()
    page = f"/jobs/{console.seeded.job_id}"
    assert 'id="reanalyze"' not in client.get(page).text  # the seeded job is the console's model's
    with console.sessions() as session:
        session.get(Job, console.seeded.job_id).model_version = "old-model"
        session.commit()
    shown = client.get(page).text
    assert 'id="reanalyze"' in shown and "Re-analyse with test-model" in shown
    token = csrf_of(client, page)
    done = client.post(f"{page}/reanalyze", data={"csrf_token": token})
    assert done.status_code == 303 and done.headers["location"] == page
    assert "for test-model" in client.get(page).text
    with console.sessions() as session:
        new = session.scalars(select(Job).where(Job.model_version == "test-model")).one()
        assert new.series_id == _job(console).series_id and new.state.value == "queued"
    assert _job(console).state.value == "failed"  # a finished job keeps its state and results
    assert ("alice", "reanalyze", f"job {console.seeded.job_id}", "ok") in _actions(console)
    refused = client.post(f"/jobs/{new.id}/reanalyze", data={"csrf_token": token})  # already the console's model
    assert "already for model test-model" in client.get(refused.headers["location"]).text
    assert ("alice", "reanalyze", f"job {new.id}", "refused") in _actions(console)


def test_radiologist_sees_findings_but_may_not_act(console: Running) -> None:
    client = console.login(RADIOLOGIST)
    job_page = client.get(f"/jobs/{console.seeded.job_id}")
    assert job_page.status_code == 200
    for text in ["C5-C6", "herniation", "91%", "preview.png", "PACS@127.0.0.1:1", "unreachable"]:
        assert text in job_page.text
    assert 'id="retry"' not in job_page.text and "/failures" not in job_page.text
    series = client.get(f"/series/{console.seeded.series_uid}")
    assert PATIENT_NAME in series.text and PATIENT_ID in series.text  # shown to a logged-in user
    for page in ADMIN_ONLY:
        response = client.get(page)
        assert response.status_code == 403 and "refused: rita is a radiologist" in response.text, page
    token = csrf_of(client)
    for action in [
        f"/jobs/{console.seeded.job_id}/retry",
        f"/jobs/{console.seeded.job_id}/resend",
        f"/jobs/{console.seeded.job_id}/reanalyze",
        f"/quarantine/{console.seeded.good_quarantine}/release",
        f"/quarantine/{console.seeded.bad_quarantine}/delete",
    ]:
        assert client.post(action, data={"csrf_token": token}).status_code == 403, action
    assert _job(console).state.value == "failed"
    assert len(list(console.settings.quarantine_dir.glob("*.dcm"))) == 2
    assert ("rita", "post", f"/jobs/{console.seeded.job_id}/retry", "refused") in _actions(console)
    auth = RADIOLOGIST
    with console.client(auth=auth) as api:
        assert api.get("/api/jobs").status_code == 200
        assert api.get("/api/failures").status_code == 403


def test_lockout_after_repeated_wrong_passwords(start_console) -> None:
    console = start_console(console_lockout_attempts=3, console_lockout_minutes=5)
    with console.client() as client:

        def attempt(password: str) -> int:
            token = csrf_of(client, "/login")
            return client.post(
                "/login", data={"csrf_token": token, "username": ADMIN[0], "password": password}
            ).status_code

        assert [attempt("wrong-1"), attempt("wrong-2")] == [401, 401]
        assert attempt(ADMIN[1]) == 303  # two failures: not yet locked, and a success resets
        client.cookies.delete("meddet_session")
        assert [attempt(f"wrong-{i}") for i in range(3)] == [401, 401, 401]
        assert attempt(ADMIN[1]) == 401  # locked: even the right password is refused
    with console.client(auth=ADMIN) as api:
        assert api.get("/api/jobs").status_code == 401  # and over HTTP Basic too
    assert users.list_users(console.sessions)[0]["locked_until"] is not None
    assert any(a[1] == "login" and a[3] == "refused" for a in _actions(console))
    with console.sessions() as session:
        details = list(session.scalars(select(ConsoleAction.detail).where(ConsoleAction.user_name == "alice")))
    assert any("locked out for" in (d or "") for d in details)
    users.unlock_user(console.sessions, ADMIN[0], by="tests")
    console.login(ADMIN)


def test_preview_png_has_the_boxes(console: Running) -> None:
    with console.client(auth=ADMIN) as api:
        response = api.get(f"/api/jobs/{console.seeded.job_id}/preview.png")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content)).convert("RGB")
        assert image.size == (128, 128)  # the 64x64 slice, twice as large
        r, g, b = np.moveaxis(np.asarray(image).astype(int), -1, 0)
        red = int(((r > 200) & (g < 100) & (b < 100)).sum())
        green = int(((g > 180) & (r < 120) & (b < 120)).sum())
        assert red > 50 and green > 50  # the herniation's box and the normal disc's
        assert api.get(f"/api/jobs/{console.seeded.job_id}/preview.png?finding=0").status_code == 200
        assert api.get(f"/api/jobs/{console.seeded.job_id}/preview.png?finding=9").status_code == 404
        assert api.get("/api/jobs/4242/preview.png").status_code == 404


def test_series_filters_and_search(console: Running) -> None:
    client = console.login(RADIOLOGIST)
    uid = console.seeded.series_uid

    def listed(**params: str) -> bool:
        return uid in client.get("/series", params=params).text

    assert listed()
    assert listed(q=uid[:12]) and listed(q=console.seeded.study_uid) and listed(q=ACCESSION)
    assert not listed(q="9.9.9") and not listed(q="NOPE")
    assert listed(calling_ae=CALLING_AE) and not listed(calling_ae="OTHER")
    assert listed(state="selected") and not listed(state="skipped")
    assert listed(modality="MR") and not listed(modality="CT")
    assert not listed(date="2001-01-01")
    assert client.get("/series", params={"state": "bogus"}).status_code == 400
    assert client.get("/series", params={"date": "yesterday"}).status_code == 400
    jobs = client.get("/jobs", params={"state": "failed"})
    assert f"/jobs/{console.seeded.job_id}" in jobs.text


def test_quarantine_release_and_delete(console: Running) -> None:
    client = console.login()
    page = client.get("/failures")
    assert page.status_code == 200 and "image too large" in page.text and "not a DICOM file" in page.text
    token = csrf_of(client, "/failures")
    released = client.post(f"/quarantine/{console.seeded.good_quarantine}/release", data={"csrf_token": token})
    assert released.status_code == 303
    assert "released: filed in series" in client.get("/failures").text
    with console.sessions() as session:
        series = session.scalar(
            select(Series).where(Series.series_instance_uid == console.seeded.quarantined_series_uid)
        )
        assert series is not None and series.n_instances == 1 and series.state.value == "receiving"
    client.post(f"/quarantine/{console.seeded.bad_quarantine}/release", data={"csrf_token": token})
    assert "still refused" in client.get("/failures").text
    client.post(f"/quarantine/{console.seeded.bad_quarantine}/delete", data={"csrf_token": token})
    assert list(console.settings.quarantine_dir.glob("*")) == []
    again = client.post(f"/quarantine/{console.seeded.bad_quarantine}/delete", data={"csrf_token": token})
    assert "no such quarantined file" in client.get(again.headers["location"]).text
    target = lambda n: f"quarantine {n}"  # noqa: E731
    assert ("alice", "release", target(console.seeded.good_quarantine), "ok") in _actions(console)
    assert ("alice", "release", target(console.seeded.bad_quarantine), "refused") in _actions(console)
    assert ("alice", "delete", target(console.seeded.bad_quarantine), "ok") in _actions(console)
    assert "quarantine" in client.get("/activity").text


def test_resend_through_the_console_reaches_the_pacs(start_console, tmp_path) -> None:
    from dicom_node.loopback import TestPACS

    pacs = TestPACS(tmp_path / "pacs").start()
    try:
        console = start_console(destinations=pacs.destination)
        client = console.login()
        job_page = client.get(f"/jobs/{console.seeded.job_id}")
        assert 'id="resend"' in job_page.text
        done = client.post(f"/jobs/{console.seeded.job_id}/resend", data={"csrf_token": csrf_of(client)})
        assert "results sent again: done" in client.get(done.headers["location"]).text
        assert [str(ds.SOPInstanceUID) for ds in pacs.received()] == ["1.2.826.0.1.3680043.10.15"]
    finally:
        pacs.stop()
    assert _job(console).state.value == "done"
    assert ("alice", "resend", f"job {console.seeded.job_id}", "ok") in _actions(console)


def test_settings_page_masks_secrets(start_console) -> None:
    console = start_console(broker_url="redis://:s3cret-pw@127.0.0.1:1/0")
    page = console.login().get("/settings")
    assert "MEDDET_BROKER_URL" in page.text and "s3cret-pw" not in page.text and "***" in page.text


def test_secure_cookie_under_tls(tmp_path, start_console) -> None:
    from tests.certificates import self_signed

    cert, key = self_signed(tmp_path, "console", "127.0.0.1")
    console = start_console(console_tls_cert=cert, console_tls_key=key)
    url = console.url.replace("http://", "https://")
    with httpx.Client(base_url=url, verify=False, timeout=30) as client:
        client.get("/login")
        response = client.post(
            "/login", data={"csrf_token": client.cookies["meddet_login"], "username": ADMIN[0], "password": ADMIN[1]}
        )
        assert response.status_code == 303
        set_cookie = response.headers["set-cookie"]
        assert "meddet_session=" in set_cookie and "Secure" in set_cookie and "HttpOnly" in set_cookie
        assert response.headers["strict-transport-security"].startswith("max-age=")
    with pytest.raises(httpx.HTTPError):
        httpx.get(console.url + "/healthz", timeout=5)  # no plain HTTP on that port
