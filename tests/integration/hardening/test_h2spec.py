"""h2spec (v2.2.1, built from the Go module proxy by scripts/get-go-clients)
against the HTTP/2 server podsolved runs for BuildKit's gRPC API, both ways
a client reaches it: prior-knowledge h2c on --buildkit-listen, and the
upgraded connection of `POST /grpc` on the main socket.  h2spec speaks TCP,
so a relay of ours forwards each of its connections to the unix socket (and
for /grpc first makes the HTTP/1.1 upgrade, as docker's client does).

Every test passes but one, which RELIABILITY.md explains: http2/5.1.1/2
(HEADERS on a stream id lower than one already used must be a connection
error).  nghttp2 ignores such a HEADERS on purpose — it cannot tell it
from a late frame of a stream it already closed — and podsolve keeps the
library's choice."""

import os
import socket
import subprocess
import tempfile
import threading
import xml.etree.ElementTree as ET

import pytest

import grpc_testlib as g
import podsolve_testlib as lib

# (package, test name) that may fail, and why (RELIABILITY.md, "h2spec")
ALLOWED = {
    ("http2/5.1.1", "Sends stream identifier that is numerically smaller than previous"):
        "nghttp2 ignores a HEADERS on a lower stream id rather than guess it is not a late frame",
}


@pytest.fixture(scope="module")
def h2spec():
    r = subprocess.run([str(lib.GET_GO_CLIENTS), "--only", "h2spec"], capture_output=True, text=True, timeout=1800)
    paths = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    if r.returncode != 0 or not os.access(paths.get("h2spec", ""), os.X_OK):
        if lib.go_toolchain() is None:
            pytest.skip("no Go toolchain to build h2spec (scripts/get-go-clients --only h2spec)")
        pytest.fail(f"scripts/get-go-clients --only h2spec failed:\n{r.stderr[-3000:]}", pytrace=False)
    return paths["h2spec"]


@pytest.fixture(scope="module")
def bk(tmp_path_factory):
    with lib.private_daemon("podsolve-it-h2spec-", buildkit_listen=True) as d:
        yield d


class Relay:
    """127.0.0.1:port -> a unix socket, one connection per connection; with
    `upgrade`, each first makes the `POST /grpc` upgrade to h2c (as the
    docker CLI does) before relaying."""

    def __init__(self, path, upgrade=False):
        self.path, self.upgrade = path, upgrade
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refused = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            if self.upgrade:
                up, head, rest = g.open_upgraded(self.path)
                if not head.startswith("HTTP/1.1 101"):
                    raise OSError(f"no upgrade: {head}")
                up.settimeout(None)
                conn.sendall(rest)  # the server's first HTTP/2 bytes, read with the head
            else:
                up = socket.socket(socket.AF_UNIX)
                up.connect(self.path)
        except OSError as e:
            self.refused.append(repr(e))
            conn.close()
            return
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=g._pump, args=(a, b), daemon=True).start()

    def close(self):
        self.listener.close()


def run_h2spec(h2spec, port):
    """-> ([(package, name)] passed, {(package, name): message} failed) from h2spec's JUnit report."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "h2spec.xml")
        r = subprocess.run([h2spec, "-h", "127.0.0.1", "-p", str(port), "-P", "/moby.buildkit.v1.Control/ListWorkers",
                            "-o", "5", "-j", report], capture_output=True, text=True, timeout=lib.scaled(600))
        assert os.path.exists(report), f"h2spec wrote no report ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr}"
        passed, failed = [], {}
        for case in ET.parse(report).getroot().iter("testcase"):
            key = (case.get("package"), case.get("classname"))
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is not None:
                failed[key] = (bad.text or "").strip()
            elif case.find("skipped") is None:
                passed.append(key)
        return passed, failed, r.stdout


@pytest.mark.parametrize("via", ["buildkit-listen", "grpc-upgrade"])
def test_h2spec_passes_against_the_grpc_server(h2spec, bk, via):
    relay = Relay(bk.buildkit_sock) if via == "buildkit-listen" else Relay(str(bk.sock), upgrade=True)
    try:
        passed, failed, out = run_h2spec(h2spec, relay.port)
    finally:
        relay.close()
    assert not relay.refused, relay.refused[:3]
    unexplained = {k: v for k, v in failed.items() if k not in ALLOWED}
    assert not unexplained, f"h2spec failures not explained in RELIABILITY.md: {unexplained}\n{out[-4000:]}"
    # the whole suite ran: generic, http2 and hpack sections
    assert len(passed) >= 140, (len(passed), failed)
    assert {p.split("/")[0] for p, _ in passed} == {"generic", "http2", "hpack"}
    assert bk.alive()
    with socket.socket(socket.AF_UNIX) as s:  # and the main socket still answers
        s.connect(str(bk.sock))
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 200")
