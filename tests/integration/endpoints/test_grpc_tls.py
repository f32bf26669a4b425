"""`--buildkit-listen tcp://HOST:PORT` with TLS, as buildkitd serves
`--addr tcp://… --tlscert --tlskey --tlscacert`: TLS 1.2+, ALPN h2, and
with a CA only clients holding a certificate it signed get in (mutual TLS).
A real gRPC client (python3-grpcio with its own TLS) and Python's ssl for
the peers that misbehave; the real BuildKit clients over TLS are in
clients/test_buildctl_tls.py.

What it promises: a client with the right certificate is served (Health,
a 12 MiB request through the TLS records); no certificate, one
from another CA, a client without h2 among its ALPN protocols, plain h2c
and garbage are refused in the handshake and the daemon serves the next
client; a peer that connects and says nothing is dropped after the
handshake deadline (PS_GRPC_TLS_HANDSHAKE_MS) and one still in its
handshake at SIGTERM does not hold the shutdown; tcp:// is never served
without TLS, and bad TLS files stop the daemon at start with a message
naming the file.
"""

import os
import re
import socket
import ssl
import subprocess

import grpc
import pytest

import grpc_testlib as g
import podsolve_testlib as lib
from conftest import _start_daemon, _stop_daemon

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HANDSHAKE_S = 10  # session/session_limits.h PS_GRPC_TLS_HANDSHAKE_MS


def tls_flags(pki, ca=True):
    flags = ["--buildkit-tlscert", str(pki / "server.pem"), "--buildkit-tlskey", str(pki / "server-key.pem")]
    return flags + (["--buildkit-tlscacert", str(pki / "ca.pem")] if ca else [])


def wait_serving(d, port):
    """The tcp:// socket opens just after /_ping answers: wait for its log line."""
    line = f"serving BuildKit's gRPC API on tcp://127.0.0.1:{port}"
    assert lib.wait_for(lambda: line in d.log_tail(200000), 20), d.log_tail()


def start_tls_daemon(pki, *extra, ca=True):
    port = lib.free_port()
    d = _start_daemon(["--buildkit-listen", f"tcp://127.0.0.1:{port}", *tls_flags(pki, ca), *extra],
                      prefix="podsolve-it-grpctls-")
    d.port = port
    wait_serving(d, port)
    return d


@pytest.fixture(scope="module")
def tls_daemon(pki):
    """A podsolved with --buildkit-listen tcp:// and mutual TLS (module-wide)."""
    d = start_tls_daemon(pki)
    yield d
    problem = _stop_daemon(d)
    assert problem is None, problem


def tls_channel(port, pki, cert="client"):
    """A grpcio channel over TLS trusting the test CA; with a client
    certificate unless cert is None."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{cert}-key.pem").read_bytes() if cert else None,
        certificate_chain=(pki / f"{cert}.pem").read_bytes() if cert else None)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[g.OWN_CONNECTION])


def health(port, pki, cert="client"):
    with tls_channel(port, pki, cert) as ch:
        return g.health_check(ch, timeout=20)


def serving(resp):
    return resp.status == g.pb("health").HealthCheckResponse.SERVING


def client_context(pki, cert="client", alpn=("h2",)):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}-key.pem"))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def read_until_closed(sock, timeout):
    """Everything the server sends until it closes (or resets) the connection."""
    sock.settimeout(lib.scaled(timeout))
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return data


def log_has(d, pattern):
    return re.search(pattern, d.log_tail(400000)) is not None


# ---- clients that are served ---------------------------------------------------

def test_a_client_with_a_certificate_signed_by_the_ca_is_served(tls_daemon, pki):
    """grpcio with the CA and a client certificate: Health answers SERVING,
    over TLS with ALPN h2 (the debug log names the client's CN)."""
    assert serving(health(tls_daemon.port, pki))
    assert lib.wait_for(lambda: log_has(tls_daemon, r"TLS: TLSv1\.[23], ALPN h2, client CN=client"), 10), \
        tls_daemon.log_tail()


def test_a_12_mib_request_crosses_the_tls_records(tls_daemon, pki):
    """A 12 MiB request (hundreds of TLS records, read in parts) reaches the
    server whole, and 64 calls at once on one connection all answer."""
    with tls_channel(tls_daemon.port, pki) as ch:
        assert g.unary_raw(ch, g.TRACE_EXPORT, os.urandom(12 * 1024 * 1024), timeout=60) == b""
        fn = ch.unary_unary(g.HEALTH_CHECK, request_serializer=None, response_deserializer=None)
        futures = [fn.future(b"", timeout=lib.scaled(60)) for _ in range(64)]
        assert all(f.result() == b"\x08\x01" for f in futures)  # status: SERVING


def test_a_client_offering_no_alpn_is_served(tls_daemon, pki):
    """ALPN is checked only when offered (as Go's TLS server): a client that
    offers none completes the handshake and then speaks HTTP/2 itself."""
    with socket.create_connection(("127.0.0.1", tls_daemon.port), timeout=lib.scaled(20)) as raw:
        with client_context(pki, alpn=None).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.selected_alpn_protocol() is None
            s.sendall(H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # empty SETTINGS
            head = s.recv(9)
            assert len(head) == 9 and head[3] == 0x04, head  # the server's SETTINGS frame


# ---- clients that are refused ------------------------------------------------------

def test_a_client_without_a_certificate_is_refused_and_the_daemon_serves_on(tls_daemon, pki):
    """No client certificate while --buildkit-tlscacert is given: the
    handshake fails (the call is UNAVAILABLE), the log says why, and the
    next client with a certificate is served."""
    with pytest.raises(grpc.RpcError) as e:
        health(tls_daemon.port, pki, cert=None)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert lib.wait_for(lambda: log_has(tls_daemon, r"TLS handshake failed: .*(did not return a certificate|"
                                                    r"certificate required)"), 10), tls_daemon.log_tail()
    assert serving(health(tls_daemon.port, pki))


def test_a_client_certificate_from_another_ca_is_refused(tls_daemon, pki):
    with pytest.raises(grpc.RpcError) as e:
        health(tls_daemon.port, pki, cert="rogue")
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert lib.wait_for(lambda: log_has(tls_daemon, r"TLS handshake failed: .*certificate verify failed"), 10), \
        tls_daemon.log_tail()
    assert serving(health(tls_daemon.port, pki))


def test_a_client_without_h2_among_its_alpn_protocols_is_refused(tls_daemon, pki):
    """ALPN http/1.1 only: no_application_protocol, as Go's server says."""
    with socket.create_connection(("127.0.0.1", tls_daemon.port), timeout=lib.scaled(20)) as raw:
        with pytest.raises(ssl.SSLError, match=r"(?i)no.application.protocol"):
            client_context(pki, alpn=("http/1.1",)).wrap_socket(raw, server_hostname="127.0.0.1")
    assert serving(health(tls_daemon.port, pki))


@pytest.mark.parametrize("what,payload", [
    ("plain h2c", H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
    ("garbage", bytes(range(256)) * 16),
])
def test_plain_h2c_and_garbage_get_no_http2_and_the_connection_closes(tls_daemon, pki, what, payload):
    """Not TLS: the handshake fails at the first record, the server closes
    the connection without a byte of HTTP/2 (at most a TLS alert record,
    which starts 0x15), and says so in its log."""
    with socket.create_connection(("127.0.0.1", tls_daemon.port), timeout=lib.scaled(20)) as s:
        s.sendall(payload)
        data = read_until_closed(s, 30)
    assert data == b"" or data[0] == 0x15, (what, data[:64])
    assert b"\x00\x00\x04" not in data[:3]
    assert log_has(tls_daemon, r"127\.0\.0\.1:\d+: TLS handshake failed"), tls_daemon.log_tail()
    assert serving(health(tls_daemon.port, pki))


def test_a_peer_that_says_nothing_is_dropped_after_the_handshake_deadline(pki):
    """--max-connections 2 and two peers that connect and send nothing: both
    slots are taken, a third connection is closed at once, and once the
    handshake deadline has passed the silent peers are gone and a real
    client is served again."""
    d = start_tls_daemon(pki, "--max-connections", "2")
    try:
        silent = [socket.create_connection(("127.0.0.1", d.port)) for _ in range(2)]
        try:
            assert lib.wait_for(lambda: len(re.findall(r"connection from 127\.0\.0\.1:\d+: TLS handshake",
                                                       d.log_tail(100000))) >= 2, 20), d.log_tail()
            with pytest.raises(grpc.RpcError):
                health(d.port, pki)
            assert log_has(d, r"too many connections \(at most 2 at once")
            for s in silent:
                assert read_until_closed(s, HANDSHAKE_S + 30) == b""
        finally:
            for s in silent:
                s.close()
        assert len(re.findall(r"TLS handshake: no handshake in time", d.log_tail(100000))) == 2, d.log_tail()
        assert lib.wait_for(lambda: _served(d, pki), 20), d.log_tail()
    finally:
        problem = _stop_daemon(d)
    assert problem is None, problem


def _served(d, pki):
    try:
        return serving(health(d.port, pki))
    except grpc.RpcError:
        return False


def test_sigterm_ends_a_handshake_under_way_and_the_daemon_exits_0(pki):
    """A peer sits in its handshake (connected, silent) when SIGTERM comes:
    the handshake ends at once ("the daemon is stopping"), the daemon exits
    0, and a served connection ends too."""
    d = start_tls_daemon(pki)
    try:
        ch = tls_channel(d.port, pki)
        assert serving(g.health_check(ch))
        silent = socket.create_connection(("127.0.0.1", d.port))
        assert lib.wait_for(lambda: len(re.findall(r"connection from 127\.0\.0\.1:\d+: TLS handshake",
                                                   d.log_tail(100000))) >= 2, 20), d.log_tail()
        status, timeout_msg = d.stop()
        silent.close()
        ch.close()
        assert timeout_msg is None and status == 0, (status, timeout_msg, d.log_tail())
        assert log_has(d, r"TLS handshake: the daemon is stopping"), d.log_tail()
    finally:
        problem = _stop_daemon(d)
    assert problem is None, problem


# ---- start-up ------------------------------------------------------------------------

def _start_fails(tmp_path, *flags):
    """Run podsolved with flags (and its own state) to its exit:
    (exit status, what it printed)."""
    d = lib.Daemon(tmp_path, flags)
    for p in (d.root, d.runroot, d.state, d.tmpdir):
        p.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(d.command() + ["--isolation", "chroot"], capture_output=True, text=True,
                       env=d.base_env(), timeout=lib.scaled(120), stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout + r.stderr


def test_tcp_without_tls_flags_is_refused_at_start(tmp_path):
    """Plain TCP is never served: the daemon exits 2 naming the flags to add."""
    status, out = _start_fails(tmp_path, "--buildkit-listen", f"tcp://127.0.0.1:{lib.free_port()}")
    assert status == 2, out
    assert "tcp:// is served only with TLS: give --buildkit-tlscert and --buildkit-tlskey" in out, out


def test_tls_flags_without_a_tcp_socket_are_warned_about(pki, tmp_path):
    """As buildkitd: unix sockets are never TLS; TLS flags with no tcp://
    socket to use them on start the daemon with a warning saying so."""
    sock = tmp_path / "bk.sock"
    d = _start_daemon(["--buildkit-listen", f"unix://{sock}", *tls_flags(pki)], prefix="podsolve-it-grpctls-")
    try:
        assert lib.wait_for(lambda: f"serving BuildKit's gRPC API on unix://{sock}" in d.log_tail(100000), 20)
        assert "--buildkit-tlscert: no --buildkit-listen tcp:// to use it on" in d.log_tail(100000)
        with g.listen_channel(str(sock)) as ch:
            assert serving(g.health_check(ch))
    finally:
        problem = _stop_daemon(d)
    assert problem is None, problem


@pytest.mark.parametrize("flags,message", [
    (lambda pki: ["--buildkit-tlscert", str(pki / "server.pem")],
     "--buildkit-tlscert and --buildkit-tlskey go together"),
    (lambda pki: ["--buildkit-tlscacert", str(pki / "ca.pem")],
     "--buildkit-tlscacert needs --buildkit-tlscert and --buildkit-tlskey"),
])
def test_incomplete_tls_flags_are_refused_at_start(tmp_path, pki, flags, message):
    status, out = _start_fails(tmp_path, "--buildkit-listen", f"tcp://127.0.0.1:{lib.free_port()}", *flags(pki))
    assert status == 2, out
    assert message in out, out


@pytest.mark.parametrize("cert,key,ca,message", [
    ("missing.pem", "server-key.pem", None, r"server certificate: open .*/missing\.pem: No such file"),
    ("server.pem", "missing-key.pem", None, r"server key: open .*/missing-key\.pem: No such file"),
    ("server.pem", "client-key.pem", None, r"server key .*/client-key\.pem does not belong to the server certificate"),
    ("server-key.pem", "server-key.pem", None, r"server certificate .*/server-key\.pem: .*no start line"),
    ("server.pem", "server.pem", None, r"server key .*/server\.pem: .*unencrypted PEM private key"),
    ("server.pem", "server-key.pem", "server-key.pem", r"client CA .*/server-key\.pem: no PEM certificate in it"),
    ("server.pem", "server-key.pem", "missing-ca.pem", r"client CA: open .*/missing-ca\.pem: No such file"),
])
def test_bad_tls_files_stop_the_daemon_at_start_naming_the_file(tmp_path, pki, cert, key, ca, message):
    """A missing file, a key of another certificate, a file of the wrong
    kind: exit 1 with a message that names the file, no socket left open."""
    port = lib.free_port()
    flags = ["--buildkit-listen", f"tcp://127.0.0.1:{port}", "--buildkit-tlscert", str(pki / cert),
             "--buildkit-tlskey", str(pki / key)]
    if ca:
        flags += ["--buildkit-tlscacert", str(pki / ca)]
    status, out = _start_fails(tmp_path, *flags)
    assert status == 1, out
    assert re.search(r"--buildkit-listen TLS: " + message, out), out
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
