"""One socket for everything: podsolved answers the build API itself and
passes every other request, unchanged, to a real Podman API service.

The stack under test is the one a user runs: `podman system service` (with
runc and low default ulimits, which this machine needs: docs anchors.md §1)
on a private socket, and podsolved in front of it with `--upstream`, both on
the SAME containers-storage, so images podsolve builds are Podman's images.
Clients are the real ones: the Docker 20.10 CLI, podman-remote,
docker-compose 1.29.  Wire-level properties (bytes unchanged, streaming,
half-close) are checked against a scripted fake upstream where a real
Podman cannot be made to misbehave on cue.
"""

import hashlib
import json
import os
import re
import signal
import socket
import socketserver
import subprocess
import threading
import time
from pathlib import Path

import pytest

import podsolve_testlib as lib
from podman_stack import start_stack, stop_stack
from podsolve_testlib import BASE_IMAGE, containerfile

@pytest.fixture(scope="module")
def stack():
    """Podman service + podsolved --upstream, shared by the client tests."""
    try:
        s = start_stack()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield s
    problem = stop_stack(s)
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.fixture(autouse=True)
def stack_daemon_still_alive(request):
    yield
    if "stack" in request.fixturenames:
        d = request.getfixturevalue("stack").daemon
        assert d.alive(), f"podsolved died during this test; log tail:\n{d.log_tail()}"


def docker_env(daemon, docker_cli):
    env = daemon.env()
    env["DOCKER_BUILDKIT"] = "0"
    env["PATH"] = str(Path(docker_cli).parent) + os.pathsep + env.get("PATH", "")
    return env


run = lib.run
explain = lib.explain


def access_log(daemon):
    """(method, path, status, where) of every access-log line so far."""
    pat = re.compile(r" info  (\S+) (\S+) (\d+) \d+ bytes in, [-\d]+ bytes out, \d+ ms, (upstream|local)")
    return [m.groups() for m in pat.finditer(daemon.log_path.read_text(errors="replace"))]


def logged(daemon, match, timeout=5):
    """Wait for an access-log line (written once the request is over, which
    can be just after the client has its answer).  `match` is a tuple to
    find, or a predicate on (method, path, status, where)."""
    pred = match if callable(match) else (lambda *entry: entry == match)
    deadline = time.monotonic() + lib.scaled(timeout)
    while True:
        log = access_log(daemon)
        if any(pred(*e) for e in log):
            return True
        if time.monotonic() > deadline:
            raise AssertionError(f"no access-log line matching {match}; last lines: {log[-8:]}")
        time.sleep(0.05)


TICKER = "trap 'exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"


# ---------------------------------------------------------------------------
# Real clients through podsolved


def test_docker_run_rm_echo_prints_hi(stack, docker_cli):
    """`docker run --rm busybox echo hi` through podsolved: create, attach
    (101 upgrade relayed), start, wait all reach Podman; the output is hi."""
    d = stack.daemon
    r = run([docker_cli, "run", "--rm", BASE_IMAGE, "echo", "hi"], docker_env(d, docker_cli), timeout=120)
    assert r.returncode == 0, explain(r, d)
    assert r.stdout == "hi\n"
    logged(d, lambda m, p, s, w: m == "POST" and p.endswith("/attach") and s == "101" and w == "upstream")
    logged(d, lambda m, p, s, w: m == "POST" and p == "/v1.41/containers/create" and s == "201" and w == "upstream")


def test_docker_images_lists_an_image_podsolve_just_built(stack, docker_cli, tmp_path, uniq):
    """podsolve builds (/build answered locally) into the storage Podman
    serves, so `docker images` (answered by Podman) lists the new image
    with the ID buildah recorded."""
    d = stack.daemon
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"RUN echo built-{uniq} > /built.txt")})
    name = f"pxbuilt-{uniq}"
    env = docker_env(d, docker_cli)
    r = run([docker_cli, "build", "-t", name, "."], env, cwd=ctx)
    assert r.returncode == 0, explain(r, d)
    logged(d, lambda m, p, s, w: m == "POST" and p == "/v1.41/build" and w == "local")

    r = run([docker_cli, "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"], env)
    assert r.returncode == 0, explain(r, d)
    listed = dict(line.split() for line in r.stdout.splitlines())
    assert listed.get(f"{name}:latest") == "sha256:" + d.image_id(f"docker.io/library/{name}:latest"), r.stdout

    r = run([docker_cli, "run", "--rm", name, "cat", "/built.txt"], env)
    assert r.returncode == 0 and r.stdout == f"built-{uniq}\n", explain(r, d)


def test_detached_container_logs_follow_exec_and_stop(stack, docker_cli, uniq):
    """docker run -d; `docker logs -f` streams lines as the container prints
    them (not when the stream ends); docker exec (plain and with stdin);
    docker stop ends the container and with it the logs stream."""
    d = stack.daemon
    env = docker_env(d, docker_cli)
    name = f"pxticker-{uniq}"
    r = run([docker_cli, "run", "-d", "--name", name, BASE_IMAGE, "sh", "-c", TICKER], env)
    assert r.returncode == 0, explain(r, d)

    logs = subprocess.Popen([docker_cli, "logs", "-f", name], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = logs.stdout.readline()
        second = logs.stdout.readline()
        assert (first, second) == ("tick 0\n", "tick 1\n"), (first, second)
        assert logs.poll() is None, "logs -f ended while the container still runs"

        r = run([docker_cli, "exec", name, "sh", "-c", "echo from-exec; cat /proc/1/cmdline | tr '\\0' ' '"], env)
        assert r.returncode == 0, explain(r, d)
        assert r.stdout.startswith("from-exec\nsh -c"), r.stdout

        r = run([docker_cli, "exec", "-i", name, "sh", "-c", "tr a-z A-Z"], env, input="piped into exec\n")
        assert r.returncode == 0 and r.stdout == "PIPED INTO EXEC\n", explain(r, d)

        r = run([docker_cli, "stop", "-t", "5", name], env)
        assert r.returncode == 0, explain(r, d)
        assert logs.wait(lib.scaled(30)) == 0, logs.stderr.read()
        rest = logs.stdout.read()
        assert "tick 2\n" in rest
    finally:
        if logs.poll() is None:
            logs.kill()
            logs.wait()
    r = run([docker_cli, "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", name], env)
    assert r.stdout.strip() == "false 0", explain(r, d)
    run([docker_cli, "rm", name], env)


def test_stdin_eof_reaches_the_container(stack, docker_cli):
    """`echo data | docker run -i --rm busybox cat`: the CLI half-closes its
    side at stdin EOF, podsolved passes the half-close on, cat sees EOF and
    exits, and its output still comes back."""
    d = stack.daemon
    r = run([docker_cli, "run", "-i", "--rm", BASE_IMAGE, "cat"], docker_env(d, docker_cli), input="data\n",
            timeout=60)
    assert r.returncode == 0, explain(r, d)
    assert r.stdout == "data\n"


def _vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))


def test_save_load_round_trip_of_a_50MB_image(stack, docker_cli, tmp_path, uniq):
    """`docker save` (a 50 MB download) and `docker load` (a 50 MB chunked
    upload) both stream through podsolved: the image comes back with the
    same ID and the same bytes, and podsolved's peak memory does not grow
    by anything like the image size."""
    d = stack.daemon
    env = docker_env(d, docker_cli)
    blob = os.urandom(50 * 1000 * 1000)
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}",
                                                                          "COPY big.bin /big.bin"),
                                              "big.bin": blob})
    name = f"pxbig-{uniq}"
    r = run([docker_cli, "build", "-q", "-t", name, "."], env, cwd=ctx)
    assert r.returncode == 0, explain(r, d)
    image_id = d.image_id(f"docker.io/library/{name}:latest")

    with open(f"/proc/{d.proc.pid}/clear_refs", "w") as f:
        f.write("5")   # reset VmHWM: measure the save/load alone
    base_kib = _vm_hwm_kib(d.proc.pid)

    archive = tmp_path / "img.tar"
    with open(archive, "wb") as out:
        save = subprocess.run([docker_cli, "save", name], env=env, stdout=out, stderr=subprocess.PIPE, timeout=lib.scaled(180))
    assert save.returncode == 0, save.stderr
    assert archive.stat().st_size > 50 * 1000 * 1000

    r = run([docker_cli, "rmi", name], env)
    assert r.returncode == 0, explain(r, d)
    assert not d.image_exists(f"docker.io/library/{name}:latest")

    with open(archive, "rb") as inp:   # stdin, not -i: the CLI sends a chunked body
        load = subprocess.run([docker_cli, "load"], env=env, stdin=inp, capture_output=True, text=True,
                              timeout=lib.scaled(180))
    assert load.returncode == 0, load.stdout + load.stderr
    assert f"Loaded image: docker.io/library/{name}:latest" in load.stdout
    assert d.image_id(f"docker.io/library/{name}:latest") == image_id
    assert hashlib.sha256(d.image_file(f"docker.io/library/{name}:latest", "/big.bin")).digest() == \
        hashlib.sha256(blob).digest()

    grown_mib = (_vm_hwm_kib(d.proc.pid) - base_kib) / 1024
    assert grown_mib < 20, f"podsolved's peak RSS grew {grown_mib:.0f} MiB moving a 50 MB image"
    logged(d, ("GET", "/v1.41/images/get", "200", "upstream"))
    logged(d, ("POST", "/v1.41/images/load", "200", "upstream"))


def test_podman_remote_ps_lists_a_container(stack, docker_cli, uniq):
    """podman-remote pings /v4.3.1/libpod/_ping (merged locally) and lists
    containers through podsolved (libpod routes passed through)."""
    d = stack.daemon
    name = f"pxremote-{uniq}"
    r = run([docker_cli, "create", "--name", name, BASE_IMAGE, "true"], docker_env(d, docker_cli))
    assert r.returncode == 0, explain(r, d)
    try:
        r = run(["podman", "--remote", "--url", f"unix://{d.sock}", "ps", "--all", "--format", "{{.Names}}"],
                d.env())
        assert r.returncode == 0, explain(r, d)
        assert name in r.stdout.split(), r.stdout
    finally:
        run([docker_cli, "rm", name], docker_env(d, docker_cli))


COMPOSE_FILE = """\
version: "3"
services:
  web:
    build: ./web
    image: pxweb-{uniq}:latest
  worker:
    build: ./worker
    image: pxworker-{uniq}:latest
    depends_on: [web]
"""


def _role_dockerfile(role):
    return containerfile(f"FROM {BASE_IMAGE}", f"RUN echo {role} > /role",
                         'CMD ["sh", "-c", "trap \'exit 0\' TERM; cat /role; while true; do sleep 1; done"]')


def test_docker_compose_up_builds_with_podsolve_and_runs_on_podman(stack, docker_cli, tmp_path, uniq):
    """docker-compose 1.29 `up -d` of two services: podsolve builds both
    images (/build answered locally), Podman creates the network and runs
    both containers (passed through); `down` removes them again."""
    d = stack.daemon
    proj = lib.make_context(tmp_path / "proj", {
        "docker-compose.yml": COMPOSE_FILE.format(uniq=uniq),
        "web/Dockerfile": _role_dockerfile("web"),
        "worker/Dockerfile": _role_dockerfile("worker"),
    })
    env = docker_env(d, docker_cli)
    env["COMPOSE_DOCKER_CLI_BUILD"] = "0"
    project = f"px{uniq}"
    r = run(["docker-compose", "-p", project, "up", "-d"], env, cwd=proj, timeout=300)
    assert r.returncode == 0, explain(r, d)
    try:
        builds = [p for m, p, s, w in access_log(d) if m == "POST" and p == "/v1.41/build" and w == "local"]
        assert len(builds) >= 2
        for role in ("web", "worker"):
            assert d.image_file(f"docker.io/library/px{role}-{uniq}:latest", "/role") == f"{role}\n".encode()

        r = run([docker_cli, "ps", "--filter", f"label=com.docker.compose.project={project}",
                 "--format", "{{.Names}} {{.State}}"], env)
        assert r.returncode == 0, explain(r, d)
        assert sorted(r.stdout.split("\n")[:-1]) == [f"{project}_web_1 running", f"{project}_worker_1 running"], \
            r.stdout
        deadline = time.monotonic() + lib.scaled(20)
        while time.monotonic() < deadline:
            r = run(["docker-compose", "-p", project, "logs", "--no-color"], env, cwd=proj)
            if re.search(r"web_1\s+\| web\n", r.stdout) and re.search(r"worker_1\s+\| worker\n", r.stdout):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"both services should print their role:\n{r.output}")
    finally:
        down = run(["docker-compose", "-p", project, "down"], env, cwd=proj, timeout=180)
    assert down.returncode == 0, explain(down, d)
    r = run([docker_cli, "ps", "-a", "--filter", f"label=com.docker.compose.project={project}", "-q"], env)
    assert r.stdout.strip() == ""
    r = run([docker_cli, "network", "ls", "--format", "{{.Name}}"], env)
    assert f"{project}_default" not in r.stdout.split()


def test_ping_version_and_info_merge_podman_with_the_build_side(stack):
    """/_ping keeps podsolve's Builder-Version and gains Podman's headers;
    /version is Podman's with podsolve and buildah components added; /info
    is Podman's with a Podsolve object; /libpod/info is Podman's own."""
    d = stack.daemon
    status, h, body = d.request("GET", "/_ping")
    assert (status, body) == (200, b"OK")
    assert h["Builder-Version"] == "2"
    assert h.get("X-Reference-Id"), "Podman's own ping headers are passed on"
    assert h["Server"].startswith("podsolve/")

    status, _, body = d.request("GET", "/v1.41/version")
    v = json.loads(body)
    names = [c["Name"] for c in v["Components"]]
    assert "Podman Engine" in names and "podsolve" in names and "buildah" in names, names
    assert v["ApiVersion"] == "1.41"

    status, _, body = d.request("GET", "/v1.41/info")
    info = json.loads(body)
    assert status == 200
    assert "ContainersRunning" in info and info["Podsolve"]["BuilderVersion"] == "2"
    assert info["Podsolve"]["Upstream"] == str(stack.podman.sock)

    status, _, body = d.request("GET", "/v4.3.1/libpod/info")
    assert status == 200 and "host" in json.loads(body)
    logged(d, ("GET", "/v4.3.1/libpod/info", "200", "upstream"))
    logged(d, ("GET", "/v1.41/info", "200", "local"))


def test_upstream_killed_mid_logs_follow(own_stack, docker_cli, uniq):
    """The Podman service dies while `docker logs -f` streams: the client
    sees an error (the stream is cut, not ended cleanly), podsolved stays
    up, answers pings, gives a fast 502 for Podman's routes, and builds."""
    s = own_stack()
    d = s.daemon
    env = docker_env(d, docker_cli)
    r = run([docker_cli, "run", "-d", "--name", f"pxdie-{uniq}", BASE_IMAGE, "sh", "-c", TICKER], env)
    assert r.returncode == 0, explain(r, d)
    logs = subprocess.Popen([docker_cli, "logs", "-f", f"pxdie-{uniq}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert logs.stdout.readline() == "tick 0\n"
        s.podman.kill()
        rc = logs.wait(lib.scaled(15))
        err = logs.stderr.read()
    finally:
        if logs.poll() is None:
            logs.kill()
            logs.wait()
    assert rc != 0, "docker logs -f must report the broken stream"
    assert "unexpected EOF" in err or "error" in err.lower(), err
    assert d.alive(), d.log_tail()
    assert "the answer broke off" in d.log_tail(20000)

    t0 = time.monotonic()
    r = run([docker_cli, "ps"], env, timeout=30)
    assert time.monotonic() - t0 < lib.scaled(5)
    assert r.returncode != 0
    assert f"Podman API service at unix://{s.podman.sock}" in r.stderr, r.stderr

    status, h, body = d.request("GET", "/v1.41/containers/json")
    assert status == 502
    err = json.loads(body)
    assert err["response"] == 502 and str(s.podman.sock) in err["message"], err

    status, _, body = d.request("GET", "/_ping")
    assert (status, body) == (200, b"OK")
    res = d.build({"Containerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo still-builds > /x")},
                  {"t": f"pxafter-{uniq}", "dockerfile": "Containerfile"})
    assert res.status == 200 and res.error is None, res.describe()
    assert d.image_file(f"docker.io/library/pxafter-{uniq}:latest", "/x") == b"still-builds\n"


def test_spawn_upstream_runs_restarts_and_stops_podman(own_stack, docker_cli):
    """--spawn-upstream: podsolved runs `podman system service` itself,
    starts it again when it dies, and stops it on SIGTERM."""
    s = own_stack(spawn=True)
    d = s.daemon

    def service_pids():
        return [pid for pid, cmd in d.descendants() if "system service" in cmd]

    pids = service_pids()
    assert len(pids) == 1, d.descendants()
    env = docker_env(d, docker_cli)
    r = run([docker_cli, "run", "--rm", BASE_IMAGE, "echo", "spawned"], env)
    assert r.returncode == 0 and r.stdout == "spawned\n", explain(r, d)

    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + lib.scaled(20)
    while time.monotonic() < deadline:
        now = service_pids()
        if now and now != pids:
            st, _, _ = d.request("GET", "/v1.41/images/json")
            if st == 200:
                break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the Podman service was not restarted; log tail:\n{d.log_tail()}")
    assert "restarting it" in d.log_tail(20000)

    child = service_pids()[0]
    status, msg = d.stop(timeout=30)
    assert status == 0, msg
    deadline = time.monotonic() + lib.scaled(5)
    while time.monotonic() < deadline and os.path.exists(f"/proc/{child}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{child}") or "Z" in open(f"/proc/{child}/stat").read().split()[2], \
        "the spawned Podman service outlived podsolved"


# ---------------------------------------------------------------------------
# Wire-level properties, against a scripted upstream


class FakeUpstream:
    """A unix-socket HTTP/1.1 server whose per-connection behaviour is a
    Python function(conn, head: bytes, rest: bytes).  Records each request
    head it receives.  Pings (podsolved merges its own /_ping with the
    upstream's) are answered like Podman does and not recorded."""

    def __init__(self, path, behaviour):
        self.path = str(path)
        self.behaviour = behaviour
        self.heads = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                if b"/_ping " in head.split(b"\r\n")[0]:
                    self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Reference-Id: fake\r\n\r\nOK")
                    return
                outer.heads.append(head)
                outer.behaviour(self.request, head, rest)

        self.server = socketserver.ThreadingUnixStreamServer(self.path, Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_upstream(tmp_path):
    made = []

    def make(behaviour):
        f = FakeUpstream(tmp_path / f"fake{len(made)}.sock", behaviour)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def read_chunked_body(sock, rest):
    """De-chunk a request body arriving on sock (rest: bytes already read)."""
    buf, body = rest, b""
    while True:
        while b"\r\n" not in buf:
            buf += sock.recv(65536)
        line, _, buf = buf.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        while len(buf) < size + 2:
            buf += sock.recv(65536)
        body += buf[:size]
        buf = buf[size + 2:]
        if size == 0:
            return body


def header_map(head):
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs.setdefault(k.strip().lower(), []).append(v.strip())
    return lines[0], hdrs


def raw_exchange(sock_path, request, shutdown_after=False, timeout=20):
    """Send raw bytes, read until EOF; returns everything received."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(sock_path))
    s.sendall(request)
    if shutdown_after:
        s.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def test_request_and_answer_pass_through_unchanged(spawn_daemon, fake_upstream):
    """Method, request-target (version prefix, percent-encoding, dot
    segments, repeated parameters), end-to-end headers and a chunked body
    reach the upstream as sent; hop-by-hop headers do not.  The upstream's
    status, reason-independent headers and body come back as it sent them."""
    seen = {}

    def behaviour(conn, head, rest):
        seen["body"] = read_chunked_body(conn, rest)
        conn.sendall(b"HTTP/1.1 418 I'm a teapot\r\nContent-Type: application/x-custom\r\n"
                     b"X-Upstream: yes\r\nX-Dup: 1\r\nX-Dup: 2\r\nConnection: close, X-Hop\r\nX-Hop: drop\r\n"
                     b"Content-Length: 11\r\n\r\nshort stout")
        conn.close()

    up = fake_upstream(behaviour)
    d = spawn_daemon("--upstream", f"unix://{up.path}")
    target = "/v1.41/containers/a%2Fb/../json?filters=%7B%22label%22%3A%5B%22x%3Dy%22%5D%7D&all=1&all=0"
    body = b"chunked upload " * 1000
    req = (f"PUT {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: Docker-Client/20.10\r\n"
           f"X-Registry-Auth: e30=\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n"
           f"Keep-Alive: timeout=5\r\nConnection: close, X-Secret-Hop\r\nX-Secret-Hop: no\r\n\r\n").encode()
    req += f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    out = raw_exchange(d.sock, req, timeout=20)

    first, hdrs = header_map(up.heads[0])
    assert first == f"PUT {target} HTTP/1.1"
    assert hdrs["host"] == ["docker"] and hdrs["user-agent"] == ["Docker-Client/20.10"]
    assert hdrs["x-registry-auth"] == ["e30="] and hdrs["content-type"] == ["application/x-tar"]
    for hop in ("keep-alive", "x-secret-hop", "connection", "expect"):
        assert hop not in hdrs, (hop, hdrs)
    assert seen["body"] == body

    head, _, got = out.partition(b"\r\n\r\n")
    status_line, rh = header_map(head)
    assert status_line.startswith("HTTP/1.1 418 ")
    assert rh["content-type"] == ["application/x-custom"] and rh["x-upstream"] == ["yes"]
    assert rh["x-dup"] == ["1", "2"]
    assert "x-hop" not in rh
    assert rh["content-length"] == ["11"] and got == b"short stout"
    logged(d, lambda m, p, s, w: m == "PUT" and s == "418" and w == "upstream")


def test_long_answers_and_uploads_stream_without_waiting_for_the_end(spawn_daemon, fake_upstream):
    """A response part reaches the client while the upstream is still
    holding back the rest (docker logs -f, events, pull progress); an upload
    part reaches the upstream while the client still holds the rest
    (docker load, cp)."""
    release = threading.Event()
    got_first_part = threading.Event()
    uploaded = []

    def behaviour(conn, head, rest):
        if head.startswith(b"GET"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"c\r\n{\"event\":1}\n\r\n")
            release.wait(lib.scaled(20))
            conn.sendall(b"c\r\n{\"event\":2}\n\r\n0\r\n\r\n")
        else:
            buf = rest
            while b"first-part" not in buf:
                buf += conn.recv(65536)
            got_first_part.set()
            uploaded.append(read_chunked_body(conn, buf))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.close()

    up = fake_upstream(behaviour)
    d = spawn_daemon("--upstream", f"unix://{up.path}")

    # 5 s read timeout: a proxy that held the answer back until it ended
    # (the upstream holds it 20 s) fails here.
    status, _, it = d.stream("GET", "/v1.41/events", timeout=5)
    assert status == 200
    assert next(it) == {"event": 1}, "the first event must arrive before the upstream sends the second"
    release.set()
    assert next(it) == {"event": 2}
    it.close()

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(str(d.sock))
    s.sendall(b"POST /v1.41/images/load HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"a\r\nfirst-part\r\n")
    assert got_first_part.wait(lib.scaled(10)), "the first upload chunk must reach the upstream before the body ends"
    s.sendall(b"b\r\nsecond-part\r\n0\r\n\r\n")
    answer = b""
    while not answer.endswith(b"ok"):
        chunk = s.recv(65536)
        if not chunk:
            break
        answer += chunk
    s.close()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok"), answer
    assert uploaded == [b"first-partsecond-part"]


def test_upgrade_relays_both_ways_and_passes_half_close(spawn_daemon, fake_upstream):
    """POST /containers/{id}/attach with Upgrade: tcp: after the upstream's
    101, bytes flow both ways; the client's half-close reaches the upstream
    as EOF, and output sent after it still reaches the client."""
    def behaviour(conn, head, rest):
        conn.sendall(b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                     b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\nhello ")
        data = rest
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        conn.sendall(data.upper() + b" after-eof")
        conn.close()

    up = fake_upstream(behaviour)
    d = spawn_daemon("--upstream", f"unix://{up.path}")
    out = raw_exchange(d.sock, b"POST /v1.41/containers/abc/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\n"
                               b"Host: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
                               b"stdin data", shutdown_after=True)
    head, _, stream = out.partition(b"\r\n\r\n")
    status_line, rh = header_map(head)
    assert status_line.startswith("HTTP/1.1 101"), out
    assert rh["upgrade"] == ["tcp"] and rh["content-type"] == ["application/vnd.docker.raw-stream"]
    assert stream == b"hello STDIN DATA after-eof"
    first, hdrs = header_map(up.heads[0])
    assert first == "POST /v1.41/containers/abc/attach?stream=1&stdin=1&stdout=1 HTTP/1.1"
    assert hdrs["upgrade"] == ["tcp"] and hdrs["connection"] == ["Upgrade"]


def test_refused_upgrade_comes_back_as_an_ordinary_answer(spawn_daemon, fake_upstream):
    """The upstream answers an upgrade request with an error instead of 101
    (no such container): status, headers and the whole body (here chunked
    across several chunks, with a trailer) reach the client, and the
    connection stays usable."""
    parts = [b'{"cause":', b'"no such container","message"', b':"nope","response":404}']

    def behaviour(conn, head, rest):
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for i, part in enumerate(parts):
            conn.sendall(b"%x%s\r\n%s\r\n" % (len(part), b";ext=1" if i == 1 else b"", part))
            time.sleep(0.05)
        conn.sendall(b"0\r\nX-Trailer: t\r\n\r\n")
        time.sleep(1)   # keep-alive: the answer must end at the last chunk, not at close
        conn.close()

    up = fake_upstream(behaviour)
    d = spawn_daemon("--upstream", f"unix://{up.path}")
    conn = d.connection(timeout=20)
    try:
        conn.request("POST", "/v1.41/containers/nope/attach?stream=1", headers={"Connection": "Upgrade",
                                                                                  "Upgrade": "tcp"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 404 and resp.getheader("Content-Type") == "application/json"
        assert json.loads(body) == {"cause": "no such container", "message": "nope", "response": 404}
        conn.request("GET", "/_ping")
        assert conn.getresponse().read() == b"OK"
    finally:
        conn.close()


def test_exec_start_without_upgrade_streams_the_raw_output(spawn_daemon, fake_upstream):
    """A hijack without Upgrade (Podman answers "200 OK", then raw bytes
    with no framing until it closes): the client gets the same head and
    the same raw bytes, not re-framed as chunks, and then the close.
    (Client bytes sent after the request are not forwarded on this path:
    MHD hands over a connection only with a 101; every client we know
    sends Upgrade: tcp.)"""
    def behaviour(conn, head, rest):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"
                     b"\x01\x00\x00\x00\x00\x00\x00\x03raw")
        conn.close()

    up = fake_upstream(behaviour)
    d = spawn_daemon("--upstream", f"unix://{up.path}")
    body = b'{"Detach":false,"Tty":false}'
    out = raw_exchange(d.sock, b"POST /v1.41/exec/abc/start HTTP/1.1\r\nHost: d\r\n"
                               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    head, _, stream = out.partition(b"\r\n\r\n")
    status_line, rh = header_map(head)
    assert status_line.startswith("HTTP/1.1 200")
    assert rh["content-type"] == ["application/vnd.docker.raw-stream"]
    assert "transfer-encoding" not in rh and "content-length" not in rh
    assert stream == b"\x01\x00\x00\x00\x00\x00\x00\x03raw"


def test_dead_upstream_is_a_fast_502_naming_the_socket_and_builds_still_work(spawn_daemon, tmp_path, uniq):
    """Nothing listens on the upstream socket: Podman's routes answer 502
    at once with Podman's error body naming the socket; an upload to a dead
    upstream is refused before the body is sent; ping, version and builds
    answer for the build side."""
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(dead))   # exists, nobody listens: ECONNREFUSED
    s.close()
    d = spawn_daemon("--upstream", f"unix://{dead}")

    t0 = time.monotonic()
    status, _, body = d.request("GET", "/v1.41/containers/json")
    assert time.monotonic() - t0 < lib.scaled(3)
    assert status == 502
    err = json.loads(body)
    assert set(err) >= {"cause", "message", "response"} and err["response"] == 502
    assert f"unix://{dead}" in err["message"] and "podman system service" in err["message"], err

    status, _, body = d.request("POST", "/v1.41/images/load", body=b"x" * (8 * 1024 * 1024),
                                headers={"Content-Type": "application/x-tar"})
    assert status == 502

    status, h, body = d.request("GET", "/_ping")
    assert (status, body, h["Builder-Version"]) == (200, b"OK", "2")
    status, _, body = d.request("GET", "/v1.41/version")
    assert status == 200 and "podsolve" in [c["Name"] for c in json.loads(body)["Components"]]
    r = d.build({"Containerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo ok > /ok")},
                {"t": f"pxdead-{uniq}", "dockerfile": "Containerfile"})
    assert r.status == 200 and r.error is None, r.describe()
    logged(d, ("GET", "/v1.41/containers/json", "502", "upstream"))


def test_hung_upstream_does_not_hold_up_other_connections(spawn_daemon, fake_upstream, uniq):
    """An upstream that accepts and never answers stalls only the requests
    that went to it: pings (with their bounded merge call) and builds on
    other connections go on."""
    stuck = threading.Event()
    arrived = []

    def behaviour(conn, head, rest):
        arrived.append(head)
        stuck.wait(lib.scaled(60))
        conn.close()

    up = fake_upstream(behaviour)
    d = spawn_daemon("--upstream", f"unix://{up.path}")
    hung = []

    def hang():
        try:
            hung.append(d.request("GET", "/v1.41/containers/json", timeout=60))
        except Exception as e:   # noqa: BLE001 - any end is fine once released
            hung.append(e)

    threads = [threading.Thread(target=hang) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        assert lib.wait_for(lambda: len(arrived) >= 3, 10), f"{len(arrived)} of 3 requests reached the upstream"
        t0 = time.monotonic()
        status, _, body = d.request("GET", "/_ping", timeout=10)
        assert (status, body) == (200, b"OK")
        assert time.monotonic() - t0 < lib.scaled(3)
        r = d.build({"Containerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo ok > /ok")},
                    {"t": f"pxhung-{uniq}", "dockerfile": "Containerfile"})
        assert r.status == 200 and r.error is None, r.describe()
        assert not hung, "the stalled requests should still be waiting"
    finally:
        stuck.set()
        for t in threads:
            t.join(lib.scaled(30))


def test_access_log_names_upstream_or_local(spawn_daemon, fake_upstream):
    """One line per request: method, path, status, bytes in and out,
    duration, and whether Podman or podsolve answered."""
    def behaviour(conn, head, rest):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        conn.close()

    up = fake_upstream(behaviour)
    d = spawn_daemon("--upstream", f"unix://{up.path}")
    d.request("GET", "/v1.41/images/json")
    d.request("GET", "/v1.41/solve")
    logged(d, ("GET", "/v1.41/solve", "200", "local"))
    logged(d, ("GET", "/v1.41/images/json", "200", "upstream"))
    text = d.log_path.read_text()
    assert re.search(r"GET /v1\.41/images/json 200 0 bytes in, 5 bytes out, \d+ ms, upstream\n", text), text[-2000:]
    assert re.search(r"GET /v1\.41/solve 200 0 bytes in, \d+ bytes out, \d+ ms, local\n", text), text[-2000:]


@pytest.mark.skipif(os.path.exists("/run/podman/podman.sock"), reason="a Podman service runs at the default socket")
def test_default_upstream_not_running_means_build_only_with_a_hint(spawn_daemon):
    """Without --upstream podsolved looks for Podman at its default socket;
    when nothing is there, a request that would change something is a 503
    (never 404: the docker CLI takes a 404 on containers/create for a
    missing image and tries to pull it), and a lookup a 404; both say where
    Podman was expected and how to point podsolved at it."""
    if os.path.exists("/run/podman/podman.sock"):
        pytest.skip("a Podman service runs at the default socket on this machine")
    daemon = spawn_daemon("--upstream", "default")
    status, _, body = daemon.request("GET", "/v1.41/containers/json")
    assert status == 404
    err = json.loads(body)
    assert err["response"] == 404
    assert "unix:///run/podman/podman.sock" in err["message"] and "--upstream" in err["message"], err
    assert "podman system service" in err["message"], err
    # docker run's first call: a 503 with the hint, not "no such image"
    status, _, body = daemon.request("POST", "/v1.41/containers/create", body=b'{"Image":"hello"}',
                                     headers={"Content-Type": "application/json"})
    assert status == 503 and "not running" in json.loads(body)["message"]


def test_upstream_none_serves_only_the_build_api(spawn_daemon):
    """--upstream none: no pass-through at all; Podman's routes are 503s
    (lookups 404s) saying so, after the body was read (an upload never
    breaks), and the system endpoints answer for the build side alone."""
    d = spawn_daemon("--upstream", "none")
    status, _, body = d.request("GET", "/v1.41/containers/json")
    err = json.loads(body)
    assert status == 404 and err["response"] == 404, err
    assert err["message"].startswith("no such route: GET /v1.41/containers/json"), err
    assert "--upstream none" in err["message"] and "--spawn-upstream" in err["message"], err
    status, _, body = d.request("POST", "/v1.41/containers/create", body=b"{}",
                                headers={"Content-Type": "application/json"})
    assert status == 503 and "--upstream none" in json.loads(body)["message"], body
    big = b"x" * (4 << 20)
    for _ in range(5):
        status, _, body = d.request("POST", "/v1.41/images/load", body=big,
                                    headers={"Content-Type": "application/x-tar"})
        assert status == 503, body
    status, h, body = d.request("GET", "/_ping")
    assert (status, body, h["Builder-Version"]) == (200, b"OK", "2")
    status, _, body = d.request("GET", "/v1.41/info")
    assert status == 200 and "Upstream" not in json.loads(body)["Podsolve"]
    logged(d, ("GET", "/v1.41/containers/json", "404", "local"))


def test_upstream_version_is_kept_and_forgotten_when_the_upstream_goes(spawn_daemon, tmp_path):
    """Podman's /version costs it a dpkg-query per component (0.3 s idle, over
    1 s loaded) and buildx's docker driver asks before every build: podsolved
    keeps the upstream's answer per path (PS_UPSTREAM_VERSION_TTL_S), so
    repeated asks reach the upstream once, merged each time with the build
    side.  /info is live (its counters change) and asked every time.  When
    the upstream stops answering, the kept answer is forgotten: the service
    that comes back is asked again, and its new version is what clients see."""
    sock = tmp_path / "up.sock"
    generation = {"n": 1}

    def behaviour(conn, head, rest):
        path = head.split(b" ")[1].decode()
        body = json.dumps({"Version": f"9.{generation['n']}.0", "ApiVersion": "1.41",
                           "Components": [{"Name": "Podman Engine", "Version": f"9.{generation['n']}.0"}]}
                          if path.endswith("/version") else {"Containers": generation["n"]}).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        conn.close()

    up = FakeUpstream(sock, behaviour)
    d = spawn_daemon("--upstream", f"unix://{sock}")
    try:
        for _ in range(3):
            status, _, body = d.request("GET", "/v1.41/version")
            v = json.loads(body)
            assert status == 200 and v["Version"] == "9.1.0", v
            assert [c["Name"] for c in v["Components"]] == ["Podman Engine", "podsolve", "buildah"], v
        status, _, body = d.request("GET", "/v4.3.1/libpod/version")
        assert status == 200 and json.loads(body)["Version"] == "9.1.0"
        for _ in range(2):
            status, _, body = d.request("GET", "/v1.41/info")
            assert status == 200 and json.loads(body)["Containers"] == 1
        asked = [h.split(b" ")[1].decode() for h in up.heads]
        assert asked.count("/v1.41/version") == 1, asked
        assert asked.count("/v4.3.1/libpod/version") == 1, asked
        assert asked.count("/v1.41/info") == 2, asked

        # The upstream goes away (a ping finds it gone), then comes back newer.
        up.close()
        os.unlink(sock)
        status, h, body = d.request("GET", "/_ping")
        assert (status, body) == (200, b"OK")
        generation["n"] = 2
        up = FakeUpstream(sock, behaviour)
        status, _, body = d.request("GET", "/v1.41/version")
        assert status == 200 and json.loads(body)["Version"] == "9.2.0", body
        assert [h.split(b" ")[1] for h in up.heads] == [b"/v1.41/version"]
    finally:
        up.close()
