"""SetDriveState over REST: POST /v1/drives/{drive_id}:setState."""

from __future__ import annotations

from tests.factories import make_topology
from tests.gateway.conftest import RestDaemon


def test_a_drive_goes_offline_fails_and_is_readmitted_over_rest(rest_daemon: RestDaemon) -> None:
    _, _, drives = make_topology(rest_daemon.store, zones=3)
    http = rest_daemon.http
    url = f"/v1/drives/{drives[0]}:setState"

    off = http.post(url, json={"state": "DRIVE_STATE_OFFLINE"})
    assert off.status_code == 200, off.text
    assert off.json()["drive"]["state"] == "DRIVE_STATE_OFFLINE"
    shown = http.get(f"/v1/drives/{drives[0]}").json()
    assert shown["drive"]["state"] == "DRIVE_STATE_OFFLINE"

    refused = http.post(url, json={"state": "DRIVE_STATE_FAILED"})
    assert refused.status_code == 409, refused.text
    assert "CONFIRMATION_REQUIRED" in refused.text
    assert http.get(f"/v1/drives/{drives[0]}").json()["drive"]["state"] == "DRIVE_STATE_OFFLINE"

    failed = http.post(url, json={"state": "DRIVE_STATE_FAILED", "yes_i_really_mean_it": True})
    assert failed.status_code == 200, failed.text
    assert failed.json()["drive"]["state"] == "DRIVE_STATE_FAILED"

    back = http.post(url, json={"state": "DRIVE_STATE_ONLINE"})
    assert back.status_code == 200, back.text
    assert back.json()["drive"]["state"] == "DRIVE_STATE_ONLINE"
    assert int(back.json()["generation"]) > int(failed.json()["generation"])

    wrong = http.post(url, json={"state": "DRIVE_STATE_EJECTED"})
    assert wrong.status_code == 400, wrong.text
    assert "state" in wrong.text
