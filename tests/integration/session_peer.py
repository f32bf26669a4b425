"""A small BuildKit-session *server* for tests: what the docker CLI runs on
its end of `POST /session` (buildkit-protocols.md §2, §3.3-3.6).

    peer = SessionPeer(daemon.sock, {"context": files, "dockerfile": files})
    peer.start()                      # POST /session, read the 101, serve
    ... POST /v1.41/build?version=2&remote=client-session&session=<peer.uuid>
    peer.close()

After the 101 the roles are reversed: the daemon is the HTTP/2 + gRPC client,
this peer is the HTTP/2 server (h2, client_side=False) and answers

  /grpc.health.v1.Health/Check         -> HealthCheckResponse{status: SERVING}
  /moby.filesync.v1.FileSync/DiffCopy  -> the fsutil *sender* for the files of
                                          the `dir-name` it names
  anything else                        -> UNIMPLEMENTED (trailers only)

The fsutil Packet / Stat protobufs are encoded and decoded by hand (the field
numbers of §3.3/§3.4), so a test sees exactly what crossed the wire: every
REQ id, FIN and ERR the daemon sent, and whether it reset a call.

`mode` makes the peer misbehave on the *target* transfer (by default the main
context transfer: dir-name "context" without followpaths):

  bad_path          a STAT for "../evil"
  abs_path          a STAT for "/etc/evil"
  symlink_parent    a symlink "zlink" -> /etc, then a file "zlink/evil" under it
  unrequested_data  after the daemon's REQs: half of the biggest file, then a
                    DATA for an id the daemon never requested (a directory's)
  close_mid_file    half of the biggest file, then the socket is closed
  err_packet        half of the biggest file, then ERR "boom" + grpc-status 2
  stall_mid_file    half of the biggest file, then silence (the daemon holds
                    a temporary until the build is cancelled)
  never_answer      response headers for the call, then nothing at all
  garbage           raw non-HTTP/2 bytes right after the 101 (no target needed)
  garbage_mid       raw non-HTTP/2 bytes when the target call arrives
  refuse_stream     RST_STREAM(REFUSED_STREAM) on the target call, as a
                    server over its stream limit does

`max_streams` advertises SETTINGS_MAX_CONCURRENT_STREAMS (h2 then treats a
stream beyond it as a protocol error: `too_many_streams` records that);
`max_open_streams` is the most streams the daemon ever had open at once.
`hold_first_transfer` (seconds) makes the peer sit on the first DiffCopy
call: its listing is sent when a second stream opens or the time is up, so
a daemon that would open another stream meanwhile gets the chance.

Files are given per dir-name as {path: content}, {path: (content, perm)},
{path: (content, perm, mtime_ns)} or {path: Symlink(target)} (content str or bytes; the default mtime is
the peer's `mtime_ns`, by default the time it was made); parent directories
are synthesised.
"""

import fnmatch
import secrets as _secrets_mod
import select
import socket
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
DIFFCOPY = "/moby.filesync.v1.FileSync/DiffCopy"
GET_SECRET = "/moby.buildkit.secrets.v1.Secrets/GetSecret"
CREDENTIALS = "/moby.filesync.v1.Auth/Credentials"
DEFAULT_METHODS = (HEALTH_CHECK, DIFFCOPY)

MODES = ("bad_path", "abs_path", "symlink_parent", "unrequested_data", "close_mid_file", "err_packet", "stall_mid_file",
         "never_answer", "garbage", "garbage_mid", "refuse_stream")
HALF_FILE_MODES = ("unrequested_data", "close_mid_file", "err_packet", "stall_mid_file")

# PacketType (§3.3)
STAT, REQ, DATA, FIN, ERR = 0, 1, 2, 3, 4
PACKET_NAMES = {STAT: "STAT", REQ: "REQ", DATA: "DATA", FIN: "FIN", ERR: "ERR"}

GO_MODE_DIR = 0x80000000
GO_MODE_SYMLINK = 0x08000000
CHUNK = 32 * 1024           # fsutil's sender chunk size
GARBAGE = b"this is not HTTP/2 at all \x00\xff\xfe\r\n" * 16


# --------------------------------------------------------------------------
# protobuf, by hand (§0)


def varint(n):
    if n < 0:
        n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, value):
    return b"" if value == 0 else varint(num << 3) + varint(value)


def field_bytes(num, data, keep_empty=False):
    if isinstance(data, str):
        data = data.encode()
    if not data and not keep_empty:
        return b""
    return varint(num << 3 | 2) + varint(len(data)) + data


def encode_stat(path, mode, size=0, mtime=0, uid=0, gid=0, linkname=""):
    return (field_bytes(1, path) + field_varint(2, mode) + field_varint(3, uid) + field_varint(4, gid)
            + field_varint(5, size) + field_varint(6, mtime) + field_bytes(7, linkname))


def encode_packet(ptype, stat=None, pid=0, data=b""):
    out = field_varint(1, ptype)
    if stat is not None:
        out += field_bytes(2, stat, keep_empty=True)
    return out + field_varint(3, pid) + field_bytes(4, data)


def read_varint(buf, i):
    shift = n = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def decode_fields(buf):
    """{field number: [values]} (ints for varints, bytes for length-delimited)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            v, i = bytes(buf[i:i + n]), i + n
        elif wt == 1:
            v, i = bytes(buf[i:i + 8]), i + 8
        elif wt == 5:
            v, i = bytes(buf[i:i + 4]), i + 4
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(num, []).append(v)
    return out


def decode_packet(buf):
    """-> (type, id, data, stat-bytes or None)"""
    f = decode_fields(buf)
    return (f.get(1, [0])[-1], f.get(3, [0])[-1], f.get(4, [b""])[-1], f.get(2, [None])[-1])


def decode_stat(buf):
    f = decode_fields(buf)
    return {"path": f.get(1, [b""])[-1].decode(), "mode": f.get(2, [0])[-1], "uid": f.get(3, [0])[-1],
            "gid": f.get(4, [0])[-1], "size": f.get(5, [0])[-1], "modTime": f.get(6, [0])[-1],
            "linkname": f.get(7, [b""])[-1].decode()}


def grpc_frame(msg):
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


# --------------------------------------------------------------------------
# the file listing a sender walks


class Symlink:
    def __init__(self, target):
        self.target = target

    def __repr__(self):
        return f"Symlink({self.target!r})"


class Entry:
    def __init__(self, path, is_dir, content=b"", perm=0o644, mtime=0, linkname=""):
        self.path = path
        self.is_dir = is_dir
        self.content = content
        self.perm = perm
        self.mtime = mtime
        self.linkname = linkname    # a symlink when set

    @property
    def requestable(self):
        return not self.is_dir and not self.linkname

    def stat(self):
        if self.is_dir:
            return encode_stat(self.path, GO_MODE_DIR | self.perm, 0, self.mtime)
        if self.linkname:
            return encode_stat(self.path, GO_MODE_SYMLINK | 0o777, len(self.linkname.encode()), self.mtime,
                               linkname=self.linkname)
        return encode_stat(self.path, self.perm, len(self.content), self.mtime)


def file_spec(spec, mtime_ns=0):
    """content | (content,) | (content, perm) | (content, perm, mtime_ns) -> (bytes, perm, mtime)"""
    if not isinstance(spec, tuple):
        spec = (spec,)
    content = spec[0].encode() if isinstance(spec[0], str) else spec[0]
    perm = spec[1] if len(spec) > 1 else 0o644
    mtime = spec[2] if len(spec) > 2 else mtime_ns
    return content, perm, mtime


def build_entries(files, mtime_ns):
    """{path: content | (content, perm)} -> [Entry] in fsutil walk order:
    depth first, names of one directory in byte order, a directory before
    its children (sorting by the list of path components does exactly that)."""
    entries = {}
    for path, spec in files.items():
        parts = path.split("/")
        for k in range(1, len(parts)):
            d = "/".join(parts[:k])
            entries.setdefault(d, Entry(d, True, perm=0o755, mtime=mtime_ns))
        if isinstance(spec, Symlink):
            entries[path] = Entry(path, False, mtime=mtime_ns, linkname=spec.target)
            continue
        content, perm, mtime = file_spec(spec, mtime_ns)
        entries[path] = Entry(path, False, content, perm, mtime)
    return sorted(entries.values(), key=lambda e: [p.encode() for p in e.path.split("/")])


def select_entries(entries, follow, excludes):
    """What fsutil.Send walks for the metadata of one call (minimal):
    followpaths keep only those paths (and their parents / children);
    exclude-patterns drop fnmatch matches (no '!' re-includes)."""
    out = []
    for e in entries:
        if follow:
            if not any(e.path == f or e.path.startswith(f + "/") or f.startswith(e.path + "/") for f in follow):
                continue
        if not e.is_dir and any(fnmatch.fnmatchcase(e.path, p) or fnmatch.fnmatchcase(e.path, p.rstrip("/") + "/*")
                                for p in excludes):
            continue
        out.append(e)
    return out


# --------------------------------------------------------------------------
# one gRPC call the daemon made


class Call:
    def __init__(self, stream_id, path, md):
        self.stream_id = stream_id
        self.path = path
        self.md = md                    # {key: [values]}
        self.inbuf = b""
        self.outbuf = b""
        self.trailers = None            # sent once outbuf is drained
        self.ended_by_daemon = False    # END_STREAM received
        self.reset_by_daemon = None     # RST_STREAM error code
        self.closed = False             # we sent trailers (or gave up)
        self.started = time.monotonic()
        # DiffCopy
        self.entries = []
        self.files = {}                 # id -> Entry (requestable)
        self.reqs = []                  # REQ ids in order
        self.fin_from_daemon = False
        self.err_from_daemon = None
        self.packets_in = []            # (type name, id, data) as received
        self.is_target = False
        self.misbehaved = False

    @property
    def dir_name(self):
        return (self.md.get("dir-name") or [""])[0]

    @property
    def followpaths(self):
        return self.md.get("followpaths", [])

    @property
    def kind(self):
        """dockerfile | dockerignore | context | other"""
        if self.path != DIFFCOPY:
            return "other"
        if self.dir_name == "context":
            return "dockerignore" if self.followpaths else "context"
        return self.dir_name

    def __repr__(self):
        return (f"<Call {self.stream_id} {self.path} {self.kind} reqs={self.reqs} fin={self.fin_from_daemon} "
                f"err={self.err_from_daemon!r} reset={self.reset_by_daemon} closed={self.closed}>")


# --------------------------------------------------------------------------
# the peer


class SessionPeer:
    def __init__(self, sock_path, dirs, mode=None, target="context", uuid=None, shared_key=None,
                 methods=DEFAULT_METHODS, mtime_ns=None, name="ctx", secrets=None, credentials=None,
                 max_streams=None, hold_first_transfer=0.0):
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.sock_path = str(sock_path)
        self.dirs = dirs
        self.mode = mode
        self.target = target
        self.uuid = uuid or "peer" + _secrets_mod.token_hex(10)
        self.shared_key = shared_key or "key" + _secrets_mod.token_hex(16)
        self.methods = list(methods)
        # GetSecret: {id: bytes}; a missing id is NOT_FOUND, as the docker CLI answers
        self.secrets = secrets
        if secrets is not None and GET_SECRET not in self.methods:
            self.methods.append(GET_SECRET)
        self.secret_requests = []
        # Auth/Credentials: {host: (user, secret)}; other hosts get empty answers (anonymous)
        self.credentials = credentials
        if credentials is not None and CREDENTIALS not in self.methods:
            self.methods.append(CREDENTIALS)
        self.credential_requests = []
        # like files on a disk: a fresh mtime unless the test fixes one
        self.mtime_ns = mtime_ns if mtime_ns is not None else time.time_ns()
        self.name = name
        self.max_streams = max_streams
        self.hold_first_transfer = hold_first_transfer
        self.max_open_streams = 0
        self.too_many_streams = False
        self._held = None               # (call, deadline) of the held first transfer
        self._held_done = False
        self.calls = []
        self.log = []                   # human-readable trace, for failure messages
        self.error = None               # an exception in the serving thread
        self.eof = threading.Event()    # the daemon closed the connection
        self.target_seen = threading.Event()
        self.target_over = threading.Event()  # the target call was ended, reset or ERR'd by the daemon
        self._stop = threading.Event()
        self._sock = None
        self._thread = None
        self._conn = None
        self._streams = {}
        self._lock = threading.Lock()

    # ---- lifecycle ------------------------------------------------------------

    def start(self, timeout=5):
        """POST /session, read the 101, start serving in a thread."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.sock_path)
        lines = ["POST /session HTTP/1.1", "Host: docker", "User-Agent: Docker-Client/20.10.27 (linux)",
                 "Content-Length: 0", "Connection: Upgrade", "Upgrade: h2c",
                 f"X-Docker-Expose-Session-Uuid: {self.uuid}",
                 f"X-Docker-Expose-Session-Name: {self.name}",
                 f"X-Docker-Expose-Session-Sharedkey: {self.shared_key}"]
        lines += [f"X-Docker-Expose-Session-Grpc-Method: {m}" for m in self.methods]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                s.close()
                raise AssertionError(f"POST /session: connection closed before an answer: {data[:300]!r}")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            s.close()
            raise AssertionError(f"POST /session: no 101: {data[:500]!r}")
        self._sock = s
        self._trace(f"101 for session {self.uuid}")
        self._thread = threading.Thread(target=self._run, args=(rest,), name=f"peer-{self.uuid}", daemon=True)
        self._thread.start()
        return self

    def close(self):
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(10)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # ---- what the tests look at ---------------------------------------------

    def transfers(self, kind=None):
        with self._lock:
            return [c for c in self.calls if c.path == DIFFCOPY and (kind is None or c.kind == kind)]

    def target_call(self):
        t = [c for c in self.transfers() if c.is_target]
        return t[0] if t else None

    def trace(self):
        return "\n".join(self.log[-80:])

    def _trace(self, msg):
        self.log.append(f"{time.monotonic():.3f} {msg}")

    # ---- the serving loop --------------------------------------------------

    def _run(self, early):
        try:
            self._serve(early)
        except Exception as e:  # noqa: BLE001 - reported to the test
            if not self._stop.is_set():
                self.error = e
                self._trace(f"peer error: {e!r}")
        finally:
            self.eof.set()
            self.target_over.set()  # nothing more can happen on any call

    def _serve(self, early):
        s = self._sock
        s.settimeout(None)
        if self.mode == "garbage":
            s.sendall(GARBAGE)
            self._trace("sent garbage after the 101")
            self._drain_until_eof()
            return
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                        validate_inbound_headers=False)
        self._conn = h2.connection.H2Connection(config=cfg)
        if self.max_streams is not None:
            self._conn.local_settings = h2.settings.Settings(
                client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        self._conn.initiate_connection()
        self._send_pending()
        if early:
            self._feed(early)
        while not self._stop.is_set():
            r, _, _ = select.select([s], [], [], 0.1)
            if self._held is not None and time.monotonic() >= self._held[1]:
                self._release_held("time is up")
            if not r:
                continue
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._trace("daemon closed the connection")
                return
            if not self._feed(data):
                return

    def _drain_until_eof(self):
        s = self._sock
        while not self._stop.is_set():
            r, _, _ = select.select([s], [], [], 0.1)
            if r:
                try:
                    if not s.recv(65536):
                        self._trace("daemon closed the connection")
                        return
                except OSError:
                    return

    def _send_pending(self):
        out = self._conn.data_to_send()
        if out:
            self._sock.sendall(out)

    def _feed(self, data):
        """Give bytes to h2 and act on its events; False = stop serving."""
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            if isinstance(e, h2.exceptions.TooManyStreamsError):
                self.too_many_streams = True
            self._trace(f"h2 protocol error: {e!r}")
            self._send_pending()
            return False
        for ev in events:
            if not self._on_event(ev):
                return False
        self._flush()
        self._send_pending()
        return True

    def _on_event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            hdrs = {}
            for k, v in ev.headers:
                hdrs.setdefault(k, []).append(v)
            call = Call(ev.stream_id, hdrs.get(":path", [""])[0], hdrs)
            with self._lock:
                self.calls.append(call)
            self._streams[ev.stream_id] = call
            self.max_open_streams = max(self.max_open_streams, self._conn.open_inbound_streams)
            if self._held is not None and self._conn.open_inbound_streams > 1:
                self._release_held(f"stream {ev.stream_id} opened meanwhile")
            self._trace(f"call {ev.stream_id} {call.path} md={ {k: v for k, v in hdrs.items() if k[0] != ':'} }")
            return self._on_call(call)
        if isinstance(ev, h2.events.DataReceived):
            if ev.flow_controlled_length:
                try:
                    self._conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    pass
            call = self._streams.get(ev.stream_id)
            if call is not None:
                call.inbuf += ev.data
                return self._on_messages(call)
            return True
        if isinstance(ev, h2.events.StreamEnded):
            call = self._streams.get(ev.stream_id)
            if call is not None:
                call.ended_by_daemon = True
                self._trace(f"call {ev.stream_id}: daemon half-closed")
                if call.path == HEALTH_CHECK:
                    self._answer_unary(call, b"\x08\x01")
                elif call.path == GET_SECRET and self.secrets is not None:
                    self._answer_secret(call)
                elif call.path == CREDENTIALS and self.credentials is not None:
                    host = decode_fields(getattr(call, "unary_request", b"")).get(1, [b""])[-1].decode()
                    self.credential_requests.append(host)
                    user, secret = self.credentials.get(host, ("", ""))
                    self._answer_unary(call, field_bytes(1, user.encode()) + field_bytes(2, secret.encode()))
                if call.is_target and call.closed:
                    self.target_over.set()
            return True
        if isinstance(ev, h2.events.StreamReset):
            call = self._streams.get(ev.stream_id)
            if call is not None:
                call.reset_by_daemon = ev.error_code
                call.closed = True
                call.outbuf = b""
                self._trace(f"call {ev.stream_id}: reset by the daemon ({ev.error_code})")
                if call.is_target:
                    self.target_over.set()
            return True
        if isinstance(ev, h2.events.ConnectionTerminated):
            self._trace(f"GOAWAY from the daemon ({ev.error_code}, {ev.additional_data!r})")
            return True
        return True

    # ---- calls -----------------------------------------------------------------

    def _is_target(self, call):
        return call.kind == self.target and self.target_call() is None

    def _on_call(self, call):
        if call.path == HEALTH_CHECK or (call.path == GET_SECRET and self.secrets is not None) \
                or (call.path == CREDENTIALS and self.credentials is not None):
            return True  # answered when the request is complete
        if call.path != DIFFCOPY:
            self._conn.send_headers(call.stream_id, [(":status", "200"), ("content-type", "application/grpc"),
                                                     ("grpc-status", "12"),
                                                     ("grpc-message", f"unknown method {call.path}")],
                                    end_stream=True)
            call.closed = True
            return True
        call.is_target = self.mode is not None and self._is_target(call)
        if call.is_target:
            self.target_seen.set()
        if call.is_target and self.mode == "refuse_stream":
            self._conn.reset_stream(call.stream_id, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
            self._trace(f"call {call.stream_id}: refused (REFUSED_STREAM)")
            call.closed = call.misbehaved = True
            self.target_over.set()
            return True
        files = self.dirs.get(call.dir_name)
        if files is None:
            self._conn.send_headers(call.stream_id, [(":status", "200"), ("content-type", "application/grpc"),
                                                     ("grpc-status", "5"),
                                                     ("grpc-message", f'no access allowed to dir "{call.dir_name}"')],
                                    end_stream=True)
            call.closed = True
            return True
        self._conn.send_headers(call.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
        if self.hold_first_transfer and not self._held_done:
            self._held_done = True
            self._held = (call, time.monotonic() + self.hold_first_transfer)
            self._trace(f"call {call.stream_id}: holding the listing")
            return True
        return self._send_listing(call, files)

    def _release_held(self, why):
        call, _ = self._held
        self._held = None
        self._trace(f"call {call.stream_id}: released ({why})")
        if not call.closed:
            self._send_listing(call, self.dirs.get(call.dir_name))
            self._flush()
            self._send_pending()

    def _send_listing(self, call, files):
        if call.is_target and self.mode == "garbage_mid":
            self._send_pending()
            self._sock.sendall(GARBAGE)
            self._trace("sent garbage on the target call")
            call.misbehaved = True
            self._drain_until_eof()
            return False
        if call.is_target and self.mode == "never_answer":
            self._trace(f"call {call.stream_id}: never answering")
            call.misbehaved = True
            return True
        entries = select_entries(build_entries(files, self.mtime_ns), call.followpaths,
                                 call.md.get("exclude-patterns", []))
        listing = []
        if call.is_target and self.mode == "symlink_parent":
            entries = entries + [Entry("zlink", False, mtime=self.mtime_ns, linkname="/etc"),
                                 Entry("zlink/evil", False, b"evil", 0o644, self.mtime_ns)]
            call.misbehaved = True
        for i, e in enumerate(entries):
            listing.append(encode_packet(STAT, stat=e.stat()))
            if e.requestable:
                call.files[i] = e
        call.entries = entries
        if call.is_target and self.mode in ("bad_path", "abs_path"):
            evil = "../evil" if self.mode == "bad_path" else "/etc/evil"
            # after the first (valid) entry: the daemon has started a listing
            listing.insert(min(1, len(listing)), encode_packet(STAT, stat=encode_stat(evil, 0o644, 4, self.mtime_ns)))
            call.misbehaved = True
        listing.append(encode_packet(STAT))  # end of listing: a STAT without a stat
        for p in listing:
            self._queue(call, p)
        return True

    def _on_messages(self, call):
        while len(call.inbuf) >= 5:
            n = int.from_bytes(call.inbuf[1:5], "big")
            if len(call.inbuf) < 5 + n:
                break
            msg, call.inbuf = call.inbuf[5:5 + n], call.inbuf[5 + n:]
            if call.path in (GET_SECRET, CREDENTIALS):
                call.unary_request = msg
            if call.path != DIFFCOPY or call.closed:
                continue
            ptype, pid, data, _ = decode_packet(msg)
            call.packets_in.append((PACKET_NAMES.get(ptype, str(ptype)), pid, data))
            if ptype == REQ:
                call.reqs.append(pid)
                if not self._on_req(call, pid):
                    return False
            elif ptype == FIN:
                call.fin_from_daemon = True
                self._trace(f"call {call.stream_id}: FIN from the daemon after REQs {call.reqs}")
                self._queue(call, encode_packet(FIN))
                call.trailers = [("grpc-status", "0")]
            elif ptype == ERR:
                call.err_from_daemon = data.decode("utf-8", "replace")
                self._trace(f"call {call.stream_id}: ERR from the daemon: {call.err_from_daemon}")
                call.trailers = [("grpc-status", "2"),
                                 ("grpc-message", "error from receiver: " + call.err_from_daemon[:200])]
                if call.is_target:
                    self.target_over.set()
            else:
                self._trace(f"call {call.stream_id}: unexpected packet {ptype} from the daemon")
        return True

    def _biggest_file(self, call):
        ids = [i for i in call.files if i in call.reqs]
        return max(ids, key=lambda i: len(call.files[i].content)) if ids else None

    def _on_req(self, call, pid):
        e = call.files.get(pid)
        if e is None:
            # fsutil: "invalid file id N"
            self._trace(f"call {call.stream_id}: REQ for invalid id {pid}")
            self._queue(call, encode_packet(ERR, data=f"invalid file id {pid}"))
            call.trailers = [("grpc-status", "2"), ("grpc-message", f"invalid file id {pid}")]
            return True
        if call.is_target and self.mode in HALF_FILE_MODES:
            # wait for every REQ of the listing (the daemon sends them together
            # after the end of the listing), then misbehave on the biggest file
            wanted = [i for i in call.files]
            if call.misbehaved or len(set(call.reqs)) < len(wanted):
                return True
            call.misbehaved = True
            big = self._biggest_file(call)
            content = call.files[big].content
            half = content[:len(content) // 2]
            for k in range(0, len(half), CHUNK):
                self._queue(call, encode_packet(DATA, pid=big, data=half[k:k + CHUNK]))
            if self.mode == "unrequested_data":
                dirs = [i for i, e in enumerate(call.entries) if e.is_dir]
                bogus = dirs[0] if dirs else len(call.entries) + 100
                self._trace(f"call {call.stream_id}: half of id {big}, then DATA for unrequested id {bogus}")
                self._queue(call, encode_packet(DATA, pid=bogus, data=b"not asked for"))
            elif self.mode == "err_packet":
                self._trace(f"call {call.stream_id}: half of id {big}, then ERR boom")
                self._queue(call, encode_packet(ERR, data=b"boom"))
                call.trailers = [("grpc-status", "2"), ("grpc-message", "boom")]
            elif self.mode == "stall_mid_file":
                self._trace(f"call {call.stream_id}: half of id {big}, then silence")
            else:
                self._trace(f"call {call.stream_id}: half of id {big}, then closing the socket")
                self._flush()
                self._send_pending()
                time.sleep(0.2)  # let the daemon write the half into its temporary
                self._sock.shutdown(socket.SHUT_RDWR)
                return False
            return True
        for k in range(0, len(e.content), CHUNK):
            self._queue(call, encode_packet(DATA, pid=pid, data=e.content[k:k + CHUNK]))
        self._queue(call, encode_packet(DATA, pid=pid))
        return True

    def _answer_secret(self, call):
        """GetSecretRequest{ID = 1} -> GetSecretResponse{data = 1}, or NOT_FOUND."""
        msg = getattr(call, "unary_request", b"")
        sid = decode_fields(msg).get(1, [b""])[-1].decode()
        self.secret_requests.append(sid)
        if sid not in self.secrets:
            self._conn.send_headers(call.stream_id, [(":status", "200"), ("content-type", "application/grpc"),
                                                     ("grpc-status", "5"),
                                                     ("grpc-message", f"secret {sid} not found")], end_stream=True)
            call.closed = True
            return
        data = self.secrets[sid]
        self._answer_unary(call, field_bytes(1, data.encode() if isinstance(data, str) else data))

    def _answer_unary(self, call, msg):
        if call.closed:
            return
        self._conn.send_headers(call.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
        self._queue(call, msg)
        call.trailers = [("grpc-status", "0")]

    # ---- output with flow control ------------------------------------------

    def _queue(self, call, msg):
        if not call.closed:
            call.outbuf += grpc_frame(msg)

    def _flush(self):
        for call in list(self._streams.values()):
            if call.closed:
                continue
            try:
                while call.outbuf:
                    window = self._conn.local_flow_control_window(call.stream_id)
                    n = min(window, self._conn.max_outbound_frame_size, len(call.outbuf))
                    if n <= 0:
                        break
                    self._conn.send_data(call.stream_id, call.outbuf[:n])
                    call.outbuf = call.outbuf[n:]
                if not call.outbuf and call.trailers is not None:
                    self._conn.send_headers(call.stream_id, call.trailers, end_stream=True)
                    call.closed = True
                    self._trace(f"call {call.stream_id}: trailers {call.trailers}")
                    if call.is_target and call.ended_by_daemon:
                        self.target_over.set()
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
                self._trace(f"call {call.stream_id}: cannot send: {e!r}")
                call.closed = True
                call.outbuf = b""
