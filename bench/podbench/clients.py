"""Client paths: one (system, client) pair that can run a build.

Every path turns (context, tag, no-cache?) into one command line, the exact
command a user would type, and knows how to tell success from failure:

  curl /build    curl --data-binary @ctx.tar POST /v1.41/build (Podman's and
                 podsolve's compat endpoint; tar made beforehand, not timed)
  curl /solve    curl -F request=... -F context=@ctx.tar POST /solve
  curl /solve, gateway  the same, with the Dockerfile prefixed by
                 `# syntax=docker/dockerfile:1`: podsolved runs BuildKit's own
                 Dockerfile frontend image (a gateway frontend) and executes
                 the LLB it sends op by op, instead of `buildah build`
  docker legacy  DOCKER_BUILDKIT=0 docker build (20.10 CLI; it tars the dir)
  docker BuildKit DOCKER_BUILDKIT=1 docker build (20.10 CLI; /session +
                 /build?version=2, the context synced over the session)
  buildah build  buildah build with the flags podsolved uses, on the directory
  docker buildx  docker buildx build (v0.36.1, a plugin of the docker 28 CLI,
                 built by scripts/get-go-clients) with the docker driver: only
                 DOCKER_HOST is set, so buildx drives the build over POST /grpc
                 (BuildKit's Control service) and POST /session; the image is
                 exported into the daemon's store
  docker buildx, remote driver  the same buildx with a builder made by
                 `docker buildx create --driver remote unix://SOCK`, passed as
                 --builder: SOCK is podsolved's --buildkit-listen socket or
                 buildkitd v0.32.2's, the command line identical for both;
                 --output type=image,name=localhost/TAG:latest (the remote
                 driver has no daemon to --load into: the image goes into
                 the daemon's own store, containers-storage for podsolved,
                 buildkitd's image store for buildkitd), --provenance=false
                 (podsolved makes no attestations) and --metadata-file,
                 which must name the image afterwards
"""

import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from .util import BenchError


class Context:
    """A build context directory, with a tar of it made on demand."""

    def __init__(self, dir, dockerfile="Containerfile"):
        self.dir = dir
        self.dockerfile = dockerfile
        self._tar = None
        self._gw_tar = None

    @property
    def tar(self):
        if self._tar is None:
            self._tar = self.dir.rstrip("/") + ".tar"
            subprocess.run(["tar", "-C", self.dir, "-cf", self._tar, "."], check=True)
        return self._tar

    GW_DOCKERFILE = "Dockerfile.gw"
    GW_SYNTAX = "# syntax=docker/dockerfile:1\n"

    @property
    def gw_tar(self):
        """The context's tar plus Dockerfile.gw: the Dockerfile with a
        `# syntax=docker/dockerfile:1` line before it (kept beside the
        directory, so the other paths' contexts stay as they are)."""
        if self._gw_tar is None:
            gw_dir = self.dir.rstrip("/") + ".gw"
            os.makedirs(gw_dir, exist_ok=True)
            with open(os.path.join(self.dir, self.dockerfile)) as f:
                text = f.read()
            with open(os.path.join(gw_dir, self.GW_DOCKERFILE), "w") as f:
                f.write(self.GW_SYNTAX + text)
            self._gw_tar = gw_dir + ".tar"
            subprocess.run(["tar", "-C", self.dir, "-cf", self._gw_tar, ".",
                            "-C", gw_dir, self.GW_DOCKERFILE], check=True)
        return self._gw_tar

    def changed(self):
        """Call after modifying the directory: the tars are made again when needed."""
        self._tar = None
        self._gw_tar = None


@dataclass
class Cmd:
    argv: list
    env: dict
    log: str
    check: object            # fn(exit_code, output_text) -> error message or None
    proc: object = None
    t0: float = 0.0
    elapsed: float = None
    bytes_sent: int = None   # what the client wrote to sockets (see wait_exit())
    sent_from_output: object = None  # fn(output) -> bytes sent, for clients that say it
    stdin_path: str = None   # a file for the client's stdin (buildctl reads a definition there)
    _log_size0: int = 0
    _wchar: int = None

    def start(self):
        os.makedirs(os.path.dirname(self.log), exist_ok=True)
        with open(self.log, "wb") as lf:
            lf.write(("$ " + " ".join(x.replace("\n", "\\n") for x in self.argv) + "\n").encode())
            lf.flush()
            self._log_size0 = lf.tell()
            stdin = open(self.stdin_path, "rb") if self.stdin_path else subprocess.DEVNULL
            try:
                self.t0 = time.perf_counter()
                self.proc = subprocess.Popen(self.argv, env=self.env, stdout=lf,
                                             stderr=subprocess.STDOUT, stdin=stdin)
            finally:
                if self.stdin_path:
                    stdin.close()

    def finish(self, timeout=900):
        """Wait for the exit, take the time, count the bytes, check the result."""
        self.wait_exit(timeout)
        return self.reap_and_check()

    def wait_exit(self, timeout=900):
        """Block until the client exits, without reaping it, and take the time.

        Bytes sent, without a relay in the way (so it costs the run nothing):
        curl reports them itself (-w size_request + size_upload); for the
        docker CLI (Go writes to sockets with write(2), which the kernel
        counts) it is the client's wchar from /proc/PID/io, readable while
        the exited process is not yet reaped, minus what it wrote to its log
        (stdout/stderr), i.e. what went to the daemon's socket."""
        pid = self.proc.pid
        watchdog = threading.Timer(timeout, self.proc.kill)
        watchdog.start()
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        finally:
            watchdog.cancel()
        self.elapsed = time.perf_counter() - self.t0
        try:
            with open(f"/proc/{pid}/io") as f:
                self._wchar = int(next(l for l in f if l.startswith("wchar:")).split()[1])
        except (OSError, StopIteration):
            self._wchar = None

    def reap_and_check(self):
        rc = self.proc.wait()
        with open(self.log, errors="replace") as f:
            out = f.read()
        if self.sent_from_output:
            self.bytes_sent = self.sent_from_output(out)
        elif self._wchar is not None:
            self.bytes_sent = self._wchar - (os.path.getsize(self.log) - self._log_size0)
        err = self.check(rc, out)
        if err:
            raise BenchError(f"build failed: {err}\n  command: {' '.join(self.argv)}\n"
                             f"  log: {self.log}\n  last output:\n{out[-1500:]}")
        return self.elapsed


def run_one(cmd):
    cmd.start()
    cmd.finish()
    return cmd


def run_together(cmds):
    """Start all commands at once; wall time from the first start to the last end."""
    t0 = time.perf_counter()
    for c in cmds:
        c.start()
    waiters = [threading.Thread(target=c.wait_exit) for c in cmds]
    for w in waiters:
        w.start()
    for w in waiters:
        w.join()
    for c in cmds:
        c.reap_and_check()
    return max(c.t0 + c.elapsed for c in cmds) - t0


def _check_exit(rc, out):
    return f"exit status {rc}" if rc != 0 else None


_CURL_W = "\nHTTP_CODE=%{http_code}\nSENT=%{size_request}+%{size_upload}\n"


def _curl_sent(out):
    m = re.search(r"\nSENT=(\d+)\+(\d+)\s*$", out)
    return int(m.group(1)) + int(m.group(2)) if m else None


def _curl_body_code(out):
    body, _, tail = out.rpartition("\nHTTP_CODE=")
    return body, tail.split("\n", 1)[0].strip()


def _check_buildx(image_exists):
    """Exit status 0, and the image is in the daemon's store afterwards."""
    def check(rc, out):
        if rc != 0:
            return f"exit status {rc}"
        if not image_exists():
            return "exit status 0, but the image is not in podsolved's store"
        return None
    return check


def _check_buildx_remote(image, meta, image_exists):
    """Exit status 0, buildx's --metadata-file names the image and its
    digest, and (podsolved) the image is in the daemon's store."""
    def check(rc, out):
        if rc != 0:
            return f"exit status {rc}"
        try:
            with open(meta) as f:
                md = json.load(f)
        except (OSError, ValueError) as e:
            return f"exit status 0, but no metadata file ({e})"
        # (an image index when the daemon adds buildx's provenance attestation: no config digest)
        if image not in (md.get("image.name") or "") or not md.get("containerimage.digest"):
            return f"exit status 0, but the metadata names no image {image} with a digest: {md}"
        if image_exists and not image_exists():
            return "exit status 0, but the image is not in the daemon's store"
        return None
    return check


def run_first_json_line(cmd):
    """Run ``cmd`` (a --progress=rawjson build) and return the time from its
    start to the first complete JSON line of its output: buildx prints one
    SolveStatus per Control.Status message it receives, so this is the time
    from the client's start to the first status message.  The build is then
    waited for and checked like any other.

    -> (total, split): split is (client start -> the daemon's timestamp on
    that first message, the daemon's timestamp -> the line read here), both
    on the host's wall clock (daemon and client share it), or None when the
    first message carries no timestamp."""
    os.makedirs(os.path.dirname(cmd.log), exist_ok=True)
    first, split = None, None
    with open(cmd.log, "wb") as lf:
        lf.write(("$ " + " ".join(cmd.argv) + "\n").encode())
        lf.flush()
        wall0 = time.time()
        cmd.t0 = time.perf_counter()
        cmd.proc = subprocess.Popen(cmd.argv, env=cmd.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        watchdog = threading.Timer(900, cmd.proc.kill)
        watchdog.start()
        try:
            for line in cmd.proc.stdout:
                if first is None and line.startswith(b"{"):
                    try:
                        status = json.loads(line)
                        first = time.perf_counter() - cmd.t0
                        split = _daemon_stamp_split(status, wall0, time.time())
                    except ValueError:
                        pass
                lf.write(line)
            cmd.proc.wait()
        finally:
            watchdog.cancel()
        cmd.elapsed = time.perf_counter() - cmd.t0
    cmd.reap_and_check()
    if first is None:
        raise BenchError(f"{' '.join(cmd.argv)}: no JSON status line in its output (log: {cmd.log})")
    return first, split


def _daemon_stamp_split(status, wall0, wall_line):
    """(daemon's first timestamp - client start, line read - that timestamp)
    for a SolveStatus JSON object, or None without a timestamp."""
    stamps = [x.get("started") or x.get("timestamp")
              for key in ("vertexes", "statuses") for x in (status.get(key) or [])]
    stamps = [x for x in stamps if x]
    if not stamps:
        return None
    # RFC 3339 with nanoseconds and Z: keep microseconds for datetime
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", min(stamps))
    if not m:
        return None
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    t = datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}").timestamp()
    return (t - wall0, wall_line - t)


def _stamp(text):
    """RFC 3339 (nanoseconds, Z or an offset) -> seconds since the epoch, or None."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text or "")
    if not m:
        return None
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}").timestamp()


def stream_vertices(log_path):
    """The vertices of a /solve NDJSON stream (a client log), in the order
    they first appear: [{name, start_s, dur_s, cached}], start_s relative to
    the earliest `started` in the stream, dur_s = completed - started (None
    for a vertex that never completed).  A vertex is reported more than once
    (started, then completed); the records are merged by digest."""
    by = {}
    with open(log_path, errors="replace") as f:
        for line in f:
            if not line.startswith('{"status"'):
                continue
            try:
                st = json.loads(line).get("status") or {}
            except ValueError:
                continue
            for v in st.get("vertexes") or []:
                d = by.setdefault(v.get("digest") or v.get("name"), {"name": v.get("name", "?")})
                for k in ("started", "completed"):
                    t = _stamp(v.get(k))
                    if t is not None:
                        d[k] = min(d[k], t) if k == "started" and k in d else t
                if v.get("cached"):
                    d["cached"] = True
    starts = [d["started"] for d in by.values() if "started" in d]
    if not starts:
        return []
    t0 = min(starts)
    out = []
    for d in by.values():
        if "started" not in d:
            continue
        out.append({"name": d["name"], "start_s": round(d["started"] - t0, 6),
                    "dur_s": round(d["completed"] - d["started"], 6) if "completed" in d else None,
                    "cached": bool(d.get("cached"))})
    return out


def _check_curl_v1(rc, out):
    if rc != 0:
        return f"curl exit status {rc}"
    body, code = _curl_body_code(out)
    if code != "200":
        return f"HTTP {code}"
    if '"errorDetail"' in body:
        return "errorDetail in the stream"
    if '"aux"' not in body and "Successfully" not in body:
        return "stream ended without an image ID"
    return None


def _check_curl_solve(rc, out):
    if rc != 0:
        return f"curl exit status {rc}"
    body, code = _curl_body_code(out)
    if code != "200":
        return f"HTTP {code}"
    lines = [l for l in body.splitlines()[1:] if l.strip()]
    if not lines or not lines[-1].startswith('{"result"'):
        return "stream did not end with a result"
    return None


@dataclass
class Path:
    id: str            # short key used in results.json
    system: str        # podsolve | Podman | Docker Engine | buildah
    client: str        # curl /build | curl /solve | docker legacy | docker BuildKit | buildah build
    kind: str          # curl-v1 | curl-solve | curl-solve-gw | docker-legacy | docker-bk | buildah | buildx
    sock: str = None
    env: dict = field(default_factory=dict)
    buildah_argv: list = None   # for kind=buildah: everything up to the build flags
    docker_cli: str = None      # for kind=buildx: the docker 28 CLI (buildx is its plugin)
    image_exists: object = None  # for kind=buildx: fn(image name) -> bool, in the daemon's store
    builder: str = None         # for kind=buildx-remote: the buildx builder (remote driver)

    @property
    def label(self):
        return f"{self.system} · {self.client}"

    def command(self, ctx, tag, nocache, log, sock=None, docker_cli=None, progress="plain"):
        """The command for one build; ``sock`` overrides the socket (proxy)."""
        sock = sock or self.sock
        env = dict(self.env)
        if self.kind == "curl-v1":
            q = f"t={tag}&dockerfile={ctx.dockerfile}" + ("&nocache=1" if nocache else "")
            argv = ["curl", "-sS", "--unix-socket", sock, "-H", "Content-Type: application/x-tar",
                    "--data-binary", "@" + ctx.tar, "-w", _CURL_W,
                    f"http://d/v1.41/build?{q}"]
            return Cmd(argv, env, log, _check_curl_v1, sent_from_output=_curl_sent)
        if self.kind in ("curl-solve", "curl-solve-gw"):
            gw = self.kind == "curl-solve-gw"
            attrs = {"filename": ctx.GW_DOCKERFILE if gw else ctx.dockerfile}
            if nocache:
                attrs["no-cache"] = ""
            req = {"frontend": "dockerfile.v0", "frontendAttrs": attrs,
                   "exporters": [{"type": "image", "attrs": {"name": f"localhost/{tag}:latest"}}]}
            argv = ["curl", "-sS", "-N", "--unix-socket", sock,
                    "--form-string", "request=" + json.dumps(req, separators=(",", ":")),
                    "-F", "context=@" + (ctx.gw_tar if gw else ctx.tar), "-w", _CURL_W,
                    "http://d/solve"]
            return Cmd(argv, env, log, _check_curl_solve, sent_from_output=_curl_sent)
        if self.kind in ("docker-legacy", "docker-bk"):
            env["DOCKER_HOST"] = "unix://" + sock
            argv = [docker_cli, "build"]
            if self.kind == "docker-bk":
                argv.append("--progress=plain")
            if nocache:
                argv.append("--no-cache")
            argv += ["-t", tag, "-f", os.path.join(ctx.dir, ctx.dockerfile), ctx.dir]
            return Cmd(argv, env, log, _check_exit)
        if self.kind == "buildah":
            argv = list(self.buildah_argv)       # podsolved's own flags
            if nocache:
                argv.append("--no-cache")
            argv += [f"--file={os.path.join(ctx.dir, ctx.dockerfile)}", f"--tag=localhost/{tag}:latest",
                     "--", ctx.dir]
            # buildah reads the directory itself: no bytes go to a daemon
            return Cmd(argv, env, log, _check_exit, sent_from_output=lambda out: None)
        if self.kind == "buildx":
            env["DOCKER_HOST"] = "unix://" + sock
            argv = [self.docker_cli, "buildx", "build", f"--progress={progress}"]
            if nocache:
                argv.append("--no-cache")
            argv += ["-t", tag, "-f", os.path.join(ctx.dir, ctx.dockerfile), ctx.dir]
            # the docker CLI runs the plugin as its child; a reaped child's I/O
            # counts add up in the parent's /proc/PID/io, so wchar covers both
            image = f"docker.io/library/{tag}:latest"
            return Cmd(argv, env, log, _check_buildx(lambda: self.image_exists(image)))
        if self.kind == "buildx-remote":
            image = f"localhost/{tag}:latest"
            meta = log[:-4] + ".metadata.json" if log.endswith(".log") else log + ".metadata.json"
            try:
                os.unlink(meta)
            except FileNotFoundError:
                pass
            argv = [self.docker_cli, "buildx", "build", "--builder", self.builder, f"--progress={progress}"]
            if nocache:
                argv.append("--no-cache")
            # --provenance=false: podsolved makes no attestations; without it buildx
            # would ask buildkitd alone for one (an image index instead of an image)
            argv += ["--output", f"type=image,name={image}", "--provenance=false", "--metadata-file", meta,
                     "-f", os.path.join(ctx.dir, ctx.dockerfile), ctx.dir]
            exists = (lambda: self.image_exists(image)) if self.image_exists else None
            return Cmd(argv, env, log, _check_buildx_remote(image, meta, exists))
        raise ValueError(self.kind)

    @property
    def uses_tar(self):
        return self.kind in ("curl-v1", "curl-solve", "curl-solve-gw")

    @property
    def proxyable(self):
        # (the gateway path's first status line is /solve's, as for ps-solve:
        # left out of the relay workload to keep the run short)
        return self.kind not in ("buildah", "buildx", "buildx-remote", "curl-solve-gw")
