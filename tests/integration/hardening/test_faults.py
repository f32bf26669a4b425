"""Fault injection (issue #18): something podsolved depends on breaks in the
middle of a request.  For each fault the test checks four things:

* the one client concerned gets a clear error (an error line in its stream,
  or an HTTP error with Podman's body before any streaming), never a hang;
* another client, busy at the same moment, is unaffected;
* nothing is left half-written (no working container, no mount, no
  temporary, no tag pointing at half an image);
* the daemon stays up and serves the next request once the fault is gone.

The faults are real: the Podman API service and the registry are killed
with SIGKILL, buildah is killed from outside podsolved, the state directory
sits on a tmpfs that is filled, and the BuildKit session peer goes silent.
RELIABILITY.md "Fault injection" has the table.
"""

import http.client as http_client
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, containerfile, wait_for


# --------------------------------------------------------------------------
# helpers


def solve_body(request, files):
    return lib.multipart({"request": json.dumps(request).encode()}, files)


def dockerfile_solve(d, ref, *lines, exporters=None, timeout=300):
    """Start POST /solve with the dockerfile frontend and a context holding
    only a Dockerfile -> (status, JSONStream)."""
    req = {"ref": ref, "frontend": "dockerfile.v0"}
    if exporters is not None:
        req["exporters"] = exporters
    body, ctype = solve_body(req, {"context": lib.tar_context({"Dockerfile": containerfile(*lines)})})
    status, _, it = d.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=timeout)
    return status, it


def read_all(it):
    try:
        return list(it)
    finally:
        it.close()


def stream_error(lines):
    """The message of the error a /solve stream ended with, or None."""
    errs = [l["error"] for l in lines if isinstance(l, dict) and l.get("error")]
    if not errs:
        return None
    return errs[-1].get("message") if isinstance(errs[-1], dict) else errs[-1]


def describe(lines, d):
    out = "\n".join(json.dumps(l)[:400] for l in lines[-20:])
    return out + f"\n--- podsolved log tail:\n{d.log_tail(4000)}"


class Background:
    """Run fn() in a thread; .result() joins and returns its value (or
    raises what it raised)."""

    def __init__(self, fn):
        self._value = self._exc = None
        self._t = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._t.start()

    def _run(self, fn):
        try:
            self._value = fn()
        except BaseException as e:   # re-raised in result()
            self._exc = e

    def result(self, timeout=120):
        self._t.join(lib.scaled(timeout))
        assert not self._t.is_alive(), "the background request did not finish"
        if self._exc is not None:
            raise self._exc
        return self._value


def concurrent_build(d, tag, seconds):
    """A /build in the background whose RUN lasts `seconds`: it spans the
    fault.  .result() -> BuildResult."""
    ctx = {"Containerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN sleep {seconds} && echo {tag} > /other")}
    return Background(lambda: d.build(ctx, {"t": tag, "dockerfile": "Containerfile"}, timeout=120))


def assert_concurrent_build_ok(d, bg, tag):
    r = bg.result()
    assert r.status == 200 and r.error is None, r.describe() + "\n" + d.log_tail(3000)
    assert d.image_file(lib.image_ref(tag), "/other") == f"{tag}\n".encode()


def ppid_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    return int(st[st.rindex(")") + 2:].split()[1])


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def mounts_below(path):
    path = os.path.realpath(str(path))
    with open("/proc/self/mountinfo") as f:
        return [l.split()[4] for l in f if l.split()[4].startswith(path + "/")]


# --------------------------------------------------------------------------
# a. the Podman API service dies mid-proxy and comes back


def test_upstream_killed_mid_events_stream_then_restarted(own_stack, uniq):
    """Podman's API service is SIGKILLed while a client follows
    GET /events through podsolved and another client builds: the events
    client sees its stream cut (not a clean end) at once; Podman's routes
    get a fast 502 naming the socket while it is down; the build is not
    disturbed.  Once the service is started again on the same socket,
    proxied requests work again without restarting podsolved, and Podman
    lists the image the build made meanwhile.
    (endpoints/test_proxy.py::test_upstream_killed_mid_logs_follow covers
    the kill with the docker CLI; this adds the concurrent build and the
    restart.)"""
    s = own_stack()
    d = s.daemon
    conn = d.connection(timeout=30)
    conn.request("GET", "/v1.41/events")
    events = conn.getresponse()
    assert events.status == 200
    # something flows through the stream before the fault: a tag event
    st, _, body = d.request("POST", f"/v1.41/images/{BASE_IMAGE}/tag?repo=localhost/evt-{uniq}&tag=1")
    assert st == 201, body
    first = events.read1(65536)
    assert b'"tag"' in first, first

    other_tag = f"proxybuild-{uniq}"
    other = concurrent_build(d, other_tag, 5)
    assert wait_for(lambda: [p for p in d.descendants() if p[1].endswith("sleep 5")], 30), d.descendants()

    s.podman.kill()   # SIGKILL
    killed = time.monotonic()
    with pytest.raises((http_client.IncompleteRead, ConnectionError, OSError)):
        while True:
            if not events.read1(65536):
                raise AssertionError("the events stream ended cleanly: the client cannot tell it broke off")
    assert time.monotonic() - killed < lib.scaled(5)
    conn.close()

    t0 = time.monotonic()
    st, _, body = d.request("GET", "/v1.41/containers/json")
    assert st == 502 and str(s.podman.sock) in json.loads(body)["message"], body
    assert time.monotonic() - t0 < lib.scaled(5)
    assert d.request("GET", "/_ping")[0] == 200

    assert_concurrent_build_ok(d, other, other_tag)

    s.podman.start()
    st, _, body = d.request("GET", "/v1.41/images/json")
    assert st == 200, body
    names = [t for img in json.loads(body) for t in (img.get("RepoTags") or [])]
    assert f"docker.io/library/{other_tag}:latest" in names or f"{other_tag}:latest" in names, names
    conn = d.connection(timeout=30)
    conn.request("GET", "/v1.41/events")
    events = conn.getresponse()
    try:
        assert events.status == 200
        st, _, body = d.request("POST", f"/v1.41/images/{BASE_IMAGE}/tag?repo=localhost/evt-{uniq}&tag=2")
        assert st == 201, body
        assert b'"tag"' in events.read1(65536)
    finally:
        conn.close()
    assert d.alive()


# --------------------------------------------------------------------------
# b. buildah killed mid-step from outside podsolved


def buildah_build_running(d, marker):
    """pid of the `buildah build` (a child of podsolved) whose RUN step runs
    the process naming `marker`, or None."""
    kids = dict(d.descendants())
    for pid, cmd in kids.items():
        if marker not in cmd:
            continue
        p = pid
        while p in kids and p != d.proc.pid:
            argv = cmdline(p)
            if argv and argv[0].endswith(b"buildah") and b"build" in argv[1:]:
                return p
            try:
                p = ppid_of(p)
            except OSError:
                break
    return None


def test_buildah_killed_mid_run_fails_that_build_only_and_leaves_nothing(spawn_daemon, uniq):
    """Someone (the OOM killer, an operator) SIGKILLs the `buildah build` of
    one /solve while its RUN sleeps: that client's stream ends with an
    error naming the signal, at once; the working container is swept, and
    runc's record of the RUN's container is deleted; a build running
    alongside succeeds; the tag the build would have replaced still names
    the previous image."""
    d = spawn_daemon()
    tag = f"docker.io/library/victim-{uniq}:latest"
    before = d.build({"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo old > /v")}, {"t": tag})
    assert before.status == 200 and before.error is None, before.describe()
    old_id = d.image_id(tag)

    marker = f"sleep 47.{int(uniq, 16) % 1000:03d}"
    other_tag = f"bystander-{uniq}"
    other = concurrent_build(d, other_tag, 6)
    status, it = dockerfile_solve(d, f"victim-{uniq}", f"FROM {BASE_IMAGE}", f"RUN echo new > /v && {marker}",
                                  exporters=[{"type": "image", "attrs": {"name": tag}}])
    assert status == 200
    pid = wait_for(lambda: buildah_build_running(d, marker), 30, step=0.2)
    assert pid, f"the RUN never started: {d.descendants()}"
    assert d.working_containers(), "no working container while the RUN runs: the case is not reproduced"
    # runc's record of the RUN's container: the one whose init runs the marker
    victim = wait_for(lambda: [c for c in lib.runc_containers_below(d.tmp)
                               if c["status"] == "running" and marker.encode() in b" ".join(cmdline(c["pid"]))], 10)
    assert len(victim) == 1, lib.runc_containers_below(d.tmp)
    victim_id, victim_bundle = victim[0]["id"], victim[0]["bundle"]

    time.sleep(1)   # the RUN has been running a moment (PS_CHILD_BELOW_REFRESH_MS)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    lines = read_all(it)
    took = time.monotonic() - killed
    err = stream_error(lines)
    assert err, describe(lines, d)
    assert re.search(r"killed by signal 9 \(SIGKILL\)", err), describe(lines, d)
    assert took < lib.scaled(10), f"{took:.1f}s to report the killed buildah"
    # gone before the error is sent: runc's record (it stayed `stopped` in
    # /run/runc before) and the bundle buildah would have removed
    assert victim_id not in [c["id"] for c in lib.runc_containers_below(d.tmp)], lib.runc_containers_below(d.tmp)
    assert not os.path.exists(victim_bundle)

    # the bystander finishes; then the dead build's container is swept
    assert_concurrent_build_ok(d, other, other_tag)
    assert wait_for(lambda: d.working_containers() == [], 20), d.working_containers()
    assert wait_for(lambda: not lib.running(marker), 20), lib.running(marker)
    assert [m for m in mounts_below(d.tmp) if "/overlay/" in m and m.endswith("/merged")] == []
    assert lib.runc_containers_below(d.tmp) == []
    assert d.image_id(tag) == old_id, "the killed build moved the tag"
    assert d.alive()
    lib.assert_daemon_builds(d, tag=f"after-buildah-kill-{uniq}")


# --------------------------------------------------------------------------
# c. the state directory's disk is full


def fill(directory):
    """Write a file in `directory` until its filesystem is full -> its path."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == 28, e   # ENOSPC
    return filler


def tree(directory):
    """{relative path: size} of everything below `directory` (dirs: -1)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        for n in dirnames:
            out[os.path.relpath(os.path.join(dirpath, n), directory)] = -1
        for n in filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, directory)] = os.lstat(p).st_size
    return out


@pytest.fixture
def daemon_on_small_state_dir():
    """A podsolved whose --state-dir is an 8 MiB tmpfs (mounted over the
    Daemon's state directory before it starts; unmounted after)."""
    d = lib.Daemon(lib.new_tmp_dir("podsolve-it-full-"))
    d.prepare_storage()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "podsolve-faults", str(d.state)], check=True)
    try:
        d.start(timeout=30)
        yield d
    finally:
        status, msg = d.stop(timeout=20)
        subprocess.run(["umount", str(d.state)], capture_output=True)
        d.cleanup_storage()
    assert msg is None and status == 0, f"podsolved stopped badly: {status} {msg}\n{d.log_tail()}"


def test_state_dir_full_fails_the_build_with_a_clear_error_and_leaves_nothing(daemon_on_small_state_dir, uniq):
    """The filesystem of --state-dir fills up (another program, logs): a
    /solve whose context must be stored there is refused with 507 and
    Podman's error body naming the disk, before any streaming; nothing of
    it stays in the state directory; the daemon answers meanwhile; once
    space is freed, the same build works."""
    d = daemon_on_small_state_dir
    filler = fill(d.state)
    before = tree(d.state)
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY big /big"), "big": os.urandom(1 << 20)}
    req = {"ref": f"full-{uniq}", "frontend": "dockerfile.v0",
           "exporters": [{"type": "image", "attrs": {"name": f"localhost/full-{uniq}"}}]}
    body, ctype = solve_body(req, {"context": lib.tar_context(ctx)})
    status, _, raw = d.request("POST", "/solve", body, {"Content-Type": ctype}, timeout=60)
    assert status == 507, (status, raw[:2000], d.log_tail(3000))
    err = json.loads(raw)
    assert err["response"] == 507 and re.search(r"No space left on device", err["message"]), err
    assert wait_for(lambda: tree(d.state) == before, 5), \
        f"the refused build left files in the state directory: {set(tree(d.state)) - set(before)}"
    assert d.alive()
    assert d.request("GET", "/_ping")[0] == 200
    assert not d.image_exists(f"localhost/full-{uniq}")

    # a classic /build spools its context there too
    r = d.build(ctx, {"t": f"full-classic-{uniq}"})
    assert r.status == 507 and "No space left on device" in r.body.decode(), r.describe()
    assert wait_for(lambda: tree(d.state) == before, 5), set(tree(d.state)) - set(before)

    filler.unlink()
    status, _, it = d.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=120)
    lines = read_all(it)
    assert status == 200 and "result" in lines[-1], describe(lines, d)
    assert d.image_file(f"localhost/full-{uniq}", "/big") == ctx["big"]


# --------------------------------------------------------------------------
# d. the registry goes away mid-push


@pytest.fixture
def registry():
    """A docker-registry of this test's own (it is killed and restarted)."""
    with lib.running_registry() as r:
        yield r


def uploading(registry, repo, at_least):
    """Whether an upload into `repo` has stored at least `at_least` bytes."""
    uploads = registry.tmp / "data" / "docker" / "registry" / "v2" / "repositories" / repo / "_uploads"
    try:
        return any((u / "data").stat().st_size >= at_least for u in uploads.iterdir())
    except OSError:
        return False


def push_exporter(name):
    return [{"type": "image", "attrs": {"name": name, "push": "true"}}]


def test_registry_killed_mid_push_fails_that_build_and_tags_nothing(spawn_daemon, registry, uniq):
    """The registry dies (SIGKILL) while a /solve pushes a 64 MiB layer to
    a tag that already names an image: the client's stream ends with an
    error naming the push; a build running alongside is unaffected; once
    the registry is back, the tag still names the old manifest; the image
    podsolve built is in local storage under that name (as BuildKit's
    exporter keeps it: a retry need not build again); and the next push
    works."""
    d = spawn_daemon()
    repo, tag = f"faults/app-{uniq}", "v1"
    name = f"{registry.host}/{repo}:{tag}"
    st, it = dockerfile_solve(d, f"old-{uniq}", f"FROM {BASE_IMAGE}", "RUN echo old > /v",
                              exporters=push_exporter(name))
    lines = read_all(it)
    assert st == 200 and "result" in lines[-1], describe(lines, d)
    st, h, _ = registry.manifest(repo, tag)
    assert st == 200
    old_digest = h["Docker-Content-Digest"]

    big = os.urandom(64 << 20)   # random: gzip cannot make it small
    req = {"ref": f"push-{uniq}", "frontend": "dockerfile.v0", "exporters": push_exporter(name)}
    body, ctype = solve_body(req, {"context": lib.tar_context(
        {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY big /big"), "big": big})})
    other_tag = f"pushbystander-{uniq}"
    other = concurrent_build(d, other_tag, 4)
    st, _, it = d.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=300)
    assert st == 200
    assert wait_for(lambda: uploading(registry, repo, 4 << 20), 60, step=0.05), \
        f"the big layer's upload never started\n{lib.tail(registry.log_path, 2000)}\n{d.log_tail(3000)}"
    registry.kill()
    killed = time.monotonic()
    lines = read_all(it)
    took = time.monotonic() - killed
    err = stream_error(lines)
    assert err and re.search(r"push|127\.0\.0\.1", err) and re.search(r"refused|reset|EOF|broken pipe|closed", err, re.I), \
        describe(lines, d)
    assert took < lib.scaled(45), f"{took:.0f}s to report the dead registry"
    assert_concurrent_build_ok(d, other, other_tag)

    registry.start()
    st, h, _ = registry.manifest(repo, tag)
    assert st == 200 and h["Docker-Content-Digest"] == old_digest, "the tag moved to a half-pushed image"
    assert d.image_file(name, "/big") == big
    assert wait_for(lambda: d.working_containers() == [], 10), d.working_containers()
    assert d.alive()

    # the daemon and the registry serve the next push
    name2 = f"{registry.host}/{repo}:v2"
    st, it = dockerfile_solve(d, f"next-{uniq}", f"FROM {BASE_IMAGE}", f"RUN echo {uniq} > /v",
                              exporters=push_exporter(name2))
    lines = read_all(it)
    assert st == 200 and "result" in lines[-1], describe(lines, d)
    assert registry.manifest(repo, "v2")[0] == 200


# --------------------------------------------------------------------------
# e. the session peer freezes mid-DiffCopy


def test_session_peer_frozen_mid_transfer_fails_its_build_after_the_transfer_timeout(spawn_daemon, uniq):
    """A BuildKit-mode client sends half a file of its context, then
    nothing (frozen, suspended) while keeping both /session and /build
    open.  With --session-transfer-timeout 3 its build ends with an error
    line naming the silence after about 3 s, not 120; the half-written
    file's temporary is gone; a build alongside finishes; and the same
    directory builds again through a well-behaved peer.
    (test_session_abuse.py covers the client that drops /build or sends
    /build/cancel while its peer is silent.)"""
    from session_peer import SessionPeer
    from test_session_abuse import V2_HEADERS, abuse_context, assert_clean, both, error_message, explain, \
        peer_cache_dirs, retry_build, temporaries, v2_params
    d = spawn_daemon("--session-transfer-timeout", "3")
    tag = f"frozen-{uniq}"
    other_tag = f"frozenbystander-{uniq}"
    peer = SessionPeer(d.sock, both(abuse_context(uniq)), mode="stall_mid_file")
    peer.start()
    try:
        other = concurrent_build(d, other_tag, 5)
        status, _, it = d.stream("POST", lib.with_query(lib.COMPAT_BUILD, v2_params(peer, tag)), b"", V2_HEADERS,
                                 timeout=60)
        assert status == 200, explain(d, peer)
        assert wait_for(lambda: peer.target_call() is not None and peer.target_call().misbehaved, 10), \
            explain(d, peer)
        frozen = time.monotonic()
        ctx_cache = peer_cache_dirs(d, peer)["context"][0]
        assert wait_for(lambda: any(t.startswith(str(ctx_cache) + "/") for t in temporaries(d)), 5), \
            "no half-written temporary: the transfer is not really mid-file\n" + explain(d, peer)
        events = read_all(it)
        took = time.monotonic() - frozen
        r = lib.BuildResult(200, {}, events, it.raw)
        msg = error_message(r)
        assert msg and re.search(r"no packet from the client for 3 s", msg), explain(d, peer, r)
        assert lib.scaled(2) < took < lib.scaled(12), f"{took:.1f}s from the freeze to the error\n" + explain(d, peer, r)
        assert not d.image_exists(lib.image_ref(tag))
        t = peer.target_call()
        assert wait_for(lambda: t.err_from_daemon is not None or t.reset_by_daemon is not None, 5), explain(d, peer, r)
        assert_concurrent_build_ok(d, other, other_tag)
    finally:
        peer.close()
    assert_clean(d, peer)
    retry_build(d, peer, "frozen", uniq)
