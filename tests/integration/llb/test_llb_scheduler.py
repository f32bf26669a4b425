"""The LLB executor's scheduler and the rest of its exec/source surface:
independent vertices run at the same time, a failure stops its siblings,
writable bind mounts become outputs, mounts (read-only selector binds,
tmpfs, locked cache mounts, secrets over the session) behave as BuildKit's,
network NONE is really cut off, and local sources are filtered by their
include/exclude/follow attrs whether they come as a multipart part or over
the session."""

import base64
import contextlib
import http.server
import json
import os
import socketserver
import threading
from pathlib import Path

import pytest

import podsolve_testlib as lib
from session_peer import SessionPeer

import llbgen as llb  # noqa: E402
from llb_solve import errors as _errors, final as _final, image as _image, logs as _logs, solve as _solve, vertexes as _vertexes  # noqa: E402,E501

BUSYBOX = "docker-image://" + lib.BASE_IMAGE












def test_independent_branches_run_at_the_same_time(daemon, uniq):
    img = llb.source(BUSYBOX)
    branches = [llb.exec_(["sh", "-c", f"sleep 2; echo {uniq}-{i} > /b{i}"], root=img) for i in range(3)]
    # copy from each branch: one action per branch, each reading its own input
    actions = b""
    for i in range(3):
        field, action = llb.copy(f"/b{i}", f"/out/b{i}", create_dest_path=True)
        out = 0 if i == 2 else -1
        inp = -1 if i == 0 else 3 + i - 1
        actions += llb.f_bytes(2, llb.f_int(1, inp) + llb.f_int(2, i) + llb.f_int(3, out) + llb.f_bytes(field, action))
    join = llb.Op(llb._inputs(branches) + llb.f_bytes(4, actions) + llb.PLATFORM)
    status, events = _solve(daemon, [img] + branches + [join])
    assert status == 200
    image = _image(events)
    for i in range(3):
        assert daemon.image_file(image, f"/out/b{i}") == f"{uniq}-{i}\n".encode()
    spans = [(_final(events, b)["started"], _final(events, b)["completed"]) for b in branches]
    # every branch started before any of them completed: they overlapped
    assert max(s for s, _ in spans) < min(c for _, c in spans), spans
    assert _final(events, join)["started"] >= max(c for _, c in spans)


def test_a_failing_branch_cancels_its_running_sibling(daemon, uniq):
    before = daemon.working_containers()
    img = llb.source(BUSYBOX)
    slow = llb.exec_(["sh", "-c", f"sleep 60; echo {uniq} > /slow"], root=img)
    fail = llb.exec_(["sh", "-c", f"sleep 1; echo {uniq} failing >&2; exit 7"], root=img)
    field, action = llb.copy("/slow", "/slow")
    actions = llb.f_bytes(2, llb.f_int(1, 0) + llb.f_int(2, 1) + llb.f_int(3, 0) + llb.f_bytes(field, action))
    join = llb.Op(llb._inputs([fail, slow]) + llb.f_bytes(4, actions) + llb.PLATFORM)
    status, events = _solve(daemon, [img, slow, fail, join], names={fail: "fails", slow: "slow sibling"})
    assert status == 200
    errs = _errors(events)
    assert len(errs) == 1 and errs[0]["vertex"] == fail.ref and errs[0]["exitCode"] == 7, errs
    assert "fails" in errs[0]["message"]
    sib = _final(events, slow)
    assert sib.get("error") and "cancelled" in sib["error"], sib
    assert join.ref not in _vertexes(events)  # never started
    assert daemon.working_containers() == before


def test_writable_bind_mounts_are_outputs_of_the_exec(daemon, uniq):
    img = llb.source(BUSYBOX)
    seed = llb.file([llb.mkfile("/seed", b"seed\n")])
    run = llb.exec_(["sh", "-c", f"echo {uniq} > /out/new; echo {uniq} > /cache2/x; echo root > /rootfile"],
                    root=img, inputs=[seed],
                    mounts=[llb.mount(-1, "/out", output=1), llb.mount(1, "/cache2", output=2)])
    # output 1: a scratch mount; the result is just what the exec wrote there
    status, events = _solve(daemon, [img, seed, run], index=1)
    assert status == 200
    out1 = _image(events)
    assert daemon.image_file(out1, "/new") == f"{uniq}\n".encode()
    assert not daemon.image_has_file(out1, "/rootfile") and not daemon.image_has_file(out1, "/bin/sh")
    # output 2: the seed input plus what the exec added
    status, events = _solve(daemon, [img, seed, run], index=2)
    assert status == 200
    out2 = _image(events)
    assert daemon.image_file(out2, "/seed") == b"seed\n"
    assert daemon.image_file(out2, "/x") == f"{uniq}\n".encode()
    assert _final(events, run).get("cached") is True  # same op, every output recorded
    # output 0: the root, without the mounts' files
    status, events = _solve(daemon, [img, seed, run], index=0)
    root = _image(events)
    assert daemon.image_file(root, "/rootfile") == b"root\n"
    assert not daemon.image_has_file(root, "/out/new")


def test_readonly_bind_with_selector_and_tmpfs(daemon, uniq):
    img = llb.source(BUSYBOX)
    data = llb.file([llb.mkdir("/sub/inner", parents=True), llb.mkfile("/sub/inner/f", f"{uniq}\n".encode()),
                     llb.mkfile("/top", b"top")])
    script = ("cat /mnt/inner/f > /copied; ls /mnt > /listing; "
              "if touch /mnt/x 2>/dev/null; then echo rw; else echo ro; fi > /mode; "
              "grep ' /scratch ' /proc/mounts > /scratchmount; echo t > /scratch/tmpfile")
    run = llb.exec_(["sh", "-c", script], root=img, inputs=[data],
                    mounts=[llb.mount(1, "/mnt", readonly=True, selector="/sub"),
                            llb.mount(-1, "/scratch", type=llb.TMPFS, tmpfs_size=1 << 20)])
    status, events = _solve(daemon, [img, data, run])
    assert status == 200
    image = _image(events)
    assert daemon.image_file(image, "/copied") == f"{uniq}\n".encode()
    assert daemon.image_file(image, "/listing") == b"inner\n"  # only the selected sub-directory
    assert daemon.image_file(image, "/mode") == b"ro\n"
    assert b"tmpfs" in daemon.image_file(image, "/scratchmount")
    assert not daemon.image_has_file(image, "/scratch/tmpfile")


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"reachable\n")

    def log_message(self, *a):
        pass


@contextlib.contextmanager
def _host_loopback_probe(uniq):
    """A server on the host's 127.0.0.1 and the script that asks it from an
    exec: /got gets its answer, /rc nc's exit status."""
    srv = socketserver.TCPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        port = srv.server_address[1]
        yield f"echo {uniq}; printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 127.0.0.1 {port} > /got; echo $? > /rc"
    finally:
        srv.shutdown()
        srv.server_close()


def test_network_none_cannot_reach_the_hosts_loopback_but_host_can(daemon, uniq):
    with _host_loopback_probe(uniq) as script:
        img = llb.source(BUSYBOX)
        none = llb.exec_(["sh", "-c", script], root=img, network=llb.NET_NONE)
        status, events = _solve(daemon, [img, none])
        assert status == 200
        image = _image(events)
        assert daemon.image_file(image, "/rc") != b"0\n"
        assert b"reachable" not in daemon.image_file(image, "/got")
        host = llb.exec_(["sh", "-c", script], root=img, network=llb.NET_HOST)
        status, events = _solve(daemon, [img, host], entitlements=["network.host"])
        assert status == 200
        image = _image(events)
        assert daemon.image_file(image, "/rc") == b"0\n"
        assert daemon.image_file(image, "/got").endswith(b"\r\n\r\nreachable\n")
        # without the entitlement: refused before anything runs
        status, events = _solve(daemon, [img, host])
        assert status == 400


def test_sandbox_network_is_a_bridge_of_its_own_unless_the_daemon_says_host(daemon, spawn_daemon, uniq):
    """BuildKit's default (sandbox) network mode: by default a netavark
    bridge of the exec's own, whose 127.0.0.1 is not the host's; with
    `--sandbox-network host` (buildkitd's --oci-worker-net=host) the host's
    network, no entitlement needed, no bridge set up.  A bad value stops
    the daemon from starting, naming the flag."""
    if os.environ.get("PODSOLVE_IT_SANDBOX_NETWORK", "bridge") != "bridge":
        pytest.skip("the shared daemon was started with --sandbox-network host (PODSOLVE_IT_SANDBOX_NETWORK)")
    with _host_loopback_probe(uniq) as script:
        img = llb.source(BUSYBOX)
        sandbox = llb.exec_(["sh", "-c", script], root=img)
        status, events = _solve(daemon, [img, sandbox])
        assert status == 200
        image = _image(events)
        assert b"reachable" not in daemon.image_file(image, "/got")
        hosted = spawn_daemon("--sandbox-network", "host")
        status, events = _solve(hosted, [img, sandbox])
        assert status == 200, events[-3:]
        image = _image(events)
        assert hosted.image_file(image, "/rc") == b"0\n"
        assert hosted.image_file(image, "/got").endswith(b"\r\n\r\nreachable\n")
    r = lib.subprocess.run([lib.podsolved_path(), "--sandbox-network", "cni", "--listen", "unix:///nonexistent/x"],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "--sandbox-network" in r.stderr and "cni" in r.stderr, r.stderr


def test_locked_cache_mount_serialises_concurrent_execs(daemon, uniq):
    img = llb.source(BUSYBOX)
    cid = f"locked-{uniq}"
    cache = llb.mount(-1, "/c", type=llb.CACHE, cache_id=cid, sharing=llb.LOCKED)
    a, b = (llb.exec_(["sh", "-c", f"echo start-{n} >> /c/log; sleep 1; echo end-{n} >> /c/log; echo {n} > /{n}"],
                      root=img, mounts=[cache]) for n in ("a", "b"))
    actions = b""
    for i, n in enumerate(("a", "b")):
        field, action = llb.copy(f"/{n}", f"/{n}")
        actions += llb.f_bytes(2, llb.f_int(1, -1 if i == 0 else 2) + llb.f_int(2, i) + llb.f_int(3, 0 if i else -1)
                               + llb.f_bytes(field, action))
    join = llb.Op(llb._inputs([a, b]) + llb.f_bytes(4, actions) + llb.PLATFORM)
    status, events = _solve(daemon, [img, a, b, join])
    assert status == 200
    _image(events)
    read = llb.exec_(["sh", "-c", "cp /c/log /log"], root=img, mounts=[cache])
    status, events = _solve(daemon, [img, read])
    lines = daemon.image_file(_image(events), "/log").decode().split()
    assert sorted(lines) == ["end-a", "end-b", "start-a", "start-b"]
    # each exec held the cache from start to end: never interleaved
    assert lines[0].split("-")[1] == lines[1].split("-")[1], lines
    assert lines[0].startswith("start") and lines[1].startswith("end"), lines


def test_secret_mount_comes_from_the_session_and_stays_out_of_the_image(daemon, uniq):
    secret = f"s3cret-{uniq}"
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", "stat -c '%a %u' /run/secrets/tok > /meta; wc -c < /run/secrets/tok > /len; "
                                 "ls /run/secrets > /listed"],
                    root=img, mounts=[llb.mount(-1, "/run/secrets/tok", type=llb.SECRET, secret="tok",
                                                secret_uid=1000, secret_mode=0o440)])
    with SessionPeer(daemon.sock, {}, secrets={"tok": secret}) as peer:
        status, events = _solve(daemon, [img, run], session=peer.uuid)
        assert status == 200
        image = _image(events)
        assert peer.secret_requests == ["tok"]
    assert daemon.image_file(image, "/meta") == b"440 1000\n"
    assert daemon.image_file(image, "/len").strip() == str(len(secret)).encode()
    assert daemon.image_file(image, "/listed") == b"tok\n"
    assert not daemon.image_has_file(image, "/run/secrets/tok") or \
        secret.encode() not in daemon.image_file(image, "/run/secrets/tok")
    assert secret not in json.dumps(events)
    # a required secret the session lacks: the exec's vertex fails, naming it
    with SessionPeer(daemon.sock, {}, secrets={}) as peer:
        missing = llb.exec_(["sh", "-c", f"echo {uniq}-missing"], root=img,
                            mounts=[llb.mount(-1, "/s", type=llb.SECRET, secret="nope")])
        status, events = _solve(daemon, [img, missing], session=peer.uuid)
        errs = _errors(events)
        assert errs and "nope" in errs[0]["message"] and errs[0]["vertex"] == missing.ref
    # without a session a required secret is refused before anything runs
    status, events = _solve(daemon, [img, missing])
    assert status == 400


def _local(name, include=None, exclude=None, follow=None):
    attrs = {}
    if include is not None:
        attrs["local.includepattern"] = json.dumps(include)  # BuildKit's key (pb.AttrIncludePatterns)
    if exclude is not None:
        attrs["local.excludepatterns"] = json.dumps(exclude)
    if follow is not None:
        attrs["local.followpaths"] = json.dumps(follow)
    return llb.source(f"local://{name}", attrs)


def test_multipart_local_source_honours_include_and_exclude_patterns(daemon, uniq, tmp_path):
    files = {"a.txt": uniq, "b.log": "log", "sub/c.txt": "c", "sub/d.log": "d", "other/e.txt": "e"}
    lib.make_context(tmp_path, files)
    src = _local("ctx", include=["*.txt", "sub"], exclude=["**/*.log"])
    status, events = _solve(daemon, [src], sources={"ctx": lib.tar_context(str(tmp_path))})
    assert status == 200
    image = _image(events)
    assert daemon.image_file(image, "/a.txt") == uniq.encode()
    assert daemon.image_file(image, "/sub/c.txt") == b"c"
    for gone in ("/b.log", "/sub/d.log", "/other/e.txt", "/other"):
        assert not daemon.image_has_file(image, gone), gone
    # an excluded file changing does not change the source: still cached
    (tmp_path / "b.log").write_text("changed")
    status, events = _solve(daemon, [src], sources={"ctx": lib.tar_context(str(tmp_path))})
    assert _final(events, src).get("cached") is True
    assert _image(events) == image
    # a deep tree (hashed, staged and copied by recursive walks on a worker thread)
    deep = "/".join(["d"] * 60) + "/leaf.txt"
    status, events = _solve(daemon, [llb.source("local://deep")], sources={"deep": lib.tar_context({deep: uniq})})
    assert status == 200
    assert daemon.image_file(_image(events), "/" + deep) == uniq.encode()
    # follow paths: exactly those
    only = _local("ctx", follow=["other/e.txt"])
    status, events = _solve(daemon, [only], sources={"ctx": lib.tar_context(str(tmp_path))})
    image = _image(events)
    assert daemon.image_file(image, "/other/e.txt") == b"e"
    assert not daemon.image_has_file(image, "/a.txt")
    # a malformed attr is a 400 naming the op
    bad = llb.source("local://ctx", {"local.excludepatterns": "not json"})
    status, events = _solve(daemon, [bad], sources={"ctx": lib.tar_context(str(tmp_path))})
    assert status == 400


def test_local_source_over_the_session_is_synced_filtered_and_cached(daemon, uniq):
    files = {"app/main.sh": f"echo {uniq}\n", "app/notes.md": "notes", "junk/big.bin": "x" * 1000}
    src = _local("appdir", include=["app"], exclude=["**/*.md"])
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", "sh /src/app/main.sh > /ran; ls -R /src > /listing"], root=img, inputs=[src],
                    mounts=[llb.mount(1, "/src", readonly=True)])
    with SessionPeer(daemon.sock, {"appdir": files}, mtime_ns=1_700_000_000_000_000_000) as peer:
        status, events = _solve(daemon, [img, src, run], session=peer.uuid)
        assert status == 200
        image = _image(events)
        call = [c for c in peer.calls if c.path.endswith("DiffCopy")][0]
        assert call.md.get("dir-name") == ["appdir"]
        assert call.md.get("include-patterns") == ["app"] and call.md.get("exclude-patterns") == ["**/*.md"]
    assert daemon.image_file(image, "/ran") == f"{uniq}\n".encode()
    listing = daemon.image_file(image, "/listing").decode()
    assert "main.sh" in listing and "notes.md" not in listing and "junk" not in listing
    st = [s for e in events for s in e.get("status", {}).get("statuses", []) if s.get("vertex") == src.ref]
    assert st, "transfer statuses belong to the local source's vertex"
    # a second session with the same shared key: only the changed file is requested, and the
    # unchanged source and exec are cached
    with SessionPeer(daemon.sock, {"appdir": files}, shared_key=peer.shared_key,
                     mtime_ns=1_700_000_000_000_000_000) as peer2:
        status, events = _solve(daemon, [img, src, run], session=peer2.uuid)
        assert _image(events) == image
        assert _final(events, src).get("cached") is True and _final(events, run).get("cached") is True
        call = [c for c in peer2.calls if c.path.endswith("DiffCopy")][0]
        assert call.reqs == []




def test_exec_meta_user_hostname_extra_hosts_ulimit_and_insecure(daemon, uniq):
    img = llb.source(BUSYBOX)
    script = (f"echo {uniq}; hostname > /host; grep myregistry /etc/hosts > /hosts; "
              "ulimit -n > /nofile; grep CapEff /proc/self/status > /caps")
    run = llb.exec_(["sh", "-c", script], root=img, hostname="llbhost",
                    extra_hosts=[("myregistry", "10.1.2.3")], ulimits=[("nofile", 1000, 1000)])
    status, events = _solve(daemon, [img, run])
    assert status == 200
    image = _image(events)
    assert daemon.image_file(image, "/host") == b"llbhost\n"
    assert daemon.image_file(image, "/hosts").split() == [b"10.1.2.3", b"myregistry"]
    assert daemon.image_file(image, "/nofile") == b"1000\n"
    sandbox_caps = int(daemon.image_file(image, "/caps").split()[1], 16)
    # a user by uid:gid (it cannot write to /, so it reports on stdout)
    as_user = llb.exec_(["sh", "-c", f"echo {uniq}; id -u; id -g"], root=img, user="1234:2345")
    status, events = _solve(daemon, [img, as_user])
    _image(events)
    assert _logs(events, as_user).split()[1:] == [b"1234", b"2345"]
    # INSECURE: every capability, and only with the entitlement
    priv = llb.exec_(["sh", "-c", f"echo {uniq}; grep CapEff /proc/self/status > /caps"], root=img, insecure=True)
    status, events = _solve(daemon, [img, priv])
    assert status == 400
    status, events = _solve(daemon, [img, priv], entitlements=["security.insecure"])
    assert status == 200
    caps = int(daemon.image_file(_image(events), "/caps").split()[1], 16)
    assert caps & ~sandbox_caps, (hex(caps), hex(sandbox_caps))
    assert caps & (1 << 21)  # CAP_SYS_ADMIN


def _procs_with(marker):
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def test_cancelling_a_solve_stops_every_running_branch(daemon, uniq):
    img = llb.source(BUSYBOX)
    branches = [llb.exec_(["sh", "-c", f"echo started-{uniq}-{i}; sleep 120; echo {uniq}"], root=img) for i in (0, 1)]
    field, action = llb.copy("/", "/a")
    join = llb.Op(llb._inputs(branches) + llb.f_bytes(4, llb.f_bytes(2, llb.f_int(1, 0) + llb.f_int(2, 1)
                                                                   + llb.f_int(3, 0) + llb.f_bytes(field, action)))
                  + llb.PLATFORM)
    ref = f"llb-cancel-{uniq}"
    req = {"definition": llb.definition_json([img] + branches + [join]), "ref": ref}
    status, _, it = daemon.stream("POST", "/solve", json.dumps(req).encode(), {"Content-Type": "application/json"})
    assert status == 200
    events, seen = [], set()
    try:
        for ev in it:
            events.append(ev)
            for l in ev.get("status", {}).get("logs", []):
                seen |= {i for i in (0, 1) if f"started-{uniq}-{i}".encode() in base64.b64decode(l["data"])}
            if seen == {0, 1}:
                break
        assert seen == {0, 1}, events[-5:]  # both branches were running at once
        cstatus, _, cbody = daemon.request("POST", f"/solve/{ref}/cancel")
        assert cstatus == 200 and json.loads(cbody)["state"] == "cancelled", cbody
        events.extend(it)
    finally:
        it.close()
    assert "error" in events[-1] and "cancel" in events[-1]["error"]["message"], events[-3:]
    for b in branches:
        assert _final(events, b).get("error"), _final(events, b)
    assert join.ref not in _vertexes(events)
    lib.wait_for(lambda: not daemon.working_containers() and not _procs_with(f"started-{uniq}"), 30, step=0.3)
    assert daemon.working_containers() == []
    left = _procs_with(f"started-{uniq}")
    assert left == [], [(p, open(f"/proc/{p}/cmdline", "rb").read(), open(f"/proc/{p}/stat").read()) for p in left]


def test_private_cache_mounts_give_concurrent_execs_their_own_directory(daemon, uniq):
    img = llb.source(BUSYBOX)
    cache = llb.mount(-1, "/c", type=llb.CACHE, cache_id=f"private-{uniq}", sharing=llb.PRIVATE)
    a, b = (llb.exec_(["sh", "-c", f"touch /c/{n}; sleep 2; ls /c > /seen-{n}"], root=img, mounts=[cache])
            for n in ("a", "b"))
    actions = b""
    for i, n in enumerate(("a", "b")):
        field, action = llb.copy(f"/seen-{n}", f"/seen-{n}")
        actions += llb.f_bytes(2, llb.f_int(1, -1 if i == 0 else 2) + llb.f_int(2, i) + llb.f_int(3, 0 if i else -1)
                               + llb.f_bytes(field, action))
    join = llb.Op(llb._inputs([a, b]) + llb.f_bytes(4, actions) + llb.PLATFORM)
    status, events = _solve(daemon, [img, a, b, join])
    assert status == 200
    image = _image(events)
    spans = [(_final(events, x)["started"], _final(events, x)["completed"]) for x in (a, b)]
    assert max(s for s, _ in spans) < min(c for _, c in spans), spans  # they did run together
    assert daemon.image_file(image, "/seen-a") == b"a\n"
    assert daemon.image_file(image, "/seen-b") == b"b\n"
