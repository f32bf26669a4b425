"""The gRPC transport (issue #13): the daemon as an HTTP/2 gRPC *server*,
on POST /grpc (the HTTP/1.1 upgrade to h2c, as dockerd serves buildx's
docker driver) and on --buildkit-listen unix sockets (prior knowledge, as
buildkitd --addr).  A real client: Debian's python3-grpcio, through
grpc_testlib (a relay does the /grpc upgrade for it).

What the transport promises whatever the service: Health/Check answers
SERVING; an unknown method is UNIMPLEMENTED; a message over 16 MiB is
RESOURCE_EXHAUSTED; 64 calls run at once on one connection; a bad upgrade
is a 400 in Podman's error shape; garbage after the 101, a bad preface or a
probe that connects and hangs up ends that connection only (and logs
nothing above debug for the probe); --no-grpc leaves /grpc to the upstream;
the --buildkit-listen socket is mode 0660.
"""

import concurrent.futures
import json
import os
import re
import socket
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import pytest

import grpc_testlib as g
import podsolve_testlib as lib
from conftest import _start_daemon, _stop_daemon
from test_proxy import FakeUpstream

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture(scope="module")
def bk_daemon():
    """A podsolved with --buildkit-listen (its own storage; module-wide)."""
    sockdir = tempfile.mkdtemp(prefix="podsolve-bk-")
    path = os.path.join(sockdir, "buildkitd.sock")
    d = _start_daemon(["--buildkit-listen", f"unix://{path}"], prefix="podsolve-it-grpc-")
    d.buildkit_sock = path
    yield d
    problem = _stop_daemon(d)
    shutil.rmtree(sockdir, ignore_errors=True)
    assert problem is None, problem


@pytest.fixture
def bk_channel(bk_daemon):
    ch = g.listen_channel(bk_daemon.buildkit_sock)
    yield ch
    ch.close()


@pytest.fixture
def up_channel(daemon):
    ch = g.upgrade_channel(daemon)
    yield ch
    ch.close()


def serving(resp):
    return resp.status == g.pb("health").HealthCheckResponse.SERVING


# ---- Health, both transports -------------------------------------------------

def test_health_check_is_serving_over_grpc_upgrade(up_channel):
    assert serving(g.health_check(up_channel))


def test_health_check_is_serving_over_versioned_grpc_path(daemon):
    with g.upgrade_channel(daemon, path="/v1.41/grpc") as ch:
        assert serving(g.health_check(ch))


def test_health_check_is_serving_over_buildkit_listen(bk_channel):
    assert serving(g.health_check(bk_channel))


def test_trace_export_is_accepted_and_dropped(bk_channel):
    # An ExportTraceServiceRequest with one resource_spans entry (field 1),
    # whatever it holds: the daemon keeps no traces and answers empty.
    assert g.unary_raw(bk_channel, g.TRACE_EXPORT, b"\x0a\x00") == b""


def test_buildkit_listen_socket_is_0660(bk_daemon):
    mode = stat.S_IMODE(os.stat(bk_daemon.buildkit_sock).st_mode)
    assert stat.S_ISSOCK(os.stat(bk_daemon.buildkit_sock).st_mode)
    assert mode == 0o660, oct(mode)


# ---- status codes ----------------------------------------------------------------

@pytest.mark.parametrize("method,needle", [
    ("/moby.buildkit.v1.Nothing/Here", "unknown service moby.buildkit.v1.Nothing"),
    ("/grpc.health.v1.Health/Watch", "unknown method Watch for service grpc.health.v1.Health"),
])
def test_unknown_method_is_unimplemented(bk_channel, up_channel, method, needle):
    for ch in (bk_channel, up_channel):
        with pytest.raises(grpc.RpcError) as e:
            g.unary_raw(ch, method, b"")
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert needle in e.value.details()


def test_message_over_16_mib_is_resource_exhausted(bk_channel, up_channel):
    big = b"\0" * (17 * 1024 * 1024)
    for ch in (bk_channel, up_channel):
        with pytest.raises(grpc.RpcError) as e:
            g.unary_raw(ch, g.HEALTH_CHECK, big, timeout=60)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        assert "larger than max" in e.value.details()
        # The connection still serves.
        assert serving(g.health_check(ch))


def test_large_upload_under_the_limit_arrives_whole(bk_channel, up_channel):
    # 15 MiB: far past the HTTP/2 windows' defaults, so it only arrives if
    # the daemon gives credit back as it reads.  All zero bytes are no
    # HealthCheckRequest: the handler saw the whole message.
    big = b"\0" * (15 * 1024 * 1024)
    for ch in (bk_channel, up_channel):
        with pytest.raises(grpc.RpcError) as e:
            g.unary_raw(ch, g.HEALTH_CHECK, big, timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
        assert "undecodable HealthCheckRequest" in e.value.details()


def test_empty_unary_request_is_invalid_argument(bk_channel):
    # grpcio always sends one message; a stream-stream call that sends none
    # reaches the unary handler with no request.
    fn = bk_channel.stream_unary(g.HEALTH_CHECK, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as e:
        fn(iter(()), timeout=lib.scaled(30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no request message" in e.value.details()


def test_64_concurrent_calls_on_one_connection(bk_channel, up_channel):
    for ch in (bk_channel, up_channel):
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            results = list(pool.map(lambda _: g.health_check(ch, timeout=60), range(64)))
        assert len(results) == 64 and all(serving(r) for r in results)


def test_connections_in_parallel(bk_daemon, daemon):
    chans = [g.listen_channel(bk_daemon.buildkit_sock) for _ in range(8)]
    chans += [g.upgrade_channel(daemon) for _ in range(4)]
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda ch: g.health_check(ch, timeout=60), chans))
        assert all(serving(r) for r in results)
    finally:
        for ch in chans:
            ch.close()


# ---- the upgrade ---------------------------------------------------------------------

def assert_400(head, rest, needle):
    assert head.startswith("HTTP/1.1 400"), head
    err = json.loads(rest)
    assert needle in err["message"], err
    assert err.get("response") == 400, err


@pytest.mark.parametrize("upgrade,needle", [
    ("websocket", "protocol websocket not supported"),
    (None, "no upgrade proto in request"),
])
def test_upgrade_other_than_h2c_is_400(daemon, upgrade, needle):
    s, head, rest = g.open_upgraded(daemon.sock, upgrade=upgrade)
    try:
        m = re.search(r"(?im)^content-length:\s*(\d+)", head)
        while m and len(rest) < int(m.group(1)):
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    finally:
        s.close()
    assert_400(head, rest, needle)


def test_101_then_the_daemon_sends_settings_first(daemon):
    s, head, rest = g.open_upgraded(daemon.sock)
    try:
        assert head.startswith("HTTP/1.1 101"), head
        assert re.search(r"(?im)^upgrade:\s*h2c\s*$", head), head
        # A server: no preface of its own, its SETTINGS at once.
        while len(rest) < 9:
            rest += s.recv(65536)
        assert rest[3] == 0x4 and rest[5:9] == b"\0\0\0\0", rest[:9]
    finally:
        s.close()


def read_until_closed(s, timeout=10):
    s.settimeout(lib.scaled(timeout))
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00" * 64,
    H2_PREFACE[:10] + b"garbage garbage garbage",
])
def test_garbage_after_101_closes_the_connection_only(daemon, garbage):
    s, head, rest = g.open_upgraded(daemon.sock)
    assert head.startswith("HTTP/1.1 101"), head
    s.sendall(garbage)
    read_until_closed(s)   # the daemon hangs up (a timeout here fails the test)
    s.close()
    assert daemon.alive()
    with g.upgrade_channel(daemon) as ch:
        assert serving(g.health_check(ch))


def test_bad_preface_on_buildkit_listen_closes_the_connection_only(bk_daemon):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(bk_daemon.buildkit_sock)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
    read_until_closed(s)
    s.close()
    assert bk_daemon.alive()
    with g.listen_channel(bk_daemon.buildkit_sock) as ch:
        assert serving(g.health_check(ch))


def test_probe_that_connects_and_closes_is_not_an_error(bk_daemon):
    log = Path(bk_daemon.log_path)
    before = log.stat().st_size
    for _ in range(5):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(bk_daemon.buildkit_sock)
        s.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(bk_daemon.buildkit_sock)
        s.sendall(H2_PREFACE)
        s.close()
    with g.listen_channel(bk_daemon.buildkit_sock) as ch:
        assert serving(g.health_check(ch))
    time.sleep(lib.scaled(0.5))
    with open(log, "rb") as f:
        f.seek(before)
        new = f.read().decode("utf-8", "replace")
    noisy = [l for l in new.splitlines() if re.search(r"\b(error|warn|info)\b", l) and "grpc" in l]
    assert not noisy, "\n".join(noisy)


def test_client_cancel_and_hang_up_mid_call_leave_the_daemon_serving(bk_daemon):
    # A streaming call cut off by the client, then the connection dropped
    # with calls open: the daemon cancels them and goes on.
    for _ in range(3):
        ch = g.listen_channel(bk_daemon.buildkit_sock)
        fn = ch.stream_unary(g.HEALTH_CHECK, request_serializer=None, response_deserializer=None)
        fut = fn.future(iter([b"\x0a\x00"] * 3), timeout=lib.scaled(30))
        fut.cancel()
        ch.close()
    assert bk_daemon.alive()
    with g.listen_channel(bk_daemon.buildkit_sock) as ch:
        assert serving(g.health_check(ch))


# ---- --no-grpc ---------------------------------------------------------------------------

def _teapot(conn, head, rest):
    body = b'{"message":"upstream teapot"}'
    conn.sendall(b"HTTP/1.1 418 I'm a teapot\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)


def test_no_grpc_passes_grpc_to_the_upstream(spawn_daemon, tmp_path):
    up = FakeUpstream(tmp_path / "up.sock", _teapot)
    try:
        d = spawn_daemon("--no-grpc", "--upstream", f"unix://{tmp_path / 'up.sock'}")
        s, head, rest = g.open_upgraded(d.sock)
        s.close()
        assert head.startswith("HTTP/1.1 418"), head
        assert any(h.startswith(b"POST /grpc ") for h in up.heads), up.heads
    finally:
        up.close()


# ---- the wire, with python3-h2 -------------------------------------------------------------

def h2_exchange(sock_path, headers, body=b"", timeout=10):
    """One request on a fresh prior-knowledge connection; returns
    (response headers, data, trailers) once the stream ends."""
    import h2.config
    import h2.connection
    import h2.events
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(lib.scaled(timeout))
    s.connect(str(sock_path))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, headers, end_stream=not body)
    if body:
        conn.send_data(sid, body, end_stream=True)
    s.sendall(conn.data_to_send())
    resp, data, trailers = None, b"", None
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived):
                    resp = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return resp, data, trailers
            s.sendall(conn.data_to_send())
    finally:
        s.close()
    return resp, data, trailers


def grpc_headers(path=g.HEALTH_CHECK, method="POST", content_type="application/grpc"):
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost"),
            ("content-type", content_type), ("te", "trailers")]


def test_unknown_method_is_a_trailers_only_response(bk_daemon):
    resp, data, trailers = h2_exchange(bk_daemon.buildkit_sock, grpc_headers("/x.Y/Z"), b"\0\0\0\0\0")
    assert resp[":status"] == "200" and resp["content-type"] == "application/grpc", resp
    assert resp["grpc-status"] == "12", resp
    assert resp["grpc-message"] == "unknown service x.Y", resp
    assert data == b"" and trailers is None


def test_answer_is_headers_message_trailers(bk_daemon):
    resp, data, trailers = h2_exchange(bk_daemon.buildkit_sock, grpc_headers(), b"\0\0\0\0\0")
    assert resp == {":status": "200", "content-type": "application/grpc"}, resp
    assert data == b"\0\0\0\0\x02\x08\x01"     # HealthCheckResponse{status: SERVING}
    assert trailers == {"grpc-status": "0"}, trailers


@pytest.mark.parametrize("method,content_type,status", [
    ("POST", "text/plain", "415"),
    ("POST", "application/grpcx", "415"),
    ("GET", "application/grpc", "405"),
])
def test_not_a_grpc_request_is_an_http_error(bk_daemon, method, content_type, status):
    """For a plain HTTP/2 client (curl, h2spec): the HTTP status, the reason
    as a text body, then the gRPC status in trailers."""
    resp, data, trailers = h2_exchange(bk_daemon.buildkit_sock, grpc_headers(method=method,
                                                                              content_type=content_type))
    assert resp == {":status": status, "content-type": "text/plain; charset=utf-8"}, resp
    why = "gRPC requires the POST method" if status == "405" else \
        f'invalid gRPC request content-type "{content_type}"'
    assert data == why.encode() + b"\n", data
    assert trailers["grpc-status"] == "13" and trailers["grpc-message"] == why, trailers
    assert bk_daemon.alive()


def test_content_type_suffixes_are_grpc(bk_daemon):
    resp, data, trailers = h2_exchange(bk_daemon.buildkit_sock,
                                       grpc_headers(content_type="application/grpc+proto"), b"\0\0\0\0\0")
    assert trailers == {"grpc-status": "0"}, (resp, trailers)


def test_live_buildkit_socket_is_refused_and_tcp_without_tls_is_a_usage_error(bk_daemon, tmp_path):
    base = [lib.podsolved_path(), "--listen", f"unix://{tmp_path}/p.sock", "--state-dir", str(tmp_path / "state"),
            "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "runroot"), "--upstream", "none"]
    r = subprocess.run(base + ["--buildkit-listen", f"unix://{bk_daemon.buildkit_sock}"],
                       capture_output=True, text=True, timeout=lib.scaled(60))
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "--buildkit-listen" in r.stderr and "in use" in r.stderr, r.stderr[-2000:]
    # The live daemon's socket is untouched.
    with g.listen_channel(bk_daemon.buildkit_sock) as ch:
        assert serving(g.health_check(ch))
    # tcp:// only with TLS (endpoints/test_grpc_tls.py serves it); other schemes never.
    r = subprocess.run(base + ["--buildkit-listen", "tcp://127.0.0.1:1234"], capture_output=True, text=True,
                       timeout=lib.scaled(30))
    assert r.returncode == 2 and "tcp:// is served only with TLS" in r.stderr, r.stderr
    r = subprocess.run(base + ["--buildkit-listen", "http://127.0.0.1:1234"], capture_output=True, text=True,
                       timeout=lib.scaled(30))
    assert r.returncode == 2 and "use unix:///PATH or tcp://HOST:PORT" in r.stderr, r.stderr


def test_sigterm_with_grpc_connections_open_stops_cleanly(spawn_daemon, tmp_path):
    path = str(tmp_path / "bk.sock")
    d = spawn_daemon("--buildkit-listen", f"unix://{path}")
    up = g.upgrade_channel(d)
    bk = g.listen_channel(path)
    try:
        assert serving(g.health_check(up)) and serving(g.health_check(bk))
        t0 = time.monotonic()
        status, timeout_msg = d.stop(timeout=20)
        assert timeout_msg is None and status == 0, (status, timeout_msg, d.log_tail())
        # GOAWAY and close at once, not the 5 s grace.
        assert time.monotonic() - t0 < lib.scaled(4.5), d.log_tail()
        assert not os.path.exists(path)
    finally:
        up.close()
        bk.close()


def test_buildkit_listen_connections_beyond_max_connections_are_closed(spawn_daemon, tmp_path):
    path = str(tmp_path / "bk.sock")
    d = spawn_daemon("--buildkit-listen", f"unix://{path}", "--max-connections", "2")
    held = [g.listen_channel(path) for _ in range(2)]
    try:
        for ch in held:
            assert serving(g.health_check(ch))
        extra = g.listen_channel(path)
        with pytest.raises(grpc.RpcError) as e:
            g.health_check(extra, timeout=5)
        extra.close()
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), e.value
        assert "too many connections" in d.log_tail()
    finally:
        for ch in held:
            ch.close()
    # Once they are gone, new connections are served again.
    assert lib.wait_for(lambda: _healthy(path), timeout=lib.scaled(10))


def _healthy(path):
    with g.listen_channel(path) as ch:
        try:
            return serving(g.health_check(ch, timeout=2))
        except grpc.RpcError:
            return False


def test_grpc_go_goodbye_goaway_is_not_a_protocol_error(bk_daemon):
    # grpc-go's client ends its transport with GOAWAY naming its own last
    # stream (1, odd), which nghttp2 takes for a bad push-stream id; the
    # daemon treats it as the client leaving: no PROTOCOL_ERROR anywhere.
    import h2.config
    import h2.connection
    import h2.events
    log = Path(bk_daemon.log_path)
    before = log.stat().st_size
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(lib.scaled(10))
    s.connect(str(bk_daemon.buildkit_sock))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, grpc_headers(), end_stream=False)
    conn.send_data(1, b"\0\0\0\0\0", end_stream=True)
    s.sendall(conn.data_to_send())
    ended = False
    while not ended:
        chunk = s.recv(65536)
        assert chunk, "connection closed before the answer"
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.StreamEnded):
                ended = True
        s.sendall(conn.data_to_send())
    # GOAWAY(NO_ERROR, last_stream_id=1, "client transport shutdown"), by hand:
    # h2 (as a client) would name the server's last stream instead.
    debug = b"client transport shutdown"
    payload = (1).to_bytes(4, "big") + (0).to_bytes(4, "big") + debug
    s.sendall(len(payload).to_bytes(3, "big") + b"\x07\x00" + (0).to_bytes(4, "big") + payload)
    s.shutdown(socket.SHUT_WR)
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()
    assert lib.wait_for(lambda: "closing its transport" in log.read_text(errors="replace")[before:], timeout=10)
    new = log.read_text(errors="replace")[before:]
    assert "PROTOCOL_ERROR" not in new, new
    assert bk_daemon.alive()
