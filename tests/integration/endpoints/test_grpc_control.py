"""moby.buildkit.v1.Control over gRPC (issue #13 item 2), the methods that
are not Solve: ListWorkers (one worker with honest labels and platforms),
Info (podsolve's version), DiskUsage and Prune (the build cache, as
/build/prune sees it), Status (a job's event log as StatusResponse
messages), ListenBuildHistory / UpdateBuildHistory (UNIMPLEMENTED: no
history is kept).  A real client: Debian's python3-grpcio, on
--buildkit-listen and on POST /grpc (grpc_testlib)."""

import ipaddress
import json
import os
import platform
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest

import grpc_testlib as g
import podsolve_testlib as lib

import llbgen as llb  # noqa: E402
from llb_solve import image as result_image, solve_ok  # noqa: E402

CONTROL = "/moby.buildkit.v1.Control/"
BUSYBOX = "docker-image://" + lib.BASE_IMAGE
LABEL = "org.mobyproject.buildkit.worker."


def control():
    return g.pb("control")


def start_listening_daemon(spawn=None):
    """A podsolved with --buildkit-listen; with `spawn` (the spawn_daemon
    fixture) it is stopped by that fixture."""
    path = os.path.join(tempfile.mkdtemp(prefix="podsolve-g3-"), "buildkitd.sock")
    args = ["--buildkit-listen", f"unix://{path}"]
    if spawn:
        d = spawn(*args)
    else:
        d = lib.start_private_daemon(args, "podsolve-it-grpc-control-")
    d.buildkit_sock = path
    return d


@pytest.fixture(scope="module")
def bk():
    d = start_listening_daemon()
    yield d
    status, timeout_msg = d.stop(timeout=20)
    d.cleanup_storage()
    assert timeout_msg is None and status == 0, f"podsolved stopped badly: {status} {timeout_msg}"


@pytest.fixture
def ch(bk):
    c = g.listen_channel(bk.buildkit_sock)
    yield c
    c.close()


def list_workers(channel, filters=()):
    c = control()
    return g.unary(channel, CONTROL + "ListWorkers", c.ListWorkersRequest(filter=list(filters)),
                   c.ListWorkersResponse).record


def disk_usage(channel, filters=()):
    c = control()
    return list(g.unary(channel, CONTROL + "DiskUsage", c.DiskUsageRequest(filter=list(filters)),
                        c.DiskUsageResponse, timeout=120).record)


def prune(channel, **kw):
    c = control()
    return list(g.unary_stream(channel, CONTROL + "Prune", c.PruneRequest(**kw), c.UsageRecord, timeout=600))


def status_stream(channel, ref, timeout=300):
    c = control()
    return g.unary_stream(channel, CONTROL + "Status", c.StatusRequest(Ref=ref), c.StatusResponse, timeout=timeout)


def daemon_version():
    import subprocess
    out = subprocess.run([lib.podsolved_path(), "--version"], capture_output=True, text=True).stdout
    return out.split()[-1]


def tree_bytes(path):
    total = 0
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            try:
                total += os.lstat(os.path.join(root, n)).st_blocks * 512
            except OSError:
                pass
    return total


# ---- ListWorkers and Info ------------------------------------------------------------

def test_list_workers_describes_the_one_worker(ch, bk):
    records = list_workers(ch)
    assert len(records) == 1
    w = records[0]
    assert len(w.ID) >= 16 and w.ID == list_workers(ch)[0].ID
    labels = dict(w.Labels)
    assert labels[LABEL + "executor"] in ("oci", "chroot")
    assert labels[LABEL + "snapshotter"] == "overlay"   # the test daemons run --storage-driver overlay
    assert labels[LABEL + "hostname"] == socket.gethostname()
    assert labels[LABEL + "network"] == "host"
    gw = labels.get(LABEL + "moby.host-gateway-ip")
    if gw is not None:
        ip = ipaddress.ip_address(gw)
        assert not ip.is_loopback
        # an address of this host: binding to it works
        with socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET) as s:
            s.bind((gw, 0))

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    plats = [(p.OS, p.Architecture, p.Variant) for p in w.platforms]
    assert plats[0] == ("linux", arch, "")
    assert len(plats) == len(set(plats))
    qemu = {"arm64": "aarch64", "arm": "arm", "riscv64": "riscv64", "ppc64le": "ppc64le", "s390x": "s390x",
            "386": "i386", "amd64": "x86_64", "mips64le": "mips64el", "mips64": "mips64", "loong64": "loongarch64"}
    for os_, a, _ in plats[1:]:
        entry = Path("/proc/sys/fs/binfmt_misc") / f"qemu-{qemu[a]}"
        assert entry.read_text().startswith("enabled"), f"{a} claimed without an enabled qemu handler"

    assert list(w.GCPolicy) == []
    assert w.BuildkitVersion.version == daemon_version()
    assert w.BuildkitVersion.package


def test_list_workers_honours_filters(ch):
    wid = list_workers(ch)[0].ID
    assert len(list_workers(ch, [f"id=={wid}"])) == 1
    assert len(list_workers(ch, ["id==nope"])) == 0
    assert len(list_workers(ch, ['labels."org.mobyproject.buildkit.worker.network"==host'])) == 1
    with pytest.raises(grpc.RpcError) as e:
        list_workers(ch, ["id~=("])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_workers_and_info_over_grpc_upgrade(daemon):
    c = control()
    with g.upgrade_channel(daemon) as up:
        assert len(list_workers(up)) == 1
        info = g.unary(up, CONTROL + "Info", c.InfoRequest(), c.InfoResponse)
        assert info.buildkitVersion.version == daemon_version()


def test_info_is_podsolves_version(ch):
    c = control()
    info = g.unary(ch, CONTROL + "Info", c.InfoRequest(), c.InfoResponse)
    assert info.buildkitVersion.version == daemon_version()
    assert info.buildkitVersion.package == list_workers(ch)[0].BuildkitVersion.package


# ---- Status -------------------------------------------------------------------------------

def test_status_of_a_solve_started_over_http_streams_its_vertexes(ch, bk, uniq):
    ref = f"g3-status-{uniq}"
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"echo status-{uniq}"], root=img)
    got, errors = [], []

    def follow():
        try:
            got.extend(status_stream(ch, ref))   # asked before the job exists: waits for it
        except grpc.RpcError as e:
            errors.append(e)

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.5)
    events = solve_ok(bk, [img, run], ref=ref)
    t.join(lib.scaled(60))
    assert not t.is_alive(), "Status did not end with the job"
    assert not errors, errors
    vertexes = [v for r in got for v in r.vertexes]
    assert run.ref in {v.digest for v in vertexes}
    last = [v for v in vertexes if v.digest == run.ref][-1]
    assert last.HasField("completed") and not last.error
    logs = b"".join(l.msg for r in got for l in r.logs if l.vertex == run.ref)
    assert f"status-{uniq}".encode() in logs
    # The same events the /solve stream carried, in the same order.
    http_digests = [v["digest"] for e in events for v in e.get("status", {}).get("vertexes", [])]
    assert [v.digest for v in vertexes] == http_digests

    # A finished job (still registered) replays and ends at once.
    again = list(status_stream(ch, ref, timeout=30))
    assert [v.digest for r in again for v in r.vertexes] == [v.digest for v in vertexes]


def test_status_of_a_failing_solve_ends_ok_with_the_failed_vertex_last(bk, uniq):
    from llb_solve import solve, errors as solve_errors
    ref = f"g3-fail-{uniq}"
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"echo fail-{uniq}; exit 3"], root=img)
    status, events = solve(bk, [img, run], ref=ref)
    assert status == 200 and solve_errors(events), events[-3:]
    # Over the /grpc upgrade this time; the job has ended: replay, then OK.
    with g.upgrade_channel(bk) as up:
        got = list(status_stream(up, ref, timeout=60))
    states = [v for r in got for v in r.vertexes if v.digest == run.ref]
    assert states and states[-1].error and states[-1].HasField("completed"), states[-1:]
    assert f"fail-{uniq}".encode() in b"".join(l.msg for r in got for l in r.logs)


def test_status_of_an_unknown_ref_is_not_found_after_the_wait(ch):
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        list(status_stream(ch, "g3-no-such-job", timeout=60))
    took = time.monotonic() - start
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "g3-no-such-job" in e.value.details()
    assert 5.5 <= took <= lib.scaled(20), took


# ---- DiskUsage and Prune ----------------------------------------------------------------

def test_disk_usage_shows_a_builds_records_and_prune_removes_them(spawn_daemon, uniq):
    d = start_listening_daemon(spawn_daemon)
    with g.listen_channel(d.buildkit_sock) as c:
        assert disk_usage(c) == []
        img = llb.source(BUSYBOX)
        run = llb.exec_(["sh", "-c", f"head -c 524288 /dev/urandom > /blob; echo {uniq} > /marker"], root=img)
        image = result_image(solve_ok(d, [img, run], exporters=[{"type": "tar"}]))
        assert d.image_exists(image)

        records = disk_usage(c)
        assert records, "a build left no cache record"
        llb_results = [r for r in records if r.RecordType == "llb.result"]
        assert llb_results and sum(r.Size for r in llb_results) >= 512 * 1024
        for r in records:
            assert r.ID and r.Description and r.HasField("CreatedAt") and r.HasField("LastUsedAt")
            assert r.Mutable == (r.RecordType in ("exec.cachemount", "source.local"))
        # filters: by type and by id prefix, containerd style (what buildx sends)
        assert {r.ID for r in disk_usage(c, ["type==llb.result"])} == {r.ID for r in llb_results}
        one = llb_results[0].ID
        assert [r.ID for r in disk_usage(c, [f"id~={one[:12]}"])] == [one]
        assert disk_usage(c, ["type==exec.cachemount,id~=^zzz"]) == []
        assert len(disk_usage(c, [""])) == len(records)

        before = tree_bytes(d.root)
        removed = prune(c, all=True)
        assert {r.ID for r in llb_results} <= {r.ID for r in removed}
        assert sum(r.Size for r in removed) >= 512 * 1024
        assert disk_usage(c) == []
        assert not d.image_exists(image)
        assert before - tree_bytes(d.root) >= 512 * 1024, "prune freed no disk space"
        assert prune(c, all=True) == []


def test_prune_waits_for_a_running_build_as_build_prune_does(spawn_daemon, uniq):
    d = start_listening_daemon(spawn_daemon)
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"sleep 3; echo {uniq} > /slow"], root=img)
    done = {}

    def build():
        done["events"] = solve_ok(d, [img, run])

    t = threading.Thread(target=build)
    t.start()
    deadline = time.monotonic() + lib.scaled(60)
    while not d.working_containers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.working_containers(), "the build never started its exec"
    with g.listen_channel(d.buildkit_sock) as c:
        removed = prune(c)
    t.join(lib.scaled(120))
    assert not t.is_alive()
    # The build succeeded, and its exec's record (written when it ended)
    # was pruned: the prune ran after the build.
    assert any(r.RecordType == "llb.result" for r in removed), removed
    assert not d.image_exists(result_image(done["events"]))


def test_prune_options_it_cannot_honour_are_invalid_argument(ch):
    for kw in ({"minFreeSpace": 1 << 30}, {"keepDuration": -1}, {"filter": ["id~=("]}):
        with pytest.raises(grpc.RpcError) as e:
            prune(ch, **kw)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kw


# ---- build history and bad input -------------------------------------------------------

def test_build_history_is_unimplemented(ch):
    c = control()
    req = c.BuildHistoryRequest(ActiveOnly=True, Ref="buildx-test-history-api-feature", EarlyExit=True)
    with pytest.raises(grpc.RpcError) as e:
        list(g.unary_stream(ch, CONTROL + "ListenBuildHistory", req, c.BuildHistoryEvent))
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as e:
        g.unary(ch, CONTROL + "UpdateBuildHistory", c.UpdateBuildHistoryRequest(Ref="x", Pinned=True),
                c.UpdateBuildHistoryResponse)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


# Field 1, length-delimited, says 5 bytes and brings 2.
MALFORMED = b"\x0a\x05ab"


@pytest.mark.parametrize("method,streaming", [
    ("ListWorkers", False), ("Info", False), ("DiskUsage", False), ("UpdateBuildHistory", False),
    ("Prune", True), ("Status", True), ("ListenBuildHistory", True),
])
def test_malformed_request_is_invalid_argument(ch, bk, method, streaming):
    with pytest.raises(grpc.RpcError) as e:
        if streaming:
            fn = ch.unary_stream(CONTROL + method, request_serializer=None, response_deserializer=None)
            list(fn(MALFORMED, timeout=lib.scaled(30)))
        else:
            g.unary_raw(ch, CONTROL + method, MALFORMED)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in e.value.details()
    assert bk.alive()
    assert len(list_workers(ch)) == 1


# ---- garbage collection: --gc-keep-storage / --gc-keep-duration -------------------------

def test_gc_keep_storage_collects_the_cache_by_itself_and_list_workers_says_so(spawn_daemon, uniq):
    """A daemon started with --gc-keep-storage 1 (a bound nothing fits
    under) and --gc-keep-duration 240h: once a build ends, the build cache
    is collected without anyone pruning — /system/df lists no entry — while
    the tagged image the build exported stays; ListWorkers reports the
    policy as one rule over every entry."""
    d = start_listening_daemon(spawn_daemon_with(spawn_daemon, "--gc-keep-storage", "1",
                                                 "--gc-keep-duration", "240h"))
    name = f"localhost/gc-{uniq}:latest"
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"echo {uniq} > /gc"], root=img)
    result_image(solve_ok(d, [img, run], exporters=[{"type": "image", "attrs": {"name": name}}]))
    assert d.image_file(name, "/gc") == f"{uniq}\n".encode()

    def cache_entries():
        status, _, body = d.request("GET", "/v1.41/system/df")
        assert status == 200, body
        return json.loads(body)["BuildCache"]
    assert lib.wait_for(lambda: cache_entries() == [], timeout=60, step=0.5), cache_entries()
    assert d.image_exists(name), "the GC removed a tagged image"
    assert "cache gc:" in d.log_tail(20000)

    ch = g.listen_channel(d.buildkit_sock)
    try:
        (w,) = list_workers(ch)
    finally:
        ch.close()
    (p,) = w.GCPolicy
    assert (p.all, p.keepDuration, p.maxUsedSpace) == (True, 240 * 3600 * 10**9, 1), p


def spawn_daemon_with(spawn_daemon, *flags):
    """start_listening_daemon's `spawn`, with more flags."""
    return lambda *args: spawn_daemon(*flags, *args)


@pytest.mark.parametrize("flag,value,message", [
    ("--gc-keep-storage", "lots", "is not a size"),
    ("--gc-keep-storage", "10XB", "unknown unit"),
    ("--gc-keep-duration", "soon", "--gc-keep-duration"),
])
def test_gc_flags_with_bad_values_stop_the_start_naming_the_flag(flag, value, message):
    r = subprocess.run([lib.podsolved_path(), flag, value, "--listen", "unix:///nonexistent/x.sock"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and message in r.stderr and flag in r.stderr, r.stderr
