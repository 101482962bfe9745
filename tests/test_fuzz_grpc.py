"""Hostile requests built from the message descriptors (tests/fuzz_grpc.py),
through the real wire, on SQLite and PostgreSQL: no call answers INTERNAL or
UNKNOWN, none takes over two seconds, the daemon logs no error, and its
memory stays bounded.

By default a fixed number of calls with a fixed seed. With OSD_FUZZ_SECONDS
(scripts/fuzz) the fuzzer runs that long instead, with the seed of
OSD_FUZZ_SEED or a new one; it prints a line starting with "fuzz: ", and, on
a failure, the seed and the requests that failed.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from tests import fuzz_grpc
from tests.conftest import RunningDaemon

# Each fuzzed RPC is called this often: about 1,700 calls, 20 to 30 seconds
# per store on two cores.
CALLS_PER_RPC = 30
SEED = 1729
FUZZ_SECONDS = float(os.environ.get("OSD_FUZZ_SECONDS") or 0)


def test_the_fuzzer_calls_every_create_update_and_list_and_nothing_destructive() -> None:
    every = {r.name for r in fuzz_grpc.all_rpcs()}
    fuzzed = {r.name for r in fuzz_grpc.fuzzed_rpcs()}
    assert {n for n in every if n.startswith(("Create", "Update", "List"))} <= fuzzed
    assert set(fuzz_grpc.CONFINED) <= fuzzed
    destructive = ("Delete", "Eject", "Forget", "Drain", "Revert", "StartDrive")
    assert not {n for n in fuzzed if n.startswith(destructive)}
    # Every service of osd.v1 is there.
    assert {r.service for r in fuzz_grpc.fuzzed_rpcs()} == {r.service for r in fuzz_grpc.all_rpcs()}


def test_hostile_requests_never_fail_the_daemon(daemon: RunningDaemon) -> None:
    rpcs = fuzz_grpc.fuzzed_rpcs()
    if FUZZ_SECONDS:
        seed = int(os.environ.get("OSD_FUZZ_SEED") or random.randrange(2**31))
        report = fuzz_grpc.run(daemon.channel, daemon.store, seconds=FUZZ_SECONDS, seed=seed)
    else:
        report = fuzz_grpc.run(
            daemon.channel, daemon.store, calls=CALLS_PER_RPC * len(rpcs), seed=SEED
        )
    summary = report.summary()
    # Shown with -s (scripts/fuzz reads the "fuzz: " line), or on a failure.
    print(f"{summary}\nfuzz: gRPC on {daemon.database.backend}: {report.line()}")
    assert report.failures == [], summary
    assert report.setup_notes == [], summary
    assert report.slowest_seconds <= fuzz_grpc.SLOW_SECONDS, summary
    assert report.rss_growth <= fuzz_grpc.RSS_GROWTH_MAX, summary
    # Every RPC was called as often (in rounds: give or take one), and the
    # calls were not only refused: the fuzzer reaches past validation, and
    # some creates, updates and lists work.
    counts = {m: sum(c.values()) for m, c in report.per_method.items()}
    assert counts.keys() == {r.name for r in rpcs}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert min(counts.values()) >= (1 if FUZZ_SECONDS else CALLS_PER_RPC)
    assert report.statuses[grpc.StatusCode.INVALID_ARGUMENT.name] > report.calls // 4, summary
    assert report.ok > report.calls // 10, summary
    accepted = {m for m, c in report.per_method.items() if c["OK"]}
    for prefix in ("Create", "Update", "List"):
        assert len({m for m in accepted if m.startswith(prefix)}) >= 4, summary


# -- the fuzzer sees what it must ------------------------------------------------------


class _Misbehaving(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A stand-in server whose every failure the fuzzer must report: an
    INTERNAL answer, a slow one, and an error logged behind a good one."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        name = details.method.rsplit("/", 1)[-1]

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            if name == "CreateCluster":
                context.abort(grpc.StatusCode.INTERNAL, "boom")
            if name == "ListClusters":
                time.sleep(0.3)
            if name == "InspectCluster":
                logging.getLogger("osd.engine.stand_in").error("a controller failed")
            return b""

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=None, response_serializer=None
        )


@pytest.fixture
def misbehaving() -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((_Misbehaving(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        channel.close()
        server.stop(grace=None)


def test_the_fuzzer_reports_internal_slow_logged_and_memory_failures(
    misbehaving: grpc.Channel,
) -> None:
    names = ("CreateCluster", "ListClusters", "InspectCluster", "GetClusterStatus")
    rpcs = [r for r in fuzz_grpc.fuzzed_rpcs() if r.name in names]
    mib = itertools.count(100 * 2**20, 2**20)

    def rss() -> int:
        return next(mib)  # one more MiB at each reading

    fuzzer = fuzz_grpc.Fuzzer(
        misbehaving, None, seed=3, rpcs=rpcs, rss=rss, rss_growth_max=10 * 2**20, slow_seconds=0.2
    )
    report = fuzzer.run(calls=8 * len(rpcs))
    failed: dict[str, set[str]] = {}
    for f in report.failures:
        failed.setdefault(f.kind, set()).add(f.method)
    assert failed.keys() == {"status", "slow", "log", "memory"}, report.summary()
    assert failed["status"] == {"CreateCluster"}
    assert failed["slow"] == {"ListClusters"}
    assert all("a controller failed" in f.detail for f in report.failures if f.kind == "log")
    assert len([f for f in report.failures if f.kind == "memory"]) == 1
    # The setup's first create failed: said, not raised.
    assert report.setup_notes and report.setup_notes[0].startswith("cluster: INTERNAL")
    # Each report carries a short account of the request.
    assert all(len(f.request) < 600 for f in report.failures)
