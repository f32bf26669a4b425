"""Shared helpers for the gRPC tests (tests/integration/endpoints/test_grpc_*.py).

A REAL gRPC client (Debian's python3-grpcio) talks to podsolved two ways:

* over ``--buildkit-listen unix:///PATH``: ``listen_channel(path)`` -- grpcio
  dials ``unix:`` targets itself, HTTP/2 with prior knowledge;
* over ``POST /grpc`` on the API socket: grpcio cannot do the HTTP/1.1
  upgrade, so ``UpgradeRelay`` listens on a unix socket of its own and, for
  each connection grpcio opens, sends the upgrade request to the daemon,
  checks the 101 and then splices bytes both ways.  ``upgrade_channel(daemon)``
  returns a channel through a relay (closed with the channel).

Messages come from our own schema/*.proto, compiled with protoc into a
temporary directory at test time (never committed): ``pb("health")`` is
``health_pb2``.  Calls go through ``channel.unary_unary`` / ``unary_stream``
with the message classes (python3-grpcio ships no code generator for stubs):
``unary(channel, "/grpc.health.v1.Health/Check", req, health_pb2.HealthCheckResponse)``.
"""

import atexit
import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import grpc

import podsolve_testlib as lib

SCHEMA = Path(__file__).resolve().parents[2] / "schema"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MAX_MESSAGE = 16 * 1024 * 1024   # session/session_limits.h PS_GRPC_SERVER_MAX_MESSAGE

_gen_dir = None
_gen_lock = threading.Lock()


def _generate():
    global _gen_dir
    with _gen_lock:
        if _gen_dir is None:
            d = tempfile.mkdtemp(prefix="podsolve-grpc-pb-")
            atexit.register(shutil.rmtree, d, True)
            protos = sorted(p.name for p in SCHEMA.glob("*.proto"))
            r = subprocess.run(["protoc", f"--proto_path={SCHEMA}", f"--python_out={d}", *protos],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"protoc failed: {r.stderr}")
            sys.path.insert(0, d)
            _gen_dir = d
    return _gen_dir


def pb(name):
    """The generated module of schema/<name>.proto (e.g. pb("control"))."""
    _generate()
    return importlib.import_module(f"{name}_pb2")


# grpcio shares connections between channels to the same target unless told
# not to: a test that opens N channels means N connections.
OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)


def listen_channel(path, options=()):
    """A channel (with a connection of its own) to a --buildkit-listen unix socket."""
    return grpc.insecure_channel(f"unix:{path}", options=[OWN_CONNECTION, *options])


def upgrade_request(path="/grpc", upgrade="h2c", connection="Upgrade"):
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", "User-Agent: Go-http-client/1.1", "Content-Length: 0"]
    if connection:
        lines.append(f"Connection: {connection}")
    if upgrade:
        lines.append(f"Upgrade: {upgrade}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def open_upgraded(daemon_sock, path="/grpc", upgrade="h2c", timeout=10):
    """Connect to the daemon's API socket and do the /grpc upgrade.

    Returns (socket, head, rest): head is the HTTP/1.1 answer's head,
    rest what followed it (HTTP/2 bytes after a 101)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(lib.scaled(timeout))
    s.connect(str(daemon_sock))
    s.sendall(upgrade_request(path, upgrade))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return s, head.decode("latin-1"), rest


def _pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s in (dst, src):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class UpgradeRelay:
    """A unix socket grpcio connects to; each connection is upgraded on the
    daemon's API socket (POST /grpc, Upgrade: h2c) and then spliced."""

    def __init__(self, daemon_sock, path="/grpc"):
        self.daemon_sock = str(daemon_sock)
        self.api_path = path
        self.dir = tempfile.mkdtemp(prefix="podsolve-grpc-relay-")
        self.path = os.path.join(self.dir, "relay.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.sockets = []
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        try:
            up, head, rest = open_upgraded(self.daemon_sock, self.api_path)
        except OSError:
            client.close()
            return
        if not head.startswith("HTTP/1.1 101"):
            client.close()
            up.close()
            return
        up.settimeout(None)
        self.sockets += [client, up]
        if rest:
            client.sendall(rest)
        threading.Thread(target=_pump, args=(up, client), daemon=True).start()
        _pump(client, up)

    def close(self):
        self.closed = True
        try:
            self.listener.close()
        except OSError:
            pass
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


class _RelayChannel:
    """A grpc channel whose close() also closes its relay."""

    def __init__(self, relay, options):
        self.relay = relay
        self.channel = grpc.insecure_channel(f"unix:{relay.path}", options=[OWN_CONNECTION, *options])

    def __getattr__(self, name):
        return getattr(self.channel, name)

    def close(self):
        self.channel.close()
        self.relay.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def upgrade_channel(daemon, path="/grpc", options=()):
    """A channel to the daemon's POST /grpc (through an UpgradeRelay)."""
    return _RelayChannel(UpgradeRelay(daemon.sock, path), options)


def unary(channel, method, request, response_class, timeout=30, metadata=None):
    """Call a unary method; raises grpc.RpcError on a non-OK status."""
    fn = channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=response_class.FromString)
    return fn(request, timeout=lib.scaled(timeout), metadata=metadata)


def unary_raw(channel, method, payload, timeout=30, metadata=None):
    """Call a unary method with raw bytes both ways."""
    fn = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return fn(payload, timeout=lib.scaled(timeout), metadata=metadata)


def unary_stream(channel, method, request, response_class, timeout=60, metadata=None):
    """Call a server-streaming method; returns the response iterator."""
    fn = channel.unary_stream(method, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=response_class.FromString)
    return fn(request, timeout=lib.scaled(timeout), metadata=metadata)


def health_check(channel, timeout=30):
    h = pb("health")
    return unary(channel, HEALTH_CHECK, h.HealthCheckRequest(), h.HealthCheckResponse, timeout=timeout)


def buildkit_socket(daemon_tmp, name="buildkitd.sock"):
    """A path for --buildkit-listen inside a daemon's temporary directory."""
    return Path(daemon_tmp) / name


class SessionTunnel:
    """A Control.Session call (grpchijack) whose far end is a
    session_peer.SessionPeer on a socketpair: the call's BytesMessages carry
    what the peer's socket sends and receives, so the peer serves HTTP/2 to
    the daemon exactly as after POST /session.

        peer = SessionPeer(daemon.sock, {"context": files})
        tunnel = SessionTunnel(channel, pb("control"), peer)  # pb: anything with .BytesMessage, or a namespace with .control
        ... Control.Solve with Session=peer.uuid ...
        tunnel.close()
    """

    def __init__(self, channel, pb_mod, peer):
        self.msg = getattr(pb_mod, "control", pb_mod).BytesMessage
        self.peer = peer
        self.mine, theirs = socket.socketpair()
        peer.start_on_socket(theirs)
        self._closed = threading.Event()
        stream = channel.stream_stream("/moby.buildkit.v1.Control/Session",
                                       request_serializer=self.msg.SerializeToString,
                                       response_deserializer=self.msg.FromString)
        self.call = stream(self._requests(), metadata=peer.metadata())
        self._reader = threading.Thread(target=self._to_peer, daemon=True)
        self._reader.start()

    def _requests(self):
        while True:
            try:
                data = self.mine.recv(65536)
            except OSError:
                data = b""
            if not data:
                return
            yield self.msg(data=data)

    def _to_peer(self):
        try:
            for m in self.call:
                self.mine.sendall(m.data)
        except (grpc.RpcError, OSError):
            # the call ended, or our end of the socket pair was closed first
            # (close() shuts it down): either way the stream is over
            pass
        finally:
            self._closed.set()
            try:
                self.mine.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        try:
            self.mine.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.call.cancel()
        self._closed.wait(lib.scaled(10))
        self.peer.close()
        self.mine.close()
