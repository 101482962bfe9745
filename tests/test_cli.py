"""The client commands (`osd volume ...`, `osd node ...`), against a live daemon:
one command per method of the contract, requests built from flags (sizes as
20G, enums without their prefix, labels as KEY=VALUE, update masks from the
flags given), tables, JSON and YAML, --wait on jobs, --watch on lists, exit
codes by status class, the client config file and shell completion."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from osd import cli
from osd.client import EXIT_CODES
from osd.contract import contract
from osd.ctl.commands import COMMANDS, GROUPS
from tests.conftest import RunningDaemon


def osd(d: RunningDaemon, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.MonkeyPatch.context() as mp:
        mp.setenv("OSD_CLIENT_CONFIG", "/nonexistent/osd-client.toml")
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        rc = cli.main([*argv, "--endpoint", d.target])
    return rc, out.getvalue(), err.getvalue()


def ok(d: RunningDaemon, *argv: str) -> Any:
    """Runs a command that must succeed; its JSON output."""
    rc, out, err = osd(d, *argv, "-o", "json")
    assert rc == 0, err
    return json.loads(out)


def topology(d: RunningDaemon) -> str:
    cluster = ok(d, "cluster", "create", "c1")["cluster"]["id"]
    for z in (1, 2, 3):
        node = ok(
            d,
            "node",
            "create",
            f"n{z}",
            "--cluster-id",
            cluster,
            "--zone",
            f"zone{z}",
            "--management-addresses",
            f"10.0.0.{z}",
        )["node"]["id"]
        ok(d, "drive", "create", "--node-id", node, "--device-path", "/dev/sdb")
    return str(cluster)


def test_every_method_of_the_contract_has_a_command() -> None:
    methods = {
        m.full_name
        for e in contract()
        for m in e.descriptor.methods
        if not (m.client_streaming or m.server_streaming)
    }
    assert set(COMMANDS) == methods
    pairs = list(COMMANDS.values())
    assert len(pairs) == len(set(pairs)), "two methods share a command"
    assert {group for group, _ in pairs} == set(GROUPS)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_each_command_explains_itself(group: str) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main([group, "--help"]) == 0
    for verb in sorted(v for g, v in COMMANDS.values() if g == group):
        text = io.StringIO()
        with redirect_stdout(text):
            assert cli.main([group, verb, "--help"]) == 0
        assert "--endpoint" in text.getvalue() and "--output" in text.getvalue()
        assert verb in out.getvalue()


def test_a_volume_from_flags_shown_as_a_table_json_and_yaml(sqlite_daemon: RunningDaemon) -> None:
    d = sqlite_daemon
    cluster = topology(d)
    made = ok(
        d,
        "volume",
        "create",
        "db1",
        "--size",
        "20G",
        "--durability-type",
        "replicate",
        "--durability-replicas",
        "3",
        "--provisioning",
        "thin",
        "--label",
        "app=db",
        "--label",
        "tier=gold",
    )
    volume = made["volume"]
    assert volume["size_bytes"] == str(20 << 30)
    assert volume["durability"] == {"type": "DURABILITY_TYPE_REPLICATE", "replicas": 3}
    assert volume["provisioning"] == "PROVISIONING_THIN"
    assert volume["labels"] == {"app": "db", "tier": "gold"}
    assert volume["cluster_id"] == cluster

    rc, table, err = osd(d, "volume", "list", "-o", "table")
    assert rc == 0, err
    header, row = table.splitlines()
    assert header.split()[:4] == ["ID", "NAME", "KIND", "STATE"] and "SIZE" in header
    assert row.split()[:4] == [volume["id"], "db1", "block", "up"] and " 20G " in row
    rc, shown, _ = osd(d, "volume", "inspect", volume["id"], "-o", "table")
    assert rc == 0
    lines = dict(line.split(None, 1) for line in shown.splitlines() if len(line.split()) > 1)
    assert lines["size_bytes"] == "20G" and lines["durability.replicas"] == "3"
    assert lines["usage.provisioned_bytes"] == "60G"  # three copies of 20G
    rc, text, _ = osd(d, "volume", "list", "-o", "yaml")
    assert rc == 0 and yaml.safe_load(text)["volumes"][0]["name"] == "db1"

    # An update sends the fields its flags name, and only those.
    grown = ok(d, "volume", "update", volume["id"], "--size", "30G")["volume"]
    assert grown["size_bytes"] == str(30 << 30) and grown["labels"] == volume["labels"]
    relabelled = ok(d, "volume", "update", volume["id"], "--label", "app=web")["volume"]
    assert relabelled["labels"] == {"app": "web"}
    assert relabelled["size_bytes"] == str(30 << 30)
    # The whole request as JSON, a flag on top.
    body = json.dumps({"name": "db2", "size": "1G", "labels": {"from": "json"}})
    second = ok(d, "volume", "create", "-d", body, "--cluster-id", cluster)["volume"]
    assert (second["name"], second["labels"]) == ("db2", {"from": "json"})


def test_lists_page_and_follow_every_page(sqlite_daemon: RunningDaemon) -> None:
    d = sqlite_daemon
    topology(d)
    for i in range(3):
        ok(d, "volume", "create", f"v{i}", "--size", "1G")
    page = ok(d, "volume", "list", "--page-size", "2")
    assert len(page["volumes"]) == 2 and page["next_page_token"]
    rest = ok(d, "volume", "list", "--page-size", "2", "--page-token", page["next_page_token"])
    assert [v["name"] for v in rest["volumes"]] == ["v2"]
    every = ok(d, "volume", "list", "--page-size", "2", "--all")
    assert [v["name"] for v in every["volumes"]] == ["v0", "v1", "v2"]
    assert not every.get("next_page_token")
    up = ok(d, "volume", "list", "--states", "up", "--name-regex", "^v[01]$")
    assert [v["name"] for v in up["volumes"]] == ["v0", "v1"]


def test_wait_follows_the_job_a_call_starts(sqlite_daemon: RunningDaemon) -> None:
    d = sqlite_daemon
    topology(d)
    source = ok(d, "volume", "create", "src", "--size", "1G")["volume"]["id"]
    rc, out, err = osd(d, "volume", "create", "copy", "--source-volume-id", source, "--wait")
    assert rc == 0, err
    printed = [json.loads(part) for part in _json_documents(out)]
    job = printed[-1]["job"]
    assert job["state"] == "JOB_STATE_DONE" and job["kind"] == "JOB_KIND_VOLUME_COPY"
    assert f"{job['id']} DONE 100%" in err  # progress, one line per change, off a terminal

    d.driver.fail("clone_replica", times=1000)
    try:
        rc, out, err = osd(d, "volume", "create", "copy2", "--source-volume-id", source, "--wait")
    finally:
        d.driver.clear_faults()
    assert rc == 12, err  # osd.client.EXIT_JOB_FAILED
    assert json.loads(_json_documents(out)[-1])["job"]["state"] == "JOB_STATE_FAILED"


def _json_documents(text: str) -> list[str]:
    """The JSON documents printed one after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text):
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            break
        _, end = decoder.raw_decode(text, at)
        found.append(text[at:end])
        at = end
    return found


@pytest.mark.parametrize(
    ("argv", "rc", "says"),
    [
        (["volume", "inspect", "a" * 32], EXIT_CODES[grpc.StatusCode.NOT_FOUND], "NOT_FOUND"),
        # Not an id, so a name: it needs the cluster it is in.
        (["volume", "inspect", "nope"], EXIT_CODES[grpc.StatusCode.INVALID_ARGUMENT], "cluster_id"),
        (["volume", "create", "v", "--size", "1x"], 3, "size: '1x' is not a size"),
        (["volume", "create", "v", "--provisioning", "lots"], 2, "--provisioning"),
        (["volume", "create", "v", "--label", "novalue"], 2, "is not KEY=VALUE"),
        (["volume", "create", "v", "--qos", "{bad"], 2, "--qos"),
        (["volume", "list", "--page-size", "many"], 2, "--page-size"),
        (["volume", "create", "v", "--multi-attach", "maybe"], 2, "not true or false"),
        (["volume", "frobnicate"], 2, "No such command"),
    ],
)
def test_bad_input_and_failed_calls_exit_by_class(
    sqlite_daemon: RunningDaemon, argv: list[str], rc: int, says: str
) -> None:
    topology(sqlite_daemon)
    got, out, err = osd(sqlite_daemon, *argv)
    assert (got, out) == (rc, ""), err
    assert says in err


def test_settings_come_from_the_client_config_file(
    sqlite_daemon: RunningDaemon, tmp_path: Path
) -> None:
    d = sqlite_daemon
    config = tmp_path / "client.toml"
    config.write_text(f'endpoint = "{d.target}"\noutput = "yaml"\n')
    out = io.StringIO()
    with redirect_stdout(out), pytest.MonkeyPatch.context() as mp:
        mp.setenv("OSD_CLIENT_CONFIG", str(config))
        mp.delenv("OSD_ENDPOINT", raising=False)
        mp.delenv("OSD_OUTPUT", raising=False)
        assert cli.main(["cluster", "create", "from-file"]) == 0
    assert yaml.safe_load(out.getvalue())["cluster"]["name"] == "from-file"
    config.write_text('endpont = "x"\n')
    err = io.StringIO()
    with redirect_stderr(err), pytest.MonkeyPatch.context() as mp:
        mp.setenv("OSD_CLIENT_CONFIG", str(config))
        assert cli.main(["cluster", "list"]) == 2
    assert "unknown setting 'endpont'" in err.getvalue()


def test_watch_prints_the_list_again_when_the_store_changes(
    sqlite_daemon: RunningDaemon,
) -> None:
    d = sqlite_daemon
    topology(d)
    env = {**os.environ, "OSD_CLIENT_CONFIG": "/nonexistent"}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "osd.cli", "volume", "list", "--watch", "--endpoint", d.target],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())
        assert first.get("volumes", []) == []
        ok(d, "volume", "create", "late", "--size", "1G")
        deadline = time.monotonic() + 30
        names: list[str] = []
        while "late" not in names and time.monotonic() < deadline:
            names = [v["name"] for v in json.loads(watcher.stdout.readline()).get("volumes", [])]
        assert names == ["late"]
    finally:
        watcher.kill()
        watcher.communicate()


def test_shell_completion() -> None:
    script = subprocess.run(
        [sys.executable, "-m", "osd.cli", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "_OSD_COMPLETE=bash_complete" in script
    env = {**os.environ, "_OSD_COMPLETE": "bash_complete", "COMP_WORDS": "osd volume re"}
    env["COMP_CWORD"] = "2"
    offered = subprocess.run(
        [sys.executable, "-m", "osd.cli"], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    assert offered == ["plain,rebase", "plain,repair", "plain,revert"]


def test_a_rebalance_plan_shows_its_moves_and_its_drives_as_tables(
    sqlite_daemon: RunningDaemon,
) -> None:
    from tests.factories import GIB, make_pool, make_topology, make_volume

    d = sqlite_daemon
    cluster_id, nodes, drives = make_topology(d.store)
    pool = make_pool(d.store, cluster_id, "p", node_ids=nodes)
    for _ in range(2):
        make_volume(d.store, cluster_id, [drives[0], drives[2], drives[4]], 5 * GIB, pool_id=pool)
    rc, text, err = osd(d, "service", "rebalance-plan", pool, "-o", "table")
    assert rc == 0, err
    lines = text.splitlines()
    assert lines[0].split() == ["VOLUME_ID", "SOURCE_DRIVE_ID", "TARGET_DRIVE_ID", "BYTES"]
    assert len([line for line in lines[1:4] if line.split()[-1] == "5G"]) == 3
    at = lines.index("drives")
    assert lines[at + 1].split() == ["NODE_ID", "DRIVE_ID", "USED_BYTES_BEFORE", "USED_BYTES_AFTER"]
    assert sorted(line.split()[1] for line in lines[at + 2 : at + 8]) == sorted(drives)
    assert "complete: yes" in lines and not any(line.startswith("drives:") for line in lines)


def test_objects_are_named_where_ids_go(sqlite_daemon: RunningDaemon) -> None:
    d = sqlite_daemon
    cluster = topology(d)
    # --cluster-id takes the cluster's name, and the first argument a name.
    made = ok(d, "volume", "create", "db1", "--size", "1G", "--cluster-id", "c1")["volume"]
    assert made["cluster_id"] == cluster
    shown = ok(d, "volume", "inspect", "db1", "--cluster-id", "c1")["volume"]
    assert shown["id"] == made["id"]
    assert ok(d, "cluster", "inspect", "c1")["cluster"]["id"] == cluster
    assert ok(d, "node", "inspect", "n2", "--cluster-id", "c1")["node"]["name"] == "n2"
    # An update by name changes only what its flags say.
    grown = ok(d, "volume", "update", "db1", "--cluster-id", "c1", "--size", "2G")["volume"]
    assert (grown["id"], grown["size_bytes"]) == (made["id"], str(2 << 30))
    listed = ok(d, "volume", "list", "--cluster-id", "c1")["volumes"]
    assert [v["name"] for v in listed] == ["db1"]
    # A name that is not there, and a name without its cluster.
    rc, _, err = osd(d, "volume", "inspect", "nope", "--cluster-id", "c1")
    assert rc != 0 and "volume_name" in err
    rc, _, err = osd(d, "volume", "inspect", "db1")
    assert rc != 0 and "cluster_id" in err
    rc, _, err = osd(d, "volume", "list", "--cluster-id", "c9")
    assert rc != 0 and "cluster_name" in err
    # Every id takes a name, as an argument or a flag, in the --cluster-id named.
    attached = ok(
        d,
        "volume",
        "attach",
        "db1",
        "--cluster-id",
        "c1",
        "--node-id",
        "n2",
        "--mode",
        "read-write",
    )
    assert attached["attachment"]["node_id"] == shown_node(d, "n2")
    snap = ok(d, "snapshot", "create", "s1", "--volume-id", "db1", "--cluster-id", "c1")
    assert snap["snapshot"]["volume_id"] == made["id"]
    rc, _, err = osd(d, "volume", "detach", "db1")
    assert rc == 2 and "--cluster-id" in err
    ok(d, "volume", "detach", "db1", "--cluster-id", "c1")
    assert ok(d, "volume", "delete", "db1", "--cluster-id", "c1")["deleted"] is True


def shown_node(d: RunningDaemon, name: str) -> str:
    return str(ok(d, "node", "inspect", name, "--cluster-id", "c1")["node"]["id"])
