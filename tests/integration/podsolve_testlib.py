"""Helpers for the podsolved integration tests.

Everything here talks to a real podsolved over its unix socket and inspects
real containers-storage with the real buildah binary: no mocks.

Main pieces:
  Daemon            one running podsolved (start, HTTP over AF_UNIX, storage
                    helpers, teardown that checks a clean exit)
  BuildResult       a finished /build stream, split into the JSONMessage shapes
  make_context / tar_context / tar_entries
                    build contexts from dicts, tarred with python's tarfile
  ContextServer     a 127.0.0.1 HTTP server for remote= contexts (tarballs and
                    git repositories over git's smart HTTP protocol)
"""

import base64
import contextlib
import hashlib
import http.client
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
MAKE_BASE_IMAGE = FIXTURES / "make-base-image"
GET_DOCKER_CLI = REPO_ROOT / "scripts" / "get-docker-cli"
DOCKER_CLI_CACHE = Path("/var/cache/podsolve-test/docker-20.10")
GET_GO_CLIENTS = REPO_ROOT / "scripts" / "get-go-clients"
MAKE_DOCKERFILE_FRONTEND = FIXTURES / "make-dockerfile-frontend"
MAKE_EXAMPLE_FRONTEND = FIXTURES / "make-example-frontend"
# The modern docker CLI (28.x) the BuildKit clients plug into.
DOCKER_CLI_MODERN = Path(os.environ.get("PODSOLVE_DOCKER_CLI_MODERN") or "/usr/local/bin/docker")

BASE_IMAGE = "localhost/busybox:latest"
COMPAT_BUILD = "/v1.41/build"
LIBPOD_BUILD = "/v4.3.1/libpod/build"

HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX12 = re.compile(r"^[0-9a-f]{12}$")


# The fixtures shared with other harnesses (llbgen.py, session_peer.py) import
# as top-level modules from every test folder.
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))


# PODSOLVE_TEST_SLOW (a float, default 1) multiplies every timeout and
# wall-clock bound in the tests: set it to 2 or 3 on a loaded machine (a
# 2-core CI shared with other jobs) instead of editing bounds.  Helpers here
# scale the timeouts they are given (wait_for, Daemon.start/stop/request/
# stream/build/buildah); a test scales its own bounds with scaled().
SLOW = float(os.environ.get("PODSOLVE_TEST_SLOW") or 1)


def scaled(seconds):
    """A timeout or wall-clock bound, stretched by PODSOLVE_TEST_SLOW."""
    return seconds * SLOW


def wait_for(pred, timeout, step=0.1):
    """Poll pred() until it returns something true or timeout (scaled)
    seconds pass; returns pred()'s last value (falsy on timeout), so
    `assert wait_for(...), why` reads like the condition."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def running(token):
    """`pgrep -af token`: command lines of live processes naming token."""
    r = subprocess.run(["pgrep", "-af", token], capture_output=True, text=True)
    return [l for l in r.stdout.splitlines() if "pgrep" not in l]


def runc_containers_below(top, root="/run/runc"):
    """runc's records (`runc list`: id, status, pid, bundle) of the containers
    whose bundle lies below `top`: buildah's RUN containers have their
    bundle in its $TMPDIR, which every test daemon has in its own tree, so
    other tests' and Podman's containers are left out."""
    r = subprocess.run(["runc", "--root", root, "list", "--format", "json"], capture_output=True, text=True)
    out = r.stdout.strip()
    top = os.path.realpath(str(top))
    return [c for c in (json.loads(out) if out and out != "null" else [])
            if os.path.realpath(c.get("bundle", "")).startswith(top + "/")]


def stop_process(proc, timeout=20):
    """SIGTERM a podsolved started by hand and return its exit status
    (waits timeout seconds, scaled; TimeoutExpired if it does not exit)."""
    proc.terminate()
    return proc.wait(scaled(timeout))


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pki(d):
    """Certificates made with the openssl CLI in directory d (a Path), for
    the TLS tests: ca.pem (+ ca-key.pem), server.pem / server-key.pem
    (SAN 127.0.0.1 and localhost, serverAuth), client.pem / client-key.pem
    (clientAuth) both signed by the CA, and rogue.pem / rogue-key.pem, a
    self-signed client certificate from no CA we trust.  Returns d."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=podsolve test CA")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}-key.pem", "-out", f"{who}.csr",
                "-subj", f"/CN={who}")
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                "-out", f"{who}.pem", "-days", "2", "-extfile", f"{who}.ext")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue-key.pem", "-out", "rogue.pem",
            "-days", "2", "-subj", "/CN=rogue")
    return d


def image_ref(tag):
    """The name a bare tag gets in storage (Docker's default registry)."""
    return f"docker.io/library/{tag}:latest"


def run(cmd, env, cwd=None, timeout=180, input=None):
    """Run a client command (docker, podman-remote, docker-compose, curl ...)
    -> CompletedProcess with text stdout/stderr and .output = both."""
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=scaled(timeout), input=input)
    r.output = r.stdout + r.stderr
    return r


def explain(r, daemon, log=None):
    """Failure text for a client command run with run(): its exit status,
    output, and the daemon's log (during the command when log, a LogMark-like
    object with .text(), is given; else the tail)."""
    text = f"exit {r.returncode}\n--- stdout:\n{r.stdout[-4000:]}\n--- stderr:\n{r.stderr[-5000:]}"
    if log is not None:
        return text + f"\n--- podsolved log during the command:\n{log.text()[-5000:]}"
    return text + f"\n--- podsolved log tail:\n{daemon.log_tail(4000)}"


def podsolved_path():
    return os.environ.get("PODSOLVED") or str(REPO_ROOT / "server" / "podsolved")


def tail(path, nbytes=6000):
    """Last bytes of a log file, for failure messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - nbytes))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"


# --------------------------------------------------------------------------
# HTTP over a unix socket


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client connection whose transport is an AF_UNIX stream socket."""

    def __init__(self, sock_path, timeout=120):
        # Docker's clients use "docker" / "d" / "localhost" as Host; any works.
        super().__init__("docker", timeout=scaled(timeout))
        self.sock_path = str(sock_path)

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.sock_path)
        self.sock = s


class JSONStream:
    """Iterator over the JSON objects of a streaming response, yielded as
    soon as each one is complete on the wire.

    Objects may be separated by '\\n' (Podman), '\\r\\n' or nothing at all;
    a body that is not a sequence of JSON objects raises ValueError naming
    the offending bytes.  `raw` keeps every byte received, `close()` drops
    the connection (used to simulate a client that goes away)."""

    def __init__(self, conn, resp):
        self.conn = conn
        self.resp = resp
        self.raw = b""
        self._buf = ""
        self._eof = False
        self._dec = json.JSONDecoder()
        self._bytes_pending = b""

    def __iter__(self):
        return self

    def _next_object(self):
        s = self._buf.lstrip(" \t\r\n")
        if not s:
            self._buf = ""
            return None
        try:
            obj, end = self._dec.raw_decode(s)
        except json.JSONDecodeError:
            if self._eof:
                raise ValueError(f"stream body is not a sequence of JSON objects near: {s[:300]!r}")
            self._buf = s
            return None
        self._buf = s[end:]
        return obj

    def __next__(self):
        while True:
            obj = self._next_object()
            if obj is not None:
                return obj
            if self._eof:
                if self._buf.strip():
                    raise ValueError(f"trailing garbage in stream: {self._buf[:300]!r}")
                raise StopIteration
            data = self.resp.read1(65536) if self.resp is not None else b""
            if not data:
                self._eof = True
                data = b""
            self.raw += data
            chunk = self._bytes_pending + data
            try:
                text = chunk.decode("utf-8")
                self._bytes_pending = b""
            except UnicodeDecodeError as e:
                # a multi-byte character split across reads: keep its tail
                if e.start >= len(chunk) - 3 and not self._eof:
                    text = chunk[: e.start].decode("utf-8")
                    self._bytes_pending = chunk[e.start:]
                else:
                    raise ValueError(f"stream is not UTF-8 near {chunk[max(0, e.start - 40):e.start + 40]!r}")
            self._buf += text

    def close(self):
        """Drop the connection the way a killed client would."""
        try:
            if self.conn.sock is not None:
                try:
                    self.conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            self.conn.close()


def _encode_query(params):
    if params is None:
        return ""
    if isinstance(params, str):
        return params
    if isinstance(params, dict):
        params = list(params.items())
    return urllib.parse.urlencode(params, doseq=True)


def with_query(path, params):
    q = _encode_query(params)
    return f"{path}?{q}" if q else path


class BuildResult:
    """A whole /build response, decoded."""

    def __init__(self, status, headers, events, raw, body=b""):
        self.status = status
        self.headers = headers
        self.events = events        # every JSON object, in order
        self.raw = raw              # raw (de-chunked) body bytes
        self.body = body            # for non-200 answers: the full body

    @property
    def streams(self):
        return [e["stream"] for e in self.events if isinstance(e, dict) and "stream" in e]

    @property
    def text(self):
        return "".join(self.streams)

    @property
    def error(self):
        errs = [e for e in self.events if isinstance(e, dict) and ("error" in e or "errorDetail" in e)]
        return errs[-1] if errs else None

    @property
    def aux_ids(self):
        return [e["aux"]["ID"] for e in self.events
                if isinstance(e, dict) and isinstance(e.get("aux"), dict) and "ID" in e["aux"]]

    @property
    def bare_ids(self):
        """Stream lines that are nothing but a 64-hex image ID (buildah's last line)."""
        return [s.strip() for s in self.streams if HEX64.match(s.strip())]

    @property
    def final_id(self):
        ids = self.bare_ids
        return ids[-1] if ids else None

    def describe(self):
        lines = [f"HTTP {self.status}"]
        for e in self.events[-40:]:
            lines.append("  " + json.dumps(e)[:400])
        if self.body and not self.events:
            lines.append("  body: " + self.body[:1000].decode("utf-8", "replace"))
        return "\n".join(lines)


# --------------------------------------------------------------------------
# The daemon


class Daemon:
    """A podsolved process with its own socket, storage and state dir."""

    def __init__(self, tmp, extra_args=(), name="podsolved"):
        self.tmp = Path(tmp)
        self.name = name
        self.sock = self.tmp / "podsolve.sock"
        self.root = self.tmp / "root"
        self.runroot = self.tmp / "runroot"
        self.state = self.tmp / "state"
        self.tmpdir = self.tmp / "tmp"
        self.log_path = self.tmp / "podsolved.log"
        self.storage_args = ["--root", str(self.root), "--runroot", str(self.runroot),
                             "--storage-driver", "overlay"]
        self.extra_args = list(extra_args)
        self.proc = None
        self._log = None

    # ---- lifecycle --------------------------------------------------------

    def command(self):
        # Never the machine's own Podman unless a test asks for an upstream;
        # extra args "--upstream default" mean: give no --upstream at all
        # (podsolved's own default).
        extra = list(self.extra_args)
        if extra[-2:] == ["--upstream", "default"]:
            extra, upstream = extra[:-2], []
        elif any(a.startswith("--upstream") or a == "--spawn-upstream" for a in extra):
            upstream = []
        else:
            upstream = ["--upstream", "none"]
        return [podsolved_path(),
                "--listen", f"unix://{self.sock}",
                "--root", str(self.root),
                "--runroot", str(self.runroot),
                "--storage-driver", "overlay",
                "--state-dir", str(self.state),
                "--log-level", "debug"] + upstream + extra

    def base_env(self):
        env = dict(os.environ)
        env["TMPDIR"] = str(self.tmpdir)
        return env

    def prepare_storage(self):
        for d in (self.root, self.runroot, self.state, self.tmpdir):
            d.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([str(MAKE_BASE_IMAGE), str(self.root), str(self.runroot), "overlay", BASE_IMAGE],
                           env=self.base_env(), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"make-base-image failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")

    def start(self, timeout=30):
        binary = podsolved_path()
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"podsolved binary not found or not executable: {binary} "
                               f"(build it, or set PODSOLVED=/path/to/podsolved)")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, env=self.base_env(), start_new_session=True,
                                     # CI machines start jobs with umask 000: the daemon must not
                                     # depend on the umask it inherits, so every test starts it so.
                                     umask=0)
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"podsolved exited with status {self.proc.returncode} during startup; "
                                   f"log tail:\n{tail(self.log_path)}")
            if self.sock.exists():
                try:
                    status, _, _ = self.request("GET", "/_ping", timeout=2)
                    if status == 200:
                        return self
                    last_err = f"GET /_ping answered {status}"
                except (OSError, AssertionError) as e:
                    last_err = repr(e)[:300]
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"podsolved did not answer GET /_ping with 200 within {timeout}s "
                           f"(last: {last_err}); log tail:\n{tail(self.log_path)}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(scaled(10))

    def stop(self, timeout=20):
        """SIGTERM and wait; returns (exit status, None) or (None, message) on timeout."""
        if self.proc is None:
            return 0, None
        if self.proc.poll() is not None:
            return self.proc.returncode, None
        self.proc.send_signal(signal.SIGTERM)
        timeout = scaled(timeout)
        try:
            return self.proc.wait(timeout), None
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(scaled(10))
            return None, f"podsolved did not exit within {timeout}s of SIGTERM (killed)"
        finally:
            if self._log:
                self._log.close()
                self._log = None

    def cleanup_storage(self, remove_tmp=True):
        """Remove every container and image, unmount leftovers, delete the tree."""
        env = self.base_env()
        if self.root.exists():
            subprocess.run(["buildah", *self.storage_args, "rm", "--all"], env=env, capture_output=True)
            subprocess.run(["buildah", *self.storage_args, "rmi", "--all", "--force"], env=env,
                           capture_output=True)
        unmount_below(self.tmp)
        if remove_tmp and os.environ.get("PODSOLVE_KEEP_TMP") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, nbytes=6000):
        return tail(self.log_path, nbytes)

    def descendants(self):
        """(pid, cmdline) of every live process below the daemon."""
        if not self.alive():
            return []
        children = {}
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/stat") as f:
                    st = f.read()
                ppid = int(st[st.rindex(")") + 2:].split()[1])
                children.setdefault(ppid, []).append(int(p))
            except (OSError, ValueError):
                continue
        out, todo = [], [self.proc.pid]
        while todo:
            for c in children.get(todo.pop(), []):
                try:
                    with open(f"/proc/{c}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
                except OSError:
                    cmd = "?"
                out.append((c, cmd))
                todo.append(c)
        return out

    # ---- HTTP --------------------------------------------------------------

    def connection(self, timeout=120):
        return UnixHTTPConnection(self.sock, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=120, chunked=False):
        """One request on a fresh connection -> (status, headers, body bytes).

        If the daemon answers early and closes while we are still uploading
        (e.g. 413), the upload error is swallowed and the answer returned."""
        conn = self.connection(timeout)
        try:
            try:
                if chunked:
                    conn.request(method, path, body=_chunks(body), headers=headers or {},
                                 encode_chunked=True)
                else:
                    conn.request(method, path, body=body, headers=headers or {})
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                raise AssertionError(f"{method} {path}: the daemon closed the connection without an HTTP "
                                     f"answer ({e!r}); log tail:\n{self.log_tail(3000)}") from None
            data = resp.read()
            return resp.status, resp.headers, data
        finally:
            conn.close()

    def stream(self, method, path, body=None, headers=None, timeout=300, chunked=False):
        """Start a streaming request -> (status, headers, JSONStream).

        For a non-2xx answer the iterator yields the parsed error body."""
        conn = self.connection(timeout)
        try:
            if chunked:
                conn.request(method, path, body=_chunks(body), headers=headers or {}, encode_chunked=True)
            else:
                conn.request(method, path, body=body, headers=headers or {})
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            resp = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            conn.close()
            raise AssertionError(f"{method} {path}: the daemon closed the connection without an HTTP "
                                 f"answer ({e!r}); log tail:\n{self.log_tail(3000)}") from None
        return resp.status, resp.headers, JSONStream(conn, resp)

    def build(self, context=None, params=None, endpoint=COMPAT_BUILD, headers=None, body=None,
              chunked=False, timeout=300):
        """POST a build and read the whole answer.

        context: dict for make_context/tar_context, or a directory; body:
        raw bytes (overrides context).  params: dict / list of pairs / str."""
        if body is None:
            body = tar_context(context) if context is not None else b""
        hdrs = {"Content-Type": "application/x-tar"}
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v is not None}   # None = do not send
        status, rh, it = self.stream("POST", with_query(endpoint, params), body, hdrs, timeout=timeout,
                                     chunked=chunked)
        events = []
        try:
            if status == 200:
                for ev in it:
                    events.append(ev)
                return BuildResult(status, rh, events, it.raw)
            raw = it.resp.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            return BuildResult(status, rh, [parsed] if parsed is not None else [], raw, body=raw)
        finally:
            it.close()

    def env(self):
        """Environment for client programs pointed at this daemon."""
        env = dict(os.environ)
        env["DOCKER_HOST"] = f"unix://{self.sock}"
        env["CONTAINER_HOST"] = f"unix://{self.sock}"
        env["DOCKER_CONFIG"] = str(self.tmp / "docker-config")
        env.pop("DOCKER_CONTEXT", None)
        env.pop("DOCKER_TLS_VERIFY", None)
        env.pop("DOCKER_CERT_PATH", None)
        return env

    # ---- storage inspection --------------------------------------------------

    def buildah(self, *args, check=True, timeout=120):
        r = subprocess.run(["buildah", *self.storage_args, *args], env=self.base_env(), capture_output=True,
                           text=True, timeout=scaled(timeout))
        if check and r.returncode != 0:
            raise AssertionError(f"buildah {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def image_exists(self, name):
        return self.buildah("inspect", "--type", "image", name, check=False).returncode == 0

    def image_inspect(self, name):
        return json.loads(self.buildah("inspect", "--type", "image", name).stdout)

    def image_id(self, name):
        return self.image_inspect(name)["FromImageID"]

    def image_labels(self, name):
        return self.image_inspect(name)["OCIv1"]["config"].get("Labels") or {}

    def image_manifest_type(self, name):
        """mediaType of the stored manifest: OCI or Docker v2s2."""
        return json.loads(self.image_inspect(name)["Manifest"]).get("mediaType")

    def working_containers(self):
        out = self.buildah("containers", "--all", "--json").stdout.strip()
        return json.loads(out) if out and out != "null" else []

    def _with_mounted(self, image, fn):
        onbuild = self.buildah("inspect", "--type", "image", "--format", "{{len .Docker.Config.OnBuild}}",
                               image).stdout.strip()
        if onbuild not in ("", "0"):
            # `buildah from` would run the ONBUILD triggers: mount the image itself
            podman = ["podman", *self.storage_args]
            r = subprocess.run(podman + ["image", "mount", image], env=self.base_env(), capture_output=True,
                               text=True, timeout=scaled(60))
            assert r.returncode == 0, f"podman image mount {image}: {r.stderr}"
            try:
                return fn(Path(r.stdout.strip()))
            finally:
                subprocess.run(podman + ["image", "unmount", image], env=self.base_env(), capture_output=True,
                               timeout=scaled(60))
        ctr = self.buildah("from", "--pull=never", "--quiet", image).stdout.strip()
        try:
            mnt = self.buildah("mount", ctr).stdout.strip()
            try:
                return fn(Path(mnt))
            finally:
                self.buildah("umount", ctr, check=False)
        finally:
            self.buildah("rm", ctr, check=False)

    def image_file(self, image, path):
        """Bytes of a file inside an image (FileNotFoundError if absent)."""
        def read(mnt):
            p = mnt / path.lstrip("/")
            if p.is_symlink():
                raise AssertionError(f"{path} in {image} is a symlink; refusing to follow it on the host")
            return p.read_bytes()
        return self._with_mounted(image, read)

    def image_paths(self, image, *paths):
        """{path: True/False} for whether each path exists in the image."""
        return self._with_mounted(image, lambda mnt: {p: os.path.lexists(mnt / p.lstrip("/")) for p in paths})

    def image_has_file(self, image, path):
        return self.image_paths(image, path)[path]

    def image_stat(self, image, *paths):
        """{path: os.stat_result} of entries inside an image (not followed)."""
        return self._with_mounted(image, lambda mnt: {p: os.lstat(mnt / p.lstrip("/")) for p in paths})


def _chunks(body, size=8192):
    if body is None:
        return iter(())
    if isinstance(body, (bytes, bytearray)):
        return (bytes(body[i:i + size]) for i in range(0, len(body), size))
    return body


def unmount_below(top):
    """umount -l every mount point at or below `top`, deepest first."""
    top = os.path.realpath(str(top))
    points = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 5:
                    continue
                mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                if mp == top or mp.startswith(top + "/"):
                    points.append(mp)
    except OSError:
        return
    for mp in sorted(set(points), key=lambda p: p.count("/"), reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


def new_tmp_dir(prefix="podsolve-it-"):
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))



def stream_vertexes(lines):
    """The vertexes of a /solve NDJSON stream (parsed lines): the newest
    copy of each, by digest, in first-seen order."""
    out = {}
    for line in lines:
        for v in (line.get("status") or {}).get("vertexes") or []:
            out[v["digest"]] = {**out.get(v["digest"], {}), **v}
    return list(out.values())

def start_private_daemon(extra_args=(), prefix="podsolve-it-"):
    """A started podsolved on storage of its own (a failed start leaves
    nothing running); the caller stops it."""
    d = Daemon(new_tmp_dir(prefix), list(extra_args))
    try:
        d.prepare_storage()
        d.start(timeout=30)
    except Exception:
        d.kill()
        d.cleanup_storage(remove_tmp=False)
        raise
    return d


@contextlib.contextmanager
def private_daemon(prefix, extra_args=(), buildkit_listen=False, start_env=None):
    """A podsolved on storage of its own, for a module's fixture: started,
    yielded, then stopped (it must exit 0) and wiped.  With buildkit_listen
    it also serves --buildkit-listen on a unix socket: .buildkit_sock is its
    path, .buildkit_addr the address buildctl --addr takes.  start_env:
    environment variables the daemon starts with (this process's own are
    left as they were)."""
    sockdir = tempfile.mkdtemp(prefix=prefix.replace("podsolve-it-", "podsolve-bk-")) if buildkit_listen else None
    args = list(extra_args)
    if sockdir:
        args += ["--buildkit-listen", f"unix://{sockdir}/buildkitd.sock"]
    saved = {k: os.environ.get(k) for k in (start_env or {})}
    try:
        os.environ.update(start_env or {})
        d = start_private_daemon(args, prefix)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if sockdir:
        d.buildkit_sock = f"{sockdir}/buildkitd.sock"
        d.buildkit_addr = f"unix://{d.buildkit_sock}"
    try:
        yield d
    finally:
        status, timeout_msg = d.stop(timeout=20)
        d.cleanup_storage()
        if sockdir:
            shutil.rmtree(sockdir, ignore_errors=True)
    assert timeout_msg is None and status == 0, f"podsolved stopped badly: {status} {timeout_msg}\n{d.log_tail()}"


# --------------------------------------------------------------------------
# Build contexts


def make_context(dest, files):
    """Write {relpath: content | (content, mode)} under `dest`; str content is UTF-8.
    A value of ("symlink", target) makes a symlink.  Returns `dest` as a Path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for rel, spec in files.items():
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, tuple) and spec and spec[0] == "symlink":
            os.symlink(spec[1], p)
            continue
        content, mode = (spec if isinstance(spec, tuple) else (spec, 0o644))
        if isinstance(content, str):
            content = content.encode()
        p.write_bytes(content)
        os.chmod(p, mode)
    return dest


def tar_context(context, compression=None):
    """Tar a context given as a dict (see make_context) or a directory path.
    compression: None, "gz", "bz2" or "xz".  Returns the archive bytes."""
    if isinstance(context, dict):
        with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
            make_context(d, context)
            return tar_context(d, compression)
    buf = io.BytesIO()
    mode = "w:" + compression if compression else "w"
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tf:
        root = Path(context)
        for p in sorted(root.rglob("*")):
            tf.add(str(p), arcname=str(p.relative_to(root)), recursive=False)
    return buf.getvalue()


def tar_entries(entries):
    """Tar hand-made entries, for hostile archives.

    entries: list of (name, kind, payload): kind "file" (payload bytes/str),
    "dir", "symlink" (payload = target) or "hardlink" (payload = target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, kind, payload in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = int(time.time())
            if kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                ti.size = len(data)
                ti.mode = 0o644
                tf.addfile(ti, io.BytesIO(data))
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = payload
                tf.addfile(ti)
            elif kind == "hardlink":
                ti.type = tarfile.LNKTYPE
                ti.linkname = payload
                tf.addfile(ti)
            else:
                raise ValueError(kind)
    return buf.getvalue()


def containerfile(*lines):
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# remote= contexts: a local HTTP server (tarballs + git smart HTTP)


class _ContextHandler(http.server.SimpleHTTPRequestHandler):
    server_version = "podsolve-test-ctx/1"

    def __init__(self, request, client_address, server):
        super().__init__(request, client_address, server, directory=server.root)

    def log_message(self, fmt, *args):
        self.server.requests.append(f"{self.command} {self.path}")

    def _git_backend(self):
        # git's *smart* HTTP protocol: buildah fetches with --depth=1, which the
        # dumb protocol (plain files + update-server-info) cannot serve.
        u = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        env = dict(os.environ, GIT_PROJECT_ROOT=self.server.root, GIT_HTTP_EXPORT_ALL="1",
                   PATH_INFO=urllib.parse.unquote(u.path), QUERY_STRING=u.query,
                   REQUEST_METHOD=self.command, CONTENT_TYPE=self.headers.get("Content-Type", ""),
                   CONTENT_LENGTH=str(len(body)), REMOTE_ADDR="127.0.0.1",
                   HTTP_CONTENT_ENCODING=self.headers.get("Content-Encoding", ""),
                   GIT_PROTOCOL=self.headers.get("Git-Protocol", ""))
        p = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        head, sep, out = p.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, out = p.stdout.partition(b"\n\n")
        status, hdrs = 200, []
        for line in head.decode("latin-1").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.split()[0])
            elif k:
                hdrs.append((k, v.strip()))
        self.send_response(status)
        for k, v in hdrs:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):
        if ".git/" in self.path:
            return self._git_backend()
        return super().do_GET()

    def do_POST(self):
        if ".git/" in self.path:
            return self._git_backend()
        self.send_error(405)


class ContextServer:
    """Serves files under `root` on http://127.0.0.1:<port>/ from a thread."""

    def __init__(self, root):
        self.root = str(root)
        Path(self.root).mkdir(parents=True, exist_ok=True)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ContextHandler)
        self.httpd.root = self.root
        self.httpd.requests = []
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self):
        return self.httpd.requests

    def url(self, rel):
        return f"http://127.0.0.1:{self.port}/{rel.lstrip('/')}"

    def add_tarball(self, name, files, compression="gz"):
        (Path(self.root) / name).write_bytes(tar_context(files, compression))
        return self.url(name)

    def add_git_repo(self, name, files):
        """A bare repo `name` (ending in .git) whose one commit holds `files`."""
        assert name.endswith(".git")
        with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
            make_context(work, files)
            git = ["git", "-c", "user.name=podsolve-tests", "-c", "user.email=tests@podsolve.invalid",
                   "-c", "init.defaultBranch=main"]
            for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "context"]):
                subprocess.run(git + args, cwd=work, check=True, capture_output=True)
            dest = Path(self.root) / name
            subprocess.run(["git", "clone", "-q", "--bare", work, str(dest)], check=True, capture_output=True)
            subprocess.run(["git", "update-server-info"], cwd=dest, check=True, capture_output=True)
        return self.url(name)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def b64url_json(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode()


def multipart(fields, files):
    """A multipart/form-data body -> (bytes, content type).  fields: name ->
    bytes (sent as application/json); files: name -> bytes (application/x-tar)."""
    boundary = "podsolve" + os.urandom(8).hex()
    out = []
    for name, data in list(fields.items()) + list(files.items()):
        ctype = "application/json" if name in fields else "application/x-tar"
        fname = "" if name in fields else f'; filename="{name}.tar"'
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{fname}\r\n'
                   f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------------------
# The daemon still works


HEALTH_CONTEXT = {
    "Containerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo healthy > /health.txt"),
}


def assert_daemon_builds(d, tag="podsolve-health"):
    """The daemon is alive, answers /_ping and still completes a good build."""
    assert d.alive(), f"podsolved died; log tail:\n{d.log_tail()}"
    status, _, body = d.request("GET", "/_ping")
    assert (status, body) == (200, b"OK")
    r = d.build(HEALTH_CONTEXT, {"t": tag, "dockerfile": "Containerfile"})
    assert r.status == 200 and r.error is None, r.describe()
    assert d.image_file(f"docker.io/library/{tag}:latest", "/health.txt") == b"healthy\n"


REGISTRY_MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
REGISTRY_USER, REGISTRY_PASSWORD = "podsolve", "s3cret-pw"


@contextlib.contextmanager
def running_registry(**kw):
    """A started Registry(**kw), stopped at the end; the test is skipped
    when Debian's docker-registry (or htpasswd, for auth=True) is missing."""
    import pytest
    if shutil.which("docker-registry") is None or (kw.get("auth") and shutil.which("htpasswd") is None):
        pytest.skip("docker-registry (and htpasswd for an auth registry, apache2-utils) are needed")
    r = Registry(**kw)
    try:
        yield r
    finally:
        r.stop()


class Registry:
    """A real docker-registry (Debian's distribution 2.8) on 127.0.0.1, plain
    HTTP; auth=True: htpasswd basic auth with REGISTRY_USER/REGISTRY_PASSWORD;
    address=IP: listening on that (non-loopback) address instead."""

    def __init__(self, auth=False, address="127.0.0.1"):
        self.tmp = Path(tempfile.mkdtemp(prefix="podsolve-e2e-reg-", dir="/var/tmp"))
        self.port = free_port()
        self.host = f"{address}:{self.port}"
        self.auth = auth
        cfg = [
            "version: 0.1",
            "log:",
            "  level: info",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.tmp / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.host}",
        ]
        if auth:
            ht = subprocess.run(["htpasswd", "-Bbn", REGISTRY_USER, REGISTRY_PASSWORD], capture_output=True, text=True,
                                check=True)
            (self.tmp / "htpasswd").write_text(ht.stdout)
            cfg += ["auth:", "  htpasswd:", "    realm: r", f"    path: {self.tmp / 'htpasswd'}"]
        (self.tmp / "config.yml").write_text("\n".join(cfg) + "\n")
        self.log_path = self.tmp / "registry.log"
        self._log = open(self.log_path, "ab")
        self.start()

    def start(self):
        """(Re)start the registry on the same address and storage."""
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.tmp / "config.yml")],
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     start_new_session=True)
        deadline = time.monotonic() + scaled(20)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited ({self.proc.returncode}):\n{tail(self.log_path)}")
            try:
                status, _, _ = self.get("/v2/")
                if status in (200, 401):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.host}:\n{tail(self.log_path)}")

    def kill(self):
        """SIGKILL the registry (a crash: no upload is finished or cleaned up)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(scaled(10))

    def get(self, path, headers=None, creds=None, method="GET"):
        req = urllib.request.Request(f"http://{self.host}{path}", headers=dict(headers or {}), method=method)
        if creds:
            tok = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {tok}")
        try:
            with urllib.request.urlopen(req, timeout=scaled(10)) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def manifest(self, repo, tag, creds=None):
        return self.get(f"/v2/{repo}/manifests/{tag}", {"Accept": REGISTRY_MANIFEST_ACCEPT}, creds)

    def put_blob(self, repo, data):
        """Upload `data` as a blob of repo (monolithic upload) -> its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, headers, body = self.get(f"/v2/{repo}/blobs/uploads/", method="POST")
        assert status == 202, (status, body)
        location = headers["Location"]
        if location.startswith("/"):
            location = f"http://{self.host}{location}"
        sep = "&" if "?" in location else "?"
        req = urllib.request.Request(f"{location}{sep}digest={digest}", data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=scaled(10)) as r:
            assert r.status == 201, r.status
        return digest

    def put_manifest(self, repo, tag, manifest, media_type):
        """PUT a hand-made manifest (a dict) as repo:tag -> its digest."""
        body = json.dumps(manifest).encode()
        req = urllib.request.Request(f"http://{self.host}/v2/{repo}/manifests/{tag}", data=body, method="PUT",
                                     headers={"Content-Type": media_type})
        with urllib.request.urlopen(req, timeout=scaled(10)) as r:
            assert r.status == 201, r.status
            return r.headers["Docker-Content-Digest"]

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(scaled(10))
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(scaled(10))
        self._log.close()
        if os.environ.get("PODSOLVE_KEEP_TMP") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)


class GoClients:
    """The real BuildKit clients, built by scripts/get-go-clients: docker
    buildx and docker compose as plugins of the docker 28 CLI in a private
    DOCKER_CONFIG (never ~/.docker), and buildctl.

    .docker, .buildx, .compose, .buildctl  paths of the binaries
    .docker_config                         the private DOCKER_CONFIG (cli-plugins/ inside)
    env(daemon)                            environment for them, pointed at daemon
    """

    def __init__(self, docker, paths, docker_config):
        self.docker = str(docker)
        self.buildx = paths["buildx"]
        self.compose = paths["compose"]
        self.buildctl = paths["buildctl"]
        self.docker_config = str(docker_config)

    def env(self, daemon):
        env = daemon.env()
        env["DOCKER_CONFIG"] = self.docker_config
        # Nothing from the caller's environment may pick another builder,
        # progress mode or config directory.
        for k in ("BUILDX_BUILDER", "BUILDX_CONFIG", "BUILDKIT_PROGRESS", "DOCKER_BUILDKIT",
                  "BUILDKIT_HOST", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES",
                  "COMPOSE_BAKE"):
            env.pop(k, None)
        env["PATH"] = str(Path(self.docker).parent) + os.pathsep + env.get("PATH", "")
        return env


def go_clients(docker_config):
    """GoClients with the plugins linked into `docker_config` (created), or
    (None, reason) when the binaries are missing: -> (GoClients, None).

    `scripts/get-go-clients` is instant once scripts/test-all (or a first
    run) has built the clients into /var/cache/podsolve-test/go-clients."""
    docker_config = Path(docker_config)
    docker_config.mkdir(parents=True, exist_ok=True)
    if not os.access(DOCKER_CLI_MODERN, os.X_OK):
        return None, f"the docker 28 CLI is missing ({DOCKER_CLI_MODERN}; set PODSOLVE_DOCKER_CLI_MODERN)"
    try:
        r = subprocess.run([str(GET_GO_CLIENTS), "--only", "buildx,compose,buildctl", "--plugins-into",
                            str(docker_config)], capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{GET_GO_CLIENTS} failed: {e!r}"
    paths = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    missing = [n for n in ("buildx", "compose", "buildctl") if not os.access(paths.get(n, ""), os.X_OK)]
    if r.returncode != 0 or missing:
        return None, (f"the BuildKit clients are missing ({', '.join(missing) or 'exit ' + str(r.returncode)}): "
                      f"run scripts/get-go-clients --only buildx,compose,buildctl\n{r.stderr[-2000:]}")
    return GoClients(DOCKER_CLI_MODERN, paths, docker_config), None


# ---- gateway frontend images ----------------------------------------------------------

DOCKERFILE_FRONTEND_REPO = "docker.io/docker/dockerfile"
DOCKERFILE_FRONTEND_IMAGE = DOCKERFILE_FRONTEND_REPO + ":1"
EXAMPLE_FRONTEND_IMAGE = "localhost/podsolve-example-frontend:latest"


class FrontendImages:
    """The two gateway frontend images, made in one daemon's storage by
    tests/fixtures/make-dockerfile-frontend and make-example-frontend.

    .dockerfile         "docker.io/docker/dockerfile:1" (BuildKit's own frontend)
    .dockerfile_tags    every docker.io/docker/dockerfile tag in that storage
                        (:1, :1.N, :1.N.M), all naming the same image
    .example            "localhost/podsolve-example-frontend:latest" (examples/gateway-frontend)
    .dockerfile_binary  the binaries the images hold, as built by
    .example_binary     scripts/get-go-clients (to run them outside a container)
    """

    def __init__(self, dockerfile_tags, dockerfile_binary, example_binary):
        self.dockerfile = DOCKERFILE_FRONTEND_IMAGE
        self.dockerfile_tags = sorted(dockerfile_tags)
        self.example = EXAMPLE_FRONTEND_IMAGE
        self.dockerfile_binary = dockerfile_binary
        self.example_binary = example_binary


def go_toolchain():
    """The Go toolchain scripts/get-go-clients would use ($GO when set,
    else /usr/local/go/bin/go, else `go` on PATH), or None."""
    cands = [os.environ["GO"]] if os.environ.get("GO") else ["/usr/local/go/bin/go", shutil.which("go")]
    return next((c for c in cands if c and os.access(c, os.X_OK)), None)


def make_frontend_images(daemon):
    """Make both frontend images in `daemon`'s storage (idempotent; the
    binaries are built once into /var/cache/podsolve-test/go-clients, which
    scripts/test-all does before the tests): -> (FrontendImages, None), or
    (None, reason) when Go is missing and the binaries are not cached.
    Any other failure raises RuntimeError with the scripts' output."""
    try:
        r = subprocess.run([str(GET_GO_CLIENTS), "--only", "dockerfile-frontend,example-frontend"],
                           capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"{GET_GO_CLIENTS} failed: {e!r}") from None
    paths = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    missing = [n for n in ("dockerfile-frontend", "example-frontend") if not os.access(paths.get(n, ""), os.X_OK)]
    if r.returncode != 0 or missing:
        if go_toolchain() is None:
            return None, ("no Go toolchain ($GO, /usr/local/go/bin/go, PATH) to build the gateway frontends "
                          f"({', '.join(missing) or 'exit ' + str(r.returncode)}): install Go 1.26, then "
                          "scripts/get-go-clients --only dockerfile-frontend,example-frontend")
        raise RuntimeError(f"scripts/get-go-clients --only dockerfile-frontend,example-frontend failed "
                           f"({r.returncode}):\n{r.stderr[-3000:]}")
    storage = [str(daemon.root), str(daemon.runroot), "overlay"]
    for maker in (MAKE_DOCKERFILE_FRONTEND, MAKE_EXAMPLE_FRONTEND):
        try:
            m = subprocess.run([str(maker), *storage], env=daemon.base_env(), capture_output=True, text=True,
                               timeout=scaled(300))
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"{maker.name} did not finish: {e!r}") from None
        if m.returncode != 0:
            raise RuntimeError(f"{maker.name} failed ({m.returncode}):\n{m.stdout}\n{m.stderr[-3000:]}")
    listed = json.loads(daemon.buildah("images", "--json").stdout or "[]") or []
    tags = [n for i in listed for n in (i.get("names") or []) if n.startswith(DOCKERFILE_FRONTEND_REPO + ":")]
    return FrontendImages(tags, paths["dockerfile-frontend"], paths["example-frontend"]), None


# ---- ssh agents (--ssh, RUN --mount=type=ssh, LLB ssh mounts) ------------------------

def share_base(src, dst, name, tmpdir):
    """Give `dst` the very same base image as `src` (same image ID) under `name`.

    Every daemon's storage gets its own localhost/busybox from make-base-image,
    with a different image ID (commit timestamps), and buildah's layer-cache
    keys include the base image: a cache exported from one daemon can only hit
    in another one that builds FROM the identical base."""
    src.buildah("tag", BASE_IMAGE, name)
    archive = Path(tmpdir) / f"base-{os.urandom(4).hex()}.tar"
    src.buildah("push", "--quiet", name, f"oci-archive:{archive}:{name}")
    dst.buildah("pull", "--quiet", f"oci-archive:{archive}")
    archive.unlink()
    assert dst.image_id(name) == src.image_id(name)


class StoreAdapter:
    """examples/store-adapter/store_adapter.py on a unix socket of its own,
    keeping a directory (api-docs/store-protocol.md).

    .sock, .endpoint ("unix://...")   where it listens
    .root                             the directory it keeps
    call(method, path, body, headers) -> (status, headers, body)
    stop()                            ends it (by its pid)"""

    SCRIPT = REPO_ROOT / "examples" / "store-adapter" / "store_adapter.py"

    def __init__(self, top, token=None):
        self.dir = Path(top)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root = self.dir / "root"
        self.sock = self.dir / "store.sock"
        self.endpoint = f"unix://{self.sock}"
        argv = [sys.executable, str(self.SCRIPT), "--root", str(self.root), "--listen", self.endpoint]
        if token:
            (self.dir / "token").write_text(token + "\n")
            argv += ["--token-file", str(self.dir / "token")]
        self.log = open(self.dir / "adapter.log", "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_for(self.sock.exists, scaled(20)):
            self.stop()
            raise RuntimeError(f"the store adapter did not start:\n{(self.dir / 'adapter.log').read_text()}")

    def call(self, method, path, body=None, headers=None):
        c = UnixHTTPConnection(str(self.sock), timeout=30)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def stop(self):
        stop_process(self.proc)
        self.log.close()


class SshAgent:
    """A real OpenSSH ssh-agent on a socket of its own, holding one ed25519
    key made by ssh-keygen whose comment is `comment` (unique per test), so a
    build that lists the agent's keys proves which agent it reached.

    .sock      the agent's socket (SSH_AUTH_SOCK)
    .comment   the key's comment
    stop()     ends the agent (by its pid) and removes its directory"""

    def __init__(self, comment):
        self.comment = comment
        self.dir = Path(tempfile.mkdtemp(prefix="podsolve-it-ssh-"))
        self.sock = str(self.dir / "agent.sock")
        # -D: stay in the foreground, so the pid is the agent's
        self.proc = subprocess.Popen(["ssh-agent", "-D", "-a", self.sock], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            if not wait_for(lambda: os.path.exists(self.sock), 10):
                raise RuntimeError("ssh-agent did not create its socket")
            key = self.dir / "id_ed25519"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                           check=True, capture_output=True, timeout=scaled(30))
            subprocess.run(["ssh-add", str(key)], check=True, capture_output=True, timeout=scaled(30),
                           env={**os.environ, "SSH_AUTH_SOCK": self.sock})
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(scaled(10))
        shutil.rmtree(self.dir, ignore_errors=True)


# A static program for the busybox base image (it has no ssh-add): connect to
# $SSH_AUTH_SOCK (or argv[1]), ask SSH2_AGENTC_REQUEST_IDENTITIES (00 00 00 01
# 0b) and print "key: COMMENT" for each identity in the answer
# (SSH2_AGENT_IDENTITIES_ANSWER, 12: count, then blob and comment strings).
AGENT_PROBE_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
static unsigned char buf[1 << 16];
static size_t got;
static unsigned u32 (size_t at) { return (unsigned) buf[at] << 24 | buf[at + 1] << 16 | buf[at + 2] << 8 | buf[at + 3]; }
int main (int argc, char **argv)
{
  const char *path = argc > 1 ? argv[1] : getenv ("SSH_AUTH_SOCK");
  if (path == NULL) { fprintf (stderr, "agent-probe: no SSH_AUTH_SOCK\n"); return 2; }
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  strncpy (sa.sun_path, path, sizeof sa.sun_path - 1);
  int fd = socket (AF_UNIX, SOCK_STREAM, 0);
  if (connect (fd, (struct sockaddr *) &sa, sizeof sa) < 0) { perror ("agent-probe: connect"); return 2; }
  if (write (fd, "\0\0\0\1\x0b", 5) != 5) { perror ("agent-probe: write"); return 2; }
  for (;;)
    {
      ssize_t n = read (fd, buf + got, sizeof buf - got);
      if (n <= 0) break;
      got += (size_t) n;
      if (got >= 4 && got >= 4 + u32 (0)) break;
    }
  if (got < 9 || buf[4] != 12) { fprintf (stderr, "agent-probe: bad answer (%zu bytes)\n", got); return 3; }
  unsigned n = u32 (5);
  size_t at = 9;
  for (unsigned i = 0; i < n && at + 4 <= got; i++)
    {
      at += 4 + u32 (at); /* key blob */
      if (at + 4 > got) break;
      unsigned l = u32 (at);
      printf ("key: %.*s\n", (int) l, (const char *) buf + at + 4);
      at += 4 + l;
    }
  printf ("keys: %u\n", n);
  return n ? 0 : 4;
}
"""


def agent_probe(dest):
    """Compile AGENT_PROBE_C statically to `dest` (a path) -> dest."""
    dest = Path(dest)
    src = dest.with_suffix(".c")
    src.write_text(AGENT_PROBE_C)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(dest), str(src)], check=True, capture_output=True,
                   timeout=scaled(120))
    src.unlink()
    return dest


GIT = ["git", "-c", "user.name=podsolve-tests", "-c", "user.email=tests@podsolve.invalid"]


class GitServer:
    """`git daemon` exporting every repository under a temp dir."""

    def __init__(self, base):
        self.base = Path(base)
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["git", "daemon", "--export-all", f"--base-path={self.base}", "--listen=127.0.0.1",
             f"--port={self.port}", "--reuseaddr", "--informative-errors", str(self.base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=scaled(1)).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("git daemon did not start")

    def repo(self, name, files):
        """A repository `name` (branch main) whose first commit holds `files`."""
        work = self.base / name
        work.mkdir()
        subprocess.run(GIT + ["init", "-q", "--initial-branch=main"], cwd=work, check=True)
        self.commit(name, files, "first")
        return f"git://127.0.0.1:{self.port}/{name}"

    def commit(self, name, files, msg):
        work = self.base / name
        make_context(work, files)
        subprocess.run(GIT + ["add", "-A"], cwd=work, check=True)
        subprocess.run(GIT + ["commit", "-q", "-m", msg], cwd=work, check=True)
        return self.git(name, "rev-parse", "HEAD")

    def git(self, name, *args):
        return subprocess.run(GIT + list(args), cwd=self.base / name, check=True, capture_output=True,
                              text=True).stdout.strip()

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=scaled(10))
