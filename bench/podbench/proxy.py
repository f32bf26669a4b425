"""A measuring unix-socket relay, put between a client and a daemon.

It forwards bytes untouched in both directions (HTTP/1.1, chunked bodies,
h2c upgrades alike) and records, for each ``POST .../build`` or
``POST .../solve`` request, the time from the request line's arrival to the
arrival of the first complete line of the response body (the first status
line).  Both instants are taken here, so the client's own start-up and
teardown are not counted.  It also counts the bytes in each direction.

bench/run uses it only for the first-status-line workload: build times and
bytes sent are measured without a relay in the way.
"""

import os
import re
import socket
import threading
import time

_BUILD_REQ = re.compile(rb"POST (?:/v[0-9.]+)?(?:/libpod)?/(build|solve)[?\s]")


class _ResponseWatcher:
    """Parses one HTTP response incrementally until the first body line."""

    def __init__(self):
        self.buf = b""
        self.headers_done = False
        self.chunked = False
        self.body = b""
        self.done = False
        self.status = None
        self.remaining = 0

    def feed(self, data):
        """Returns True when the first body line has just become complete."""
        if self.done:
            return False
        self.buf += data
        while not self.headers_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
            self.status = int(head.split(" ", 2)[1])
            if 100 <= self.status < 200 and self.status != 101:
                continue  # 100 Continue: the real response follows
            if self.status != 200:
                self.done = True
                return False
            self.headers_done = True
            self.chunked = "transfer-encoding: chunked" in head.lower()
        if self.chunked:
            self._dechunk()
        else:
            self.body += self.buf
            self.buf = b""
        if b"\n" in self.body.lstrip(b"\r\n"):
            self.done = True
            return True
        return False

    def _dechunk(self):
        # self.remaining: bytes left in the current chunk (0: expect a size line)
        while self.buf:
            if self.remaining == 0:
                eol = self.buf.find(b"\r\n")
                if eol < 0:
                    return
                line, self.buf = self.buf[:eol], self.buf[eol + 2:]
                if not line:
                    continue  # the CRLF that ends a chunk's data
                self.remaining = int(line.split(b";")[0], 16)
                if self.remaining == 0:
                    self.buf = b""
                    return
            take = self.buf[:self.remaining]
            self.body += take
            self.buf = self.buf[len(take):]
            self.remaining -= len(take)


class _Conn:
    def __init__(self, proxy, client):
        self.proxy = proxy
        self.client = client
        self.t_req = None
        self.path = None
        self.watch = None
        self.scan_tail = b""

    def run(self):
        try:
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(self.proxy.upstream)
        except OSError:
            self.client.close()
            return
        self.up = up
        t = threading.Thread(target=self._pump, args=(up, self.client, False), daemon=True)
        t.start()
        self._pump(self.client, up, True)
        t.join()
        for s in (up, self.client):
            try:
                s.close()
            except OSError:
                pass

    def _pump(self, src, dst, c2s):
        try:
            while True:
                data = src.recv(262144)
                if not data:
                    break
                now = time.perf_counter()
                if c2s:
                    self._on_c2s(data, now)
                else:
                    self._on_s2c(data, now)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _on_c2s(self, data, now):
        with self.proxy.lock:
            self.proxy.bytes_c2s += len(data)
        if self.t_req is None:
            hay = self.scan_tail + data
            m = _BUILD_REQ.search(hay)
            if m:
                self.t_req = now
                self.path = m.group(1).decode()
                self.watch = _ResponseWatcher()
            else:
                self.scan_tail = hay[-64:]

    def _on_s2c(self, data, now):
        with self.proxy.lock:
            self.proxy.bytes_s2c += len(data)
        w = self.watch
        if w is not None and w.feed(data):
            with self.proxy.lock:
                self.proxy.first_lines.append((self.path, now - self.t_req))


class MeasuringProxy:
    """``with MeasuringProxy(listen, upstream) as p: ...; p.bytes_c2s``"""

    def __init__(self, listen_path, upstream_path):
        self.listen_path = listen_path
        self.upstream = upstream_path
        self.lock = threading.Lock()
        self.bytes_c2s = 0
        self.bytes_s2c = 0
        self.first_lines = []  # (build|solve, seconds)
        self.sock = None

    def reset(self):
        with self.lock:
            self.bytes_c2s = 0
            self.bytes_s2c = 0
            self.first_lines = []

    def __enter__(self):
        if os.path.exists(self.listen_path):
            os.unlink(self.listen_path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.listen_path)
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=_Conn(self, c).run, daemon=True).start()

    def __exit__(self, *exc):
        try:
            self.sock.close()
        finally:
            try:
                os.unlink(self.listen_path)
            except OSError:
                pass
