"""podsolved as a process: how it listens, how it picks isolation, and how
it stops.  Each test starts its own daemon binary with its own state."""

import json
import os
import re
import socket
import stat
import subprocess
import time

import pytest

import llbgen as llb
import podsolve_testlib as lib


def _run_daemon(tmp, args, env=None, preexec_fn=None):
    log = open(tmp / "d.log", "wb")
    # close_fds would run after preexec_fn and close a socket it placed on fd 3
    return subprocess.Popen([lib.podsolved_path()] + args, stdout=log, stderr=log, env=env,
                            preexec_fn=preexec_fn, start_new_session=preexec_fn is None,
                            close_fds=preexec_fn is None)


def _wait_ping(sock_path=None, sock=None, timeout=30):
    deadline = time.monotonic() + lib.scaled(timeout)
    while time.monotonic() < deadline:
        try:
            c = lib.UnixHTTPConnection(str(sock_path), timeout=2)
            c.request("GET", "/_ping")
            r = c.getresponse()
            if r.status == 200:
                return r
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no answer on {sock_path}")


def _state_args(tmp):
    return ["--root", str(tmp / "root"), "--runroot", str(tmp / "runroot"), "--storage-driver", "overlay",
            "--state-dir", str(tmp / "state"), "--isolation", "chroot"]


def _stop(p):
    assert lib.stop_process(p, 20) == 0


def test_socket_is_created_0660_and_a_live_socket_is_refused(tmp_path):
    sock = tmp_path / "p.sock"
    p = _run_daemon(tmp_path, ["--listen", f"unix://{sock}"] + _state_args(tmp_path))
    try:
        _wait_ping(sock)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        # A second daemon on the same live socket must refuse to start.
        other = tmp_path / "other"
        other.mkdir()
        q = _run_daemon(other, ["--listen", f"unix://{sock}"] + _state_args(other))
        assert q.wait(lib.scaled(30)) != 0
        assert "in use by a running server" in (other / "d.log").read_text()
        _wait_ping(sock)  # the first one is unharmed
    finally:
        _stop(p)
    assert not sock.exists(), "the socket file is removed at exit"


def test_a_stale_socket_file_is_replaced(tmp_path):
    sock = tmp_path / "p.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()  # a socket file nobody listens on, as a crash leaves it
    p = _run_daemon(tmp_path, ["--listen", f"unix://{sock}"] + _state_args(tmp_path))
    try:
        _wait_ping(sock)
        assert "replacing stale socket" in (tmp_path / "d.log").read_text()
    finally:
        _stop(p)


def test_systemd_socket_activation_serves_the_inherited_socket(tmp_path):
    sock = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    listener.listen(16)
    fd = listener.fileno()

    def as_fd3_with_listen_env():
        os.dup2(fd, 3)
        os.environ["LISTEN_FDS"] = "1"
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.setsid()

    p = _run_daemon(tmp_path, _state_args(tmp_path), preexec_fn=as_fd3_with_listen_env)
    listener.close()
    try:
        r = _wait_ping(sock)
        assert r.getheader("Server").startswith("podsolve/")
        # the line follows the listener's start, which may answer first
        assert lib.wait_for(lambda: "listening on systemd fd 3" in (tmp_path / "d.log").read_text(), 10), \
            (tmp_path / "d.log").read_text()
    finally:
        _stop(p)


def test_tcp_without_tls_needs_insecure_tcp(tmp_path):
    p = _run_daemon(tmp_path, ["--listen", "tcp://127.0.0.1:0"] + _state_args(tmp_path))
    assert p.wait(lib.scaled(20)) == 2
    assert "--insecure-tcp" in (tmp_path / "d.log").read_text()


def test_tcp_listener_with_insecure_tcp_answers_on_loopback(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = _run_daemon(tmp_path, ["--listen", f"tcp://127.0.0.1:{port}", "--insecure-tcp"] + _state_args(tmp_path))
    try:
        deadline = time.monotonic() + lib.scaled(30)
        while True:
            try:
                import http.client
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=lib.scaled(2))
                c.request("GET", "/v1.41/_ping")
                assert c.getresponse().status == 200
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        _stop(p)


def test_isolation_probe_logs_what_it_chose_and_why(tmp_path):
    """With --isolation oci the probe runs a container; on hybrid-cgroup hosts
    crun refuses and podsolved falls back (runc or chroot) saying why."""
    sock = tmp_path / "p.sock"
    args = ["--listen", f"unix://{sock}", "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "runroot"),
            "--storage-driver", "overlay", "--state-dir", str(tmp_path / "state"), "--isolation", "oci"]
    p = _run_daemon(tmp_path, args)
    try:
        _wait_ping(sock)
        lines = [l for l in (tmp_path / "d.log").read_text().splitlines() if "isolation:" in l]
        assert len(lines) == 1, lines
        assert re.search(r"isolation: (oci with runtime \S+|chroot)", lines[0])
        if "because" in lines[0]:
            assert re.search(r"because .+: .+", lines[0])
        c = lib.UnixHTTPConnection(str(sock))
        c.request("GET", "/version")
        import json
        v = json.loads(c.getresponse().read())
        buildah = [x for x in v["Components"] if x["Name"] == "buildah"][0]
        assert buildah["Details"]["Isolation"] in lines[0]
    finally:
        _stop(p)
        subprocess.run(["buildah", "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "runroot"),
                        "rm", "--all"], capture_output=True)
        lib.unmount_below(str(tmp_path))


def test_state_left_by_a_crashed_run_is_removed_at_start(tmp_path):
    stale = tmp_path / "state" / "builds" / "deadbeef"
    (stale / "context").mkdir(parents=True)
    (stale / "context" / "f").write_text("x")
    sock = tmp_path / "p.sock"
    p = _run_daemon(tmp_path, ["--listen", f"unix://{sock}"] + _state_args(tmp_path))
    try:
        _wait_ping(sock)
        assert not stale.exists()
        assert "removed 1 build directories left by an earlier run" in (tmp_path / "d.log").read_text()
    finally:
        _stop(p)


def test_kill_9_during_a_build_then_restart_leaves_nothing_behind(spawn_daemon, uniq):
    """kill -9 podsolved while a /solve build runs a RUN: buildah is told to
    stop (it dies with its parent) and removes its working container; on
    restart the dead run's directories are removed and reported, the job
    is listed as interrupted, and images tagged before are unchanged."""
    import json
    d = spawn_daemon()
    before = d.build({"Dockerfile": f"FROM {lib.BASE_IMAGE}\nRUN echo kept > /kept\n"}, {"t": f"kept-{uniq}"})
    assert before.status == 200 and before.error is None
    kept_id = d.image_id(f"docker.io/library/kept-{uniq}:latest")

    ref = f"crash-{uniq}"
    req = {"ref": ref, "frontend": "dockerfile.v0"}
    body, ctype = lib.multipart({"request": json.dumps(req).encode()},
                                {"context": lib.tar_context(
                                    {"Dockerfile": f"FROM {lib.BASE_IMAGE}\nRUN sleep 41.5\n"})})
    status, _, it = d.stream("POST", "/solve", body, {"Content-Type": ctype})
    assert status == 200
    assert lib.wait_for(lambda: lib.running("sleep 41.5"), 30, step=0.2), "the RUN never started"
    assert d.working_containers(), "a working container exists while the RUN runs"
    # killed once runc has started the RUN (not between `runc create` and
    # `runc start`: see RELIABILITY.md, Crash safety)
    assert lib.wait_for(lambda: [c for c in lib.runc_containers_below(d.tmp) if c["status"] == "running"], 10), \
        "runc never ran the RUN's container"

    d.proc.kill()  # SIGKILL
    d.proc.wait(lib.scaled(10))
    it.close()
    lib.wait_for(lambda: not lib.running("sleep 41.5") and not d.working_containers(), 20, step=0.3)
    assert not subprocess.run(["pgrep", "-f", "sleep 41.5"], capture_output=True).stdout
    assert d.working_containers() == []
    # buildah, told to stop, deleted runc's record of the RUN's container
    assert lib.wait_for(lambda: lib.runc_containers_below(d.tmp) == [], 10), lib.runc_containers_below(d.tmp)

    d.start()
    log = d.log_path.read_text()
    assert "removed 1 build directories left by an earlier run" in log
    assert "1 job(s) were interrupted by an earlier stop" in log
    st, _, job = d.request("GET", f"/solve/{ref}")
    assert st == 200 and json.loads(job)["state"] == "interrupted", job
    assert d.image_id(f"docker.io/library/kept-{uniq}:latest") == kept_id
    assert_daemon_builds_again = d.build({"Dockerfile": f"FROM {lib.BASE_IMAGE}\nRUN true\n"}, {"t": f"again-{uniq}"})
    assert assert_daemon_builds_again.status == 200 and assert_daemon_builds_again.error is None


def _kill_9_and_restart(d):
    d.proc.kill()  # SIGKILL
    d.proc.wait(lib.scaled(10))
    # buildah dies with its parent (PR_SET_PDEATHSIG)
    lib.wait_for(lambda: not lib.running(f"buildah.*{d.tmp}"), 20, step=0.3)


def test_kill_9_outside_a_run_step_then_restart_removes_the_working_container(spawn_daemon, uniq):
    """kill -9 podsolved while buildah copies a big file: buildah, told to
    stop outside a RUN step, cannot remove its container; the next start
    does, says so in one line, and keeps images tagged before."""
    d = spawn_daemon()
    before = d.build({"Dockerfile": f"FROM {lib.BASE_IMAGE}\nRUN echo kept > /kept\n"}, {"t": f"kept-{uniq}"})
    assert before.status == 200 and before.error is None
    kept_id = d.image_id(f"docker.io/library/kept-{uniq}:latest")
    ctx = {"Dockerfile": f"FROM {lib.BASE_IMAGE}\nCOPY big /big\n", "big": os.urandom(1 << 20) * 200}
    status, _, events = d.stream("POST", lib.with_query(lib.COMPAT_BUILD, {"t": f"crash-{uniq}", "nocache": "1"}),
                                 lib.tar_context(ctx), {"Content-Type": "application/x-tar"})
    assert status == 200
    for ev in events:
        if ev.get("stream", "").startswith("STEP 2/2"):
            break
    _kill_9_and_restart(d)
    events.close()
    assert d.working_containers(), "buildah removed its container itself: the case is not reproduced"

    d.start()
    assert d.working_containers() == []
    assert lib.runc_containers_below(d.tmp) == []
    log = d.log_path.read_text()
    assert "working container(s) left by an earlier run" in log, log[-2000:]
    assert d.image_id(f"docker.io/library/kept-{uniq}:latest") == kept_id
    assert not d.image_exists(f"docker.io/library/crash-{uniq}:latest")
    again = d.build({"Dockerfile": f"FROM {lib.BASE_IMAGE}\nRUN true\n"}, {"t": f"again-{uniq}"})
    assert again.status == 200 and again.error is None


def test_kill_9_during_an_llb_exec_then_restart_removes_its_working_container(spawn_daemon, uniq):
    """An LLB exec's working container is podsolve's own (named
    podsolve-…): a killed run cannot remove it, the next start does."""
    import json
    d = spawn_daemon()
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(["sh", "-c", f"echo started-{uniq}; sleep 43.{int(uniq, 16) % 1000:03d}"], root=img)
    req = {"definition": llb.definition_json([img, run]), "ref": f"llbcrash-{uniq}"}
    status, _, it = d.stream("POST", "/solve", json.dumps(req).encode(), {"Content-Type": "application/json"})
    assert status == 200
    assert lib.wait_for(lambda: lib.running(f"sleep 43.{int(uniq, 16) % 1000:03d}"), 30, step=0.2), \
        "the exec never started"
    names = [c["containername"] for c in d.working_containers()]
    assert names and all(n.startswith("podsolve-") for n in names), names
    # killed once runc has started the exec (not between `runc create` and
    # `runc start`: see RELIABILITY.md, Crash safety)
    assert lib.wait_for(lambda: [c for c in lib.runc_containers_below(d.tmp) if c["status"] == "running"], 10), \
        "runc never ran the exec's container"
    _kill_9_and_restart(d)
    it.close()

    d.start()
    assert d.working_containers() == []
    assert lib.wait_for(lambda: lib.runc_containers_below(d.tmp) == [], 30), lib.runc_containers_below(d.tmp)
    assert "working container(s) left by an earlier run" in d.log_path.read_text()


def test_log_format_json_and_health_probes_at_debug(spawn_daemon):
    # Operators: --log-format json gives one object a line (journald, Loki,
    # jq); a health probe that succeeds is a debug line, not an info one.
    d = spawn_daemon("--log-level", "info", "--log-format", "json", "--upstream", "none")
    for _ in range(3):
        assert d.request("GET", "/_ping")[0] == 200
    assert d.request("POST", "/v1.41/containers/create", body=b"{}")[0] == 503
    # the access line comes after the error line about the same request
    assert lib.wait_for(lambda: "POST /v1.41/containers/create 503" in d.log_tail(200000), 10), d.log_tail()
    lines = [ln for ln in d.log_tail(200000).splitlines() if ln.strip()]
    objs = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all(set(o) == {"time", "level", "msg"} for o in objs), objs[:5]
    assert any(o["msg"].startswith("POST /v1.41/containers/create 503") and o["level"] == "info" for o in objs), objs
    assert not any("/_ping" in o["msg"] for o in objs), [o for o in objs if "/_ping" in o["msg"]]
    r = subprocess.run([lib.podsolved_path(), "--log-format", "xml"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and '--log-format: "xml" (use text or json)' in r.stderr, r


def test_security_insecure_needs_the_daemons_allow_flag(spawn_daemon, go_clients, tmp_path, uniq):
    """Without --allow-insecure-entitlement security.insecure, a build that
    asks for it is refused before anything runs, naming the flag: POST
    /solve with a 403 and Podman's error body, buildx (/grpc) with
    PERMISSION_DENIED.  network.host stays allowed, as dockerd allows it."""
    d = spawn_daemon()
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(["sh", "-c", f"echo {uniq}"], root=img, insecure=True)
    body = {"definition": llb.definition_json([img, run]), "entitlements": ["security.insecure"]}
    status, _, raw = d.request("POST", "/solve", json.dumps(body).encode(), {"Content-Type": "application/json"})
    err = json.loads(raw)
    assert status == 403, raw
    assert set(err) == {"cause", "message", "response"} and err["response"] == 403, err
    assert "--allow-insecure-entitlement security.insecure" in err["message"], err
    plain = llb.exec_(["sh", "-c", f"echo {uniq} > /host"], root=img, network=llb.NET_HOST)
    body = {"definition": llb.definition_json([img, plain]), "entitlements": ["network.host"]}
    status, _, raw = d.request("POST", "/solve", json.dumps(body).encode(), {"Content-Type": "application/json"})
    assert status == 200, raw
    assert '"result"' in raw.decode().strip().splitlines()[-1], raw[-2000:]

    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": f"FROM {lib.BASE_IMAGE}\nRUN echo {uniq}\n"})
    r = lib.run([go_clients.docker, "buildx", "build", "--progress=plain", "--allow", "security.insecure", "."],
                go_clients.env(d), cwd=ctx, timeout=300)
    assert r.returncode != 0, r.output
    assert "granting entitlement security.insecure is not allowed by build daemon configuration" in r.output, r.output
    assert d.working_containers() == []


def test_docker_config_without_config_json_does_not_break_builds(tmp_path, uniq):
    """A podsolved started from a shell whose DOCKER_CONFIG names a directory
    of CLI plugins (no config.json) still builds: buildah would refuse every
    pull ("checking authfile"); the daemon drops the variable and says so."""
    cfg = tmp_path / "docker-config"
    (cfg / "cli-plugins").mkdir(parents=True)
    d = lib.Daemon(lib.new_tmp_dir("podsolve-it-dockercfg-"))
    d.prepare_storage()
    # only the daemon's own environment has it (the test's buildah calls not)
    os.environ["DOCKER_CONFIG"] = str(cfg)
    try:
        d.start(timeout=30)
    finally:
        del os.environ["DOCKER_CONFIG"]
    try:
        r = d.build({"Containerfile": lib.containerfile(f"FROM {lib.BASE_IMAGE}", f"RUN echo {uniq} > /u")},
                    params={"t": f"localhost/dockercfg-{uniq}"})
        assert r.status == 200 and r.error is None, r.describe()
        assert d.image_file(f"localhost/dockercfg-{uniq}", "/u") == f"{uniq}\n".encode()
        assert "has no config.json" in d.log_tail(20000)
    finally:
        status, timeout_msg = d.stop(timeout=20)
        d.cleanup_storage()
    assert timeout_msg is None and status == 0


def _mapped_libraries(pid):
    with open(f"/proc/{pid}/maps") as f:
        return {os.path.basename(ln.split()[5]) for ln in f if len(ln.split()) > 5}


def test_libarchive_is_loaded_by_the_first_build_not_at_start(spawn_daemon, uniq):
    # An idle daemon does not map libarchive nor what only it brings in
    # (libxml2, ICU, libstdc++): common/libarchive.c opens it when the first
    # context or tar is unpacked.  The build through it still works.
    d = spawn_daemon("--upstream", "none")
    assert d.request("GET", "/_ping")[0] == 200
    idle = _mapped_libraries(d.proc.pid)
    only_libarchives = ["libarchive.so", "libxml2.so", "libicuuc.so"]
    # a sanitized build (scripts/test-sanitizers) maps libstdc++ for the
    # ASan/UBSan runtime itself
    if not any(name.startswith(("libasan.so", "libubsan.so")) for name in idle):
        only_libarchives.append("libstdc++.so")
    for lib_prefix in only_libarchives:
        assert not any(name.startswith(lib_prefix) for name in idle), (lib_prefix, sorted(idle))
    lib.assert_daemon_builds(d, tag=f"lazy-archive-{uniq}")
    assert any(name.startswith("libarchive.so") for name in _mapped_libraries(d.proc.pid))


def test_kill_9_during_a_direct_runc_exec_then_restart_kills_and_deletes_its_container(spawn_daemon, uniq):
    """With --sandbox-network host an LLB exec is one `runc run` of
    podsolved's own, its record in <state>/runc, on an overlay of
    podsolved's own (its result a snapshot, solver/llb/snapshot.h): a killed
    daemon's exec is killed, its record and bundle deleted and its
    unfinished snapshot unmounted and removed by the next start, which says
    so."""
    import json
    d = spawn_daemon("--sandbox-network", "host")
    root = str(d.state / "runc")
    marker = f"sleep 44.{int(uniq, 16) % 1000:03d}"
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(["sh", "-c", f"echo started-{uniq}; {marker}"], root=img)
    req = {"definition": llb.definition_json([img, run]), "ref": f"llbdirect-{uniq}"}
    status, _, it = d.stream("POST", "/solve", json.dumps(req).encode(), {"Content-Type": "application/json"})
    assert status == 200
    assert lib.wait_for(lambda: lib.running(marker), 30, step=0.2), "the exec never started"
    assert lib.wait_for(lambda: [c for c in lib.runc_containers_below(d.tmp, root=root) if c["status"] == "running"],
                        10), "runc never ran the exec's container in podsolved's own root"
    assert lib.runc_containers_below(d.tmp) == [], "the exec went through buildah (runc's default root)"
    snaps = d.state / "llb-snapshots"
    assert [p.name for p in snaps.iterdir() if not p.name.startswith(".")], "the exec runs on no snapshot"
    _kill_9_and_restart(d)
    it.close()

    d.start()
    assert lib.runc_containers_below(d.tmp, root=root) == []
    assert list((d.state / "runc-bundles").iterdir()) == []
    assert lib.wait_for(lambda: not lib.running(marker), 10), lib.running(marker)
    assert d.working_containers() == []
    log = d.log_path.read_text()
    assert "removed 1 LLB exec container(s) and 1 bundle(s) left by an earlier run" in log, log[-3000:]
    assert "removed 1 unfinished LLB snapshot(s) a stopped daemon left" in log, log[-3000:]
    assert [p.name for p in snaps.iterdir() if not p.name.startswith(".")] == []
    assert str(snaps) not in open("/proc/mounts").read()
