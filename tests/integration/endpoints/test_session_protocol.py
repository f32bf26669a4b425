"""POST /session as the docker 20.10 CLI opens it (buildkit-protocols.md §2,
wire-capture.txt A-D): the daemon answers "101 Switching Protocols" with
Upgrade: h2c and then speaks HTTP/2 *first*, as the client of the CLI's
gRPC services.  Bad upgrade requests and a second live session with the
same id get moby's 400 messages."""

import json
import socket
import time

import pytest

import podsolve_testlib as lib

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
METHODS = [
    "/grpc.health.v1.Health/Check",
    "/moby.filesync.v1.FileSync/DiffCopy",
    "/moby.filesync.v1.Auth/Credentials",
]


def open_session(daemon, uuid, path="/session", upgrade="h2c", connection="Upgrade", extra=()):
    """Send the CLI's request head; return (socket, bytes read within 2 s)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(daemon.sock))
    lines = [f"POST {path} HTTP/1.1", "Host: ", "User-Agent: Docker-Client/20.10.24 (linux)", "Content-Length: 0"]
    if connection:
        lines.append(f"Connection: {connection}")
    if upgrade:
        lines.append(f"Upgrade: {upgrade}")
    lines += [f"X-Docker-Expose-Session-Grpc-Method: {m}" for m in METHODS]
    lines += ["X-Docker-Expose-Session-Name: ctx", "X-Docker-Expose-Session-Sharedkey: 0123abcd"]
    if uuid:
        lines.append(f"X-Docker-Expose-Session-Uuid: {uuid}")
    lines += list(extra)
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    s.settimeout(lib.scaled(2))
    data = b""
    deadline = time.monotonic() + lib.scaled(2)
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep and (not head.startswith(b"HTTP/1.1 101") or len(rest) >= len(H2_PREFACE) + 9):
            break
    return s, data


def split_response(data):
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers, rest


def assert_400(data, needle):
    status, headers, body = split_response(data)
    assert status.startswith("HTTP/1.1 400"), data[:300]
    if headers.get("transfer-encoding") != "chunked":
        err = json.loads(body[: int(headers.get("content-length", len(body)))])
        assert needle in err["message"], err


def test_cli_session_request_is_upgraded_and_daemon_speaks_http2_first(daemon, uniq):
    s, data = open_session(daemon, f"sess{uniq}")
    try:
        status, headers, rest = split_response(data)
        assert status == "HTTP/1.1 101 Switching Protocols", data[:300]
        assert headers.get("connection", "").lower() == "upgrade"
        assert headers.get("upgrade") == "h2c"
        # Roles reversed (§2.3): the daemon sends the client preface, then SETTINGS.
        assert rest.startswith(H2_PREFACE), rest[:40]
        frame = rest[len(H2_PREFACE):]
        assert len(frame) >= 9 and frame[3] == 0x4 and frame[5:9] == b"\0\0\0\0", frame[:9]
    finally:
        s.close()


def test_versioned_session_path_is_accepted(daemon, uniq):
    s, data = open_session(daemon, f"sessv{uniq}", path="/v1.41/session")
    s.close()
    assert data.startswith(b"HTTP/1.1 101 "), data[:200]


@pytest.mark.parametrize("upgrade,connection,needle", [
    (None, "Upgrade", "no upgrade proto in request"),
    ("websocket", "Upgrade", "protocol websocket not supported"),
    ("h2c", None, "Connection: Upgrade"),
])
def test_bad_upgrade_is_400(daemon, uniq, upgrade, connection, needle):
    s, data = open_session(daemon, f"bad{uniq}", upgrade=upgrade, connection=connection)
    s.close()
    assert_400(data, needle)


def test_missing_session_id_is_400(daemon):
    s, data = open_session(daemon, None)
    s.close()
    assert_400(data, "X-Docker-Expose-Session-Uuid")


def test_second_live_session_with_the_same_id_is_400_until_the_first_closes(daemon, uniq):
    uuid = f"dup{uniq}"
    first, data = open_session(daemon, uuid)
    assert data.startswith(b"HTTP/1.1 101 "), data[:200]
    second, data2 = open_session(daemon, uuid)
    second.close()
    assert_400(data2, f"session {uuid} already exists")
    first.close()
    # The id is free again once the first connection is gone.
    answers = []

    def reopened():
        third, data3 = open_session(daemon, uuid)
        third.close()
        answers.append(data3)
        return data3.startswith(b"HTTP/1.1 101 ")

    assert lib.wait_for(reopened, 5), answers[-1][:300]


def test_daemon_survives_garbage_after_the_upgrade(daemon, uniq):
    s, data = open_session(daemon, f"junk{uniq}")
    assert data.startswith(b"HTTP/1.1 101 ")
    s.sendall(b"this is not HTTP/2 at all\r\n" * 10)
    s.settimeout(5)
    try:
        while s.recv(65536):
            pass  # the daemon answers GOAWAY and closes
    except OSError:
        pass
    s.close()
    status, _, _ = daemon.request("GET", "/_ping", timeout=5)
    assert status == 200


def test_sigterm_with_an_open_session_stops_cleanly(spawn_daemon, uniq):
    """A client holding /session open must not keep the daemon from stopping:
    the session gets GOAWAY, the socket closes, podsolved exits 0."""
    d = spawn_daemon()
    s, data = open_session(d, f"held{uniq}")
    assert data.startswith(b"HTTP/1.1 101 ")
    started = time.monotonic()
    status, problem = d.stop(timeout=20)
    assert problem is None, problem
    assert status == 0
    assert time.monotonic() - started < lib.scaled(10)
    s.settimeout(5)
    rest = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    except OSError:
        pass
    s.close()
    assert b"\x00\x00\x08\x07" in data + rest, "no GOAWAY before the close"
