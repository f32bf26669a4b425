"""Named limits are enforced with clear answers, and the daemon stays
healthy under a bounded hostile load (issue: hardening)."""

import json
import os
import random
import socket
import threading
import time

import pytest

import podsolve_testlib as lib
from podsolve_testlib import assert_daemon_builds
from session_peer import SessionPeer


def _slow_context(seconds, marker):
    return {"Dockerfile": f"FROM {lib.BASE_IMAGE}\nRUN echo {marker} && sleep {seconds}\n"}


def test_builds_beyond_max_parallel_plus_max_queued_get_429_then_the_daemon_recovers(spawn_daemon, uniq):
    d = spawn_daemon("--max-parallel", "1", "--max-queued", "1")
    streams = []
    try:
        # one running, one queued
        for i in range(2):
            status, _, it = d.stream("POST", lib.with_query(lib.COMPAT_BUILD, {"t": f"slow{i}-{uniq}"}),
                                     lib.tar_context(_slow_context(3.5, f"slow{i}")),
                                     {"Content-Type": "application/x-tar"})
            assert status == 200
            streams.append(it)
        # the first build's RUN is running (its shell execs the `sleep`), the second one waits
        assert lib.wait_for(lambda: [p for p in d.descendants() if p[1].endswith("sleep 3.5")], 30), \
            f"the first build's RUN never started: {d.descendants()}"
        r = d.build({"Dockerfile": f"FROM {lib.BASE_IMAGE}\nRUN true\n"}, {"t": f"third-{uniq}"})
        assert r.status == 429, r.describe()
        body = r.events[0]
        assert body["response"] == 429 and "--max-queued" in body["message"]
        # the queued build says it is waiting, then both finish
        for it in streams:
            lines = list(it)
            assert lines[-1].get("aux") or "Successfully built" in json.dumps(lines), lines[-3:]
    finally:
        for it in streams:
            it.close()
    assert_daemon_builds(d, tag=f"after429-{uniq}")


def test_socket_group_is_applied(spawn_daemon):
    d = spawn_daemon("--group", "nogroup")
    st = os.stat(d.sock)
    import grp
    assert st.st_gid == grp.getgrnam("nogroup").gr_gid
    assert st.st_mode & 0o777 == 0o660


def _ping(d):
    status, _, body = d.request("GET", "/_ping", timeout=30)
    return status == 200 and body == b"OK"


def _fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _thread_count(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def _settle(pid, want_fds, want_threads, timeout=30):
    return lib.wait_for(lambda: _fd_count(pid) <= want_fds and _thread_count(pid) <= want_threads, timeout,
                        step=0.25)


def test_hostile_mixed_load_200_requests_32_connections(spawn_daemon, uniq):
    """200 requests over 32 concurrent clients: pings, small /build and
    /solve jobs, cancels, disconnects mid-stream, malformed requests.  No
    crash, every good build correct, and fds/threads back to idle."""
    d = spawn_daemon("--max-parallel", "4", "--max-queued", "200")
    pid = d.proc.pid
    assert _ping(d)
    time.sleep(1)
    idle_fds, idle_threads = _fd_count(pid), _thread_count(pid)

    rng = random.Random(42)
    kinds = (["ping"] * 80 + ["build"] * 30 + ["solve"] * 20 + ["disconnect"] * 20 + ["cancel"] * 10
             + ["malformed"] * 40)
    rng.shuffle(kinds)
    work = list(enumerate(kinds))
    lock = threading.Lock()
    failures, built = [], []

    def one(i, kind):
        tag = f"load{i}-{uniq}"
        if kind == "ping":
            assert _ping(d)
        elif kind == "build":
            r = d.build({"Dockerfile": f"FROM {lib.BASE_IMAGE}\nRUN echo {tag} > /tag\n"}, {"t": tag})
            assert r.status == 200 and r.error is None, r.describe()
            with lock:
                built.append(tag)
        elif kind == "solve":
            req = {"ref": tag, "frontend": "dockerfile.v0",
                   "exporters": [{"type": "image", "attrs": {"name": f"localhost/{tag}"}}]}
            body, ctype = lib.multipart({"request": json.dumps(req).encode()},
                                        {"context": lib.tar_context(
                                            {"Dockerfile": f"FROM {lib.BASE_IMAGE}\nRUN echo {tag} > /tag\n"})})
            status, _, body_ = d.request("POST", "/solve", body, {"Content-Type": ctype}, timeout=120)
            lines = [json.loads(l) for l in body_.splitlines() if l.strip()]
            assert status == 200 and "result" in lines[-1], lines[-1:]
            with lock:
                built.append(f"localhost/{tag}")
        elif kind == "disconnect":
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(d.sock))
            body = lib.tar_context(_slow_context(20, tag))
            s.sendall(f"POST /v1.41/build?t={tag} HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            s.recv(200)  # the stream started
            s.close()
        elif kind == "cancel":
            req = {"ref": tag, "frontend": "dockerfile.v0", "detach": True}
            body, ctype = lib.multipart({"request": json.dumps(req).encode()},
                                        {"context": lib.tar_context(_slow_context(20, tag))})
            status, _, it = d.stream("POST", "/solve", body, {"Content-Type": ctype})
            assert status == 200
            next(iter(it))
            st, _, b = d.request("POST", f"/solve/{tag}/cancel", timeout=60)
            assert st == 200 and json.loads(b)["state"] == "cancelled", b
            it.close()
        else:
            choice = i % 4
            if choice == 0:
                st, _, _ = d.request("POST", "/v1.41/build?buildargs=notjson", b"", {})
                assert st == 400
            elif choice == 1:
                st, _, _ = d.request("POST", "/solve", b"{nope", {"Content-Type": "application/json"})
                assert st == 400
            elif choice == 2:
                st, _, _ = d.request("POST", "/v1.41/build?t=x", os.urandom(3000),
                                     {"Content-Type": "application/x-tar"})
                assert st == 400
            else:
                s = socket.socket(socket.AF_UNIX)
                s.connect(str(d.sock))
                s.sendall(b"\x16\x03\x01garbage\r\n\r\n")
                s.close()

    def worker():
        while True:
            with lock:
                if not work:
                    return
                i, kind = work.pop()
            try:
                one(i, kind)
            except Exception as e:  # noqa: BLE001 - collected and reported below
                with lock:
                    failures.append(f"{kind} #{i}: {e!r}"[:500])

    threads = [threading.Thread(target=worker) for _ in range(32)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(lib.scaled(600))
    assert not failures, "\n".join(failures[:10])
    assert d.alive()
    for tag in built:
        name = tag if tag.startswith("localhost/") else f"docker.io/library/{tag}:latest"
        assert d.image_file(name, "/tag").decode().strip() == tag.split("/")[-1]
    # cancelled and disconnected builds leave nothing running
    lib.wait_for(lambda: not d.working_containers(), 30, step=0.5)
    assert d.working_containers() == []
    assert _settle(pid, idle_fds, idle_threads), (
        f"fds {_fd_count(pid)} (idle {idle_fds}), threads {_thread_count(pid)} (idle {idle_threads})")
    print(f"load: 200 requests in {time.monotonic() - started:.1f}s, {len(built)} images checked")


def _ping_on(conn):
    conn.request("GET", "/_ping")
    r = conn.getresponse()
    return r.status, dict(r.getheaders()), r.read()


def _session_admitted(d):
    """A /session of d's (an upgraded connection: never idle), or None when
    the daemon answered 503 (it notices closes asynchronously)."""
    try:
        return SessionPeer(d.sock, {"context": {}, "dockerfile": {}}).start()
    except AssertionError as e:
        if "HTTP/1.1 503 " not in str(e):
            raise
        return None


def test_connection_beyond_max_connections_gets_503_then_the_daemon_recovers(spawn_daemon):
    """--max-connections 2, both taken by connections in use (/session
    streams): a third client is told 503 "too many connections" in
    Podman's error shape (not a silent close), the two keep working, and
    once one leaves a newcomer is served."""
    d = spawn_daemon("--max-connections", "2")
    busy = []
    try:
        for _ in range(2):
            peer = lib.wait_for(lambda: _session_admitted(d), 15, step=0.2)
            assert peer, "a /session did not get in"
            busy.append(peer)
        extra = lib.UnixHTTPConnection(d.sock, timeout=30)
        status, headers, body = _ping_on(extra)
        assert status == 503, body
        err = json.loads(body)
        assert err["response"] == 503
        assert err["message"] == ("too many connections: podsolved serves at most 2 at once (--max-connections); "
                                  "retry when one ends")
        assert err["cause"] and headers.get("Connection", "").lower() == "close"
        assert headers.get("Retry-After") == "1"
        extra.close()
        # one leaves: a newcomer gets its turn (the close is noticed asynchronously)
        busy.pop().close()
        deadline = time.monotonic() + lib.scaled(15)
        while True:
            c = lib.UnixHTTPConnection(d.sock, timeout=30)
            status, _, body = _ping_on(c)
            c.close()
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (status, body) == (200, b"OK")
    finally:
        for p in busy:
            p.close()
    assert_daemon_builds(d, tag="after-conn-limit")
    assert "Request Failed(503)" in d.log_tail(200000)


def test_a_full_listener_closes_its_longest_idle_connection_for_a_newcomer(spawn_daemon):
    """--max-connections 2 held by two idle keep-alive connections: a third
    client is served, and the connection idle the longest is the one closed
    to make room (the other still works)."""
    d = spawn_daemon("--max-connections", "2")
    old, newer = (lib.UnixHTTPConnection(d.sock, timeout=30) for _ in range(2))
    try:
        assert _ping_on(old)[0] == 200
        time.sleep(0.3)
        assert _ping_on(newer)[0] == 200
        third = lib.UnixHTTPConnection(d.sock, timeout=30)
        assert _ping_on(third)[:1] == (200,)
        third.close()
        with pytest.raises((ConnectionError, OSError, lib.http.client.HTTPException)):
            _ping_on(old)
        assert _ping_on(newer)[0] == 200
    finally:
        old.close()
        newer.close()


def _half_heads(sock_path, n):
    """n connections that send half a request head and stop (slowloris)."""
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(lib.scaled(30))
        s.connect(sock_path)
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nX-Slow: ")
        conns.append(s)
    return conns


def test_slow_clients_do_not_lock_others_out_and_are_closed_after_the_header_timeout(spawn_daemon):
    """400 connections sending half a request head and stopping, against
    --max-connections 16 --header-timeout 2: a new client's /_ping is
    answered at once (each newcomer takes an idle slot), and every slow
    connection still open is closed by the daemon within the timeout."""
    d = spawn_daemon("--max-connections", "16", "--header-timeout", "2")
    slow = []
    try:
        for _ in range(8):  # in waves, as an attacker would keep opening them
            slow += _half_heads(str(d.sock), 50)
            c = lib.UnixHTTPConnection(d.sock, timeout=10)
            started = time.monotonic()
            assert _ping_on(c)[0] == 200
            assert time.monotonic() - started < lib.scaled(5)
            c.close()
        # the ones the newcomers did not displace go with the header timeout
        deadline = time.monotonic() + lib.scaled(15)
        for s in slow:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert s.recv(4096) == b"", "a slow connection got an answer to half a head"
            except ConnectionResetError:
                pass
    finally:
        for s in slow:
            s.close()
    assert d.alive()
    assert_daemon_builds(d, tag="after-slowloris")


def _tcp_ping(port, source, conn=None):
    """GET /_ping from 127.0.0.x (a peer of its own), on `conn` or a new
    keep-alive connection -> (connection, status, body)."""
    c = conn or lib.http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    c.request("GET", "/_ping")
    r = c.getresponse()
    return c, r.status, r.read()


def test_when_connections_compete_the_peer_past_its_share_makes_room(spawn_daemon):
    """A TCP listener, --max-connections 4 --max-connections-per-peer 2.
    Peer A (127.0.0.2) alone may hold all four; when peer B (127.0.0.3)
    arrives, one of A's idle connections makes room, not B's.  When A's
    connections are all in use, A's fifth is told 503 naming the per-peer
    limit."""
    port = lib.free_port()
    d = spawn_daemon("--listen", f"tcp://127.0.0.1:{port}", "--insecure-tcp", "--max-connections", "4",
                     "--max-connections-per-peer", "2")
    a = []
    try:
        for _ in range(4):  # a lone client uses every slot
            c, status, _ = _tcp_ping(port, "127.0.0.2")
            assert status == 200
            a.append(c)
            time.sleep(0.05)
        b, status, _ = _tcp_ping(port, "127.0.0.3")
        assert status == 200
        # B keeps its connection; the idlest of A's was closed for it
        assert _tcp_ping(port, "127.0.0.3", b)[1] == 200
        with pytest.raises((ConnectionError, OSError, lib.http.client.HTTPException)):
            _tcp_ping(port, "127.0.0.2", a[0])
        for c in a[1:]:
            assert _tcp_ping(port, "127.0.0.2", c)[1] == 200
        b.close()
    finally:
        for c in a:
            c.close()


def _busy_tcp(port, source):
    """A connection from 127.0.0.x with a request in progress: its head
    sent, its body (1000 bytes announced) never."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    s.sendall(b"POST /solve HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    return s


def test_a_peer_past_its_share_with_every_connection_in_use_gets_503_naming_the_share(spawn_daemon):
    """--max-connections 3 --max-connections-per-peer 1, every slot held by
    a request in progress: two of peer A's (127.0.0.2), one of peer B's.
    A's next connection is told 503 naming --max-connections-per-peer."""
    port = lib.free_port()
    d = spawn_daemon("--listen", f"tcp://127.0.0.1:{port}", "--insecure-tcp", "--max-connections", "3",
                     "--max-connections-per-peer", "1")
    busy = [_busy_tcp(port, "127.0.0.2"), _busy_tcp(port, "127.0.0.2"), _busy_tcp(port, "127.0.0.3")]
    try:
        time.sleep(0.5)  # the three heads are read: requests in progress
        c, status, body = _tcp_ping(port, "127.0.0.2")
        c.close()
        assert status == 503, body
        assert json.loads(body)["message"] == ("too many connections: podsolved serves at most 1 at once from one "
                                               "peer (--max-connections-per-peer); retry when one ends")
    finally:
        for s in busy:
            s.close()


def _v2_build(d, peer, tag, timeout=120):
    """A BuildKit-mode /build taking its context from the session `peer`."""
    params = {"version": "2", "remote": "client-session", "session": peer.uuid, "dockerfile": "Dockerfile",
              "t": tag, "buildid": os.urandom(16).hex()}
    return d.build(body=b"", params=params, headers={"Content-Type": "application/x-tar"}, timeout=timeout)


def _build_error(r):
    e = r.error or {}
    return (e.get("errorDetail") or {}).get("message") or e.get("error") or ""


def test_session_no_build_uses_is_closed_after_the_idle_timeout(spawn_daemon, uniq):
    """--session-idle-timeout 2: a /session that no build names is closed
    (GOAWAY, socket closed) and a build naming it afterwards says why; a
    session a build uses stays open through a RUN longer than the timeout,
    and is closed once the build is over."""
    d = spawn_daemon("--session-idle-timeout", "2")
    files = {"Dockerfile": f"FROM {lib.BASE_IMAGE}\nCOPY . /ctx/\nRUN sleep 5\n", "f.txt": uniq}
    dirs = {"context": files, "dockerfile": files}

    unused = SessionPeer(d.sock, dirs).start()
    try:
        assert unused.eof.wait(lib.scaled(30)), unused.trace()
        assert "GOAWAY from the daemon" in unused.trace()
        reason = "closed by the daemon: idle for 2 s: no build used the session"
        assert f"session {unused.uuid}: ended: {reason}" in d.log_tail(200000)
        r = _v2_build(d, unused, f"idle-late-{uniq}")
        assert r.error is not None and f"session {unused.uuid} has ended: {reason}" in _build_error(r), r.describe()
    finally:
        unused.close()

    used = SessionPeer(d.sock, dirs).start()
    try:
        r = _v2_build(d, used, f"idle-used-{uniq}")
        assert r.status == 200 and r.error is None, r.describe() + used.trace() + d.log_tail(3000)
        assert not used.eof.is_set(), "the session was closed while its build ran"
        assert d.image_file(f"docker.io/library/idle-used-{uniq}:latest", "/ctx/f.txt") == uniq.encode()
        # the build is over: nothing names the session any more
        assert used.eof.wait(lib.scaled(30)), used.trace()
    finally:
        used.close()
    assert_daemon_builds(d, tag=f"after-idle-{uniq}")


def _two_builds_at_once(d, peer, uniq, label):
    """Two BuildKit-mode builds over one session, with different Dockerfiles
    (so they do not wait on each other's context cache): each returns its
    BuildResult."""
    results = {}

    def run(name, dockerfile):
        params = {"version": "2", "remote": "client-session", "session": peer.uuid, "dockerfile": dockerfile,
                  "t": f"{label}-{name}-{uniq}", "buildid": os.urandom(16).hex()}
        results[name] = d.build(body=b"", params=params, headers={"Content-Type": "application/x-tar"},
                                timeout=180)

    threads = [threading.Thread(target=run, args=a) for a in (("a", "Dockerfile"), ("b", "Dockerfile.b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(lib.scaled(240))
    return results


def test_session_calls_stay_within_the_clients_max_concurrent_streams(daemon, uniq):
    """The client's SETTINGS_MAX_CONCURRENT_STREAMS is honoured: with two
    builds transferring over one session at once, a client allowing many
    streams sees two open together, a client allowing one never sees a
    second (h2 would count it a protocol error) and both builds still
    succeed, their calls queued instead of refused."""
    files = {"Dockerfile": f"FROM {lib.BASE_IMAGE}\nCOPY a.txt /a.txt\n",
             "Dockerfile.b": f"FROM {lib.BASE_IMAGE}\nCOPY a.txt /b.txt\n",
             "a.txt": f"{uniq}\n"}
    dirs = {"context": files, "dockerfile": files}

    # The first transfer is held until a second stream opens (bounded), so
    # the daemon has every chance to open one.
    with SessionPeer(daemon.sock, dirs, hold_first_transfer=20) as peer:
        rs = _two_builds_at_once(daemon, peer, uniq, "streams-many")
        for r in rs.values():
            assert r.status == 200 and r.error is None, r.describe() + peer.trace()
        assert peer.max_open_streams >= 2, peer.trace()

    with SessionPeer(daemon.sock, dirs, max_streams=1, hold_first_transfer=3) as peer:
        rs = _two_builds_at_once(daemon, peer, uniq, "streams-one")
        for r in rs.values():
            assert r.status == 200 and r.error is None, r.describe() + peer.trace()
        assert peer.max_open_streams == 1 and not peer.too_many_streams, peer.trace()
        assert peer.error is None, peer.trace()
    assert daemon.image_file(f"docker.io/library/streams-one-a-{uniq}:latest", "/a.txt") == f"{uniq}\n".encode()
    assert daemon.image_file(f"docker.io/library/streams-one-b-{uniq}:latest", "/b.txt") == f"{uniq}\n".encode()


def test_request_head_over_the_header_limit_gets_431_then_the_daemon_recovers(daemon):
    """libmicrohttpd keeps a request's head in a 32 KiB pool per connection
    (its default, kept on purpose: Docker clients send about 1 KiB, a
    registry-auth header a few); a head over it is answered 431, not
    buffered."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(daemon.sock))
    s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nX-Pad: " + b"p" * (40 * 1024) + b"\r\n\r\n")
    answer = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    except ConnectionResetError:
        pass  # it closes with our unread bytes pending: the answer came first
    s.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:300]
    assert _ping(daemon)


def test_output_line_longer_than_64KiB_is_streamed_in_pieces(daemon, uniq):
    """PS_MAX_LOG_LINE: a RUN printing 1 MiB without a newline is not
    buffered whole: it reaches the client in pieces of about 64 KiB (at most
    one 16 KiB read more), and nothing is lost."""
    r = daemon.build({"Dockerfile": f"FROM {lib.BASE_IMAGE}\n"
                                    f"RUN head -c 1048576 /dev/zero | tr '\\0' x; echo; echo done-{uniq}\n"},
                     {"t": f"longline-{uniq}"})
    assert r.status == 200 and r.error is None, r.describe()[:2000]
    pieces = [e["stream"] for e in r.events if "x" * 100 in e.get("stream", "")]
    assert sum(p.count("x") for p in pieces) == 1048576
    assert len(pieces) >= 16 and max(len(p) for p in pieces) <= 64 * 1024 + 16 * 1024 + 1, [len(p) for p in pieces]
    assert any(f"done-{uniq}" in e.get("stream", "") for e in r.events)


def test_finished_solve_jobs_are_forgotten_after_the_job_ttl(spawn_daemon, uniq):
    """--job-ttl 1: a finished /solve job (and its kept outputs) is listed,
    then after the TTL answers 404 saying how long jobs are kept."""
    d = spawn_daemon("--job-ttl", "1")
    req = {"ref": f"ttl-{uniq}", "frontend": "dockerfile.v0", "exporters": [{"type": "tar"}]}
    body, ctype = lib.multipart({"request": json.dumps(req).encode()},
                                {"context": lib.tar_context({"Dockerfile": f"FROM {lib.BASE_IMAGE}\n"})})
    status, _, out = d.request("POST", "/solve", body, {"Content-Type": ctype})
    assert status == 200 and b'"result"' in out, out[-500:]
    status, _, info = d.request("GET", f"/solve/ttl-{uniq}")
    assert status == 200 and json.loads(info)["outputs"], info
    deadline = time.monotonic() + lib.scaled(20)
    while time.monotonic() < deadline:
        status, _, info = d.request("GET", f"/solve/ttl-{uniq}")
        if status == 404:
            break
        time.sleep(0.5)
    assert status == 404, info
    assert json.loads(info)["message"] == f'no solve with ref "ttl-{uniq}" (finished jobs are kept for 1 s)'
    status, _, _ = d.request("GET", f"/solve/ttl-{uniq}/outputs/0")
    assert status == 404
    assert_daemon_builds(d, tag=f"after-ttl-{uniq}")
