"""Build contexts and workloads, run interleaved across client paths.

Every workload runs its warm-up round(s) first and then N timed rounds; each
round runs every path once, in the same order (A B C A B C ...), so slow
phases of a shared, noisy machine hit all systems alike.  Warm-up runs go
through the measuring relay (proxy.py) to count the bytes each client sends;
timed runs talk to the daemon's socket directly.
"""

import os
import random
import time

from .clients import Context, run_first_json_line, run_one, run_together, stream_vertices
from .util import BenchError, log, stats

CONTAINERFILE_4 = """FROM localhost/busybox:latest
RUN echo hello > /hello.txt
COPY file.txt /file.txt
CMD ["cat", "/file.txt"]
"""

CONTAINERFILE_HEAVY = """FROM localhost/busybox:latest
COPY . /ctx
RUN ls /ctx | wc -l
"""

HEAVY_FILES = 2000
HEAVY_BIG = 50 * 1024 * 1024
CONCURRENT = 8


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def make_contexts(top):
    """ctx4 (4 steps), heavy (2000 small files + 50 MiB random), conc/c0..c7."""
    ctx = {}
    d = os.path.join(top, "ctx", "ctx4")
    os.makedirs(d)
    _write(os.path.join(d, "Containerfile"), CONTAINERFILE_4)
    _write(os.path.join(d, "file.txt"), "hello from the 4-step context\n")
    ctx["ctx4"] = Context(d)

    heavy = os.path.join(top, "ctx", "heavy")
    os.makedirs(heavy)
    _write(os.path.join(heavy, "Containerfile"), CONTAINERFILE_HEAVY)
    for i in range(HEAVY_FILES):
        _write(os.path.join(heavy, f"f{i:04d}.txt"), f"small file number {i:04d} of the heavy context\n")
    rnd = random.Random(20261121)     # the same 50 MiB every run, still incompressible
    with open(os.path.join(heavy, "big.bin"), "wb") as f:
        for _ in range(HEAVY_BIG // (1 << 20)):
            f.write(rnd.randbytes(1 << 20))
    ctx["heavy"] = Context(heavy)

    for i in range(CONCURRENT):
        d = os.path.join(top, "ctx", "conc", f"c{i}")
        os.makedirs(d)
        _write(os.path.join(d, "Containerfile"), CONTAINERFILE_4.replace(
            "echo hello", f"echo concurrent build {i}"))
        _write(os.path.join(d, "file.txt"), f"file of concurrent build {i}\n")
        ctx[f"c{i}"] = Context(d)
    return ctx


class Runner:
    def __init__(self, top, paths, runs, warmup, logdir, docker_cli, proxies):
        self.top = top
        self.paths = paths
        self.runs = runs
        self.warmup = warmup
        self.logdir = logdir
        self.docker_cli = docker_cli
        self.proxies = proxies          # {path id: MeasuringProxy}
        self.results = {}
        self.sampler = None             # memory.TreeSampler: told which path builds now

    def _cmd(self, p, ctx, wid, nocache, label, via_proxy=False, tag=None, progress="plain"):
        sock = self.proxies[p.id].listen_path if via_proxy else None
        return p.command(ctx, tag or f"bench-{wid}-{p.id}", nocache,
                         os.path.join(self.logdir, wid, f"{p.id}-{label}.log"),
                         sock=sock, docker_cli=self.docker_cli, progress=progress)

    # -- build workloads: wall time of the client command ---------------------
    def build(self, wid, title, ctx, nocache, before=None, note="", warmup=None, warm_only=None):
        """``warmup`` overrides the runner's default; ``warm_only(path)`` limits
        the warm-up rounds to the paths it accepts."""
        warmup = self.warmup if warmup is None else warmup
        log(f"workload {wid}: {title} ({warmup} warm-up + {self.runs} runs)")
        samples = {p.id: [] for p in self.paths}
        sent = {p.id: [] for p in self.paths if p.kind != "buildah"}
        # /solve streams: every vertex's start and duration, per timed run (per-op costs)
        vertices = {p.id: [] for p in self.paths if p.kind in ("curl-solve", "curl-solve-gw")}
        for r in range(-warmup, self.runs):
            for p in self.paths:
                if r < 0 and warm_only and not warm_only(p):
                    continue
                if before:
                    before(p)
                label = f"warmup{-r}" if r < 0 else f"run{r}"
                if self.sampler:
                    self.sampler.tag = p.id
                try:
                    c = run_one(self._cmd(p, ctx, wid, nocache, label))
                finally:
                    if self.sampler:
                        self.sampler.tag = None
                log(f"  {wid:12} {label:8} {p.id:10} {c.elapsed:7.3f} s"
                    + (f"  {c.bytes_sent / 1e6:8.3f} MB sent" if c.bytes_sent is not None else ""))
                if r >= 0:
                    samples[p.id].append(c.elapsed)
                    if p.id in sent and c.bytes_sent is not None:
                        sent[p.id].append(c.bytes_sent)
                    if p.id in vertices:
                        vertices[p.id].append({"wall_s": round(c.elapsed, 6),
                                               "vertices": stream_vertices(c.log)})
        self.results[wid] = {
            "title": title, "kind": "build", "note": note, "warmup": warmup,
            "samples_s": samples, "stats": {k: stats(v) for k, v in samples.items()},
            "client_bytes_sent": {k: stats(v) for k, v in sent.items() if v},
            "stream_vertices": vertices,
        }

    # -- time from the request to the first status line ------------------------
    def first_status_line(self, wid, ctx):
        title = "time from request to first status line (4-step, cached)"
        log(f"workload {wid}: {title}")
        paths = [p for p in self.paths if p.id in self.proxies]
        samples = {p.id: [] for p in paths}
        for r in range(-max(1, self.warmup), self.runs):
            for p in paths:
                px = self.proxies[p.id]
                px.reset()
                run_one(self._cmd(p, ctx, wid, False, f"run{r}" if r >= 0 else "warmup", via_proxy=True))
                lines = list(px.first_lines)
                if not lines:
                    raise BenchError(f"{p.label}: the relay saw no status line for the build request")
                if r >= 0:
                    samples[p.id].append(lines[0][1])
                    log(f"  {wid:12} run{r:<5} {p.id:10} {lines[0][1] * 1000:7.1f} ms")
        self.results[wid] = {
            "title": title, "kind": "latency",
            "note": "measured at a relay between client and daemon: from the arrival of the "
                    "POST /build or /solve request line to the arrival of the first complete "
                    "response body line (the request body, 10 kB here, is included)",
            "samples_s": samples, "stats": {k: stats(v) for k, v in samples.items()},
        }

    # -- gRPC: time from the client's start to the first Control.Status message --
    def first_status_grpc(self, wid, ctx):
        """docker buildx --progress=rawjson: buildx prints every SolveStatus
        it gets from Control.Status as one JSON line, as it gets it; the time
        from the client's start to the first such line on its output.  No
        relay: the gRPC stream is HTTP/2, which the line relay cannot read."""
        paths = [p for p in self.paths if p.kind in ("buildx", "buildx-remote")]
        if not paths:
            return
        title = "time from the client's start to the first Control.Status message (4-step, cached)"
        log(f"workload {wid}: {title}")
        samples = {p.id: [] for p in paths}
        to_daemon = {p.id: [] for p in paths}
        from_daemon = {p.id: [] for p in paths}
        for r in range(-max(1, self.warmup), self.runs):
            for p in paths:
                t, split = run_first_json_line(self._cmd(p, ctx, wid, False, f"run{r}" if r >= 0 else "warmup",
                                                         progress="rawjson"))
                if r >= 0:
                    samples[p.id].append(t)
                    if split:
                        to_daemon[p.id].append(split[0])
                        from_daemon[p.id].append(split[1])
                    log(f"  {wid:12} run{r:<5} {p.id:10} {t * 1000:7.1f} ms"
                        + (f" (to the daemon's first timestamp {split[0] * 1000:.1f} ms, "
                           f"from it to the line {split[1] * 1000:.1f} ms)" if split else ""))
        self.results[wid] = {
            "title": title, "kind": "latency",
            "note": "`docker buildx build --progress=rawjson` (docker driver, POST /grpc): from the "
                    "start of the `docker` command to the first JSON line it prints, which buildx "
                    "writes when the first Control.Status message arrives. It includes the CLI and "
                    "plugin start, the session, syncing the 10 kB context and the Solve call; "
                    "the relay figures above start at the request line instead",
            "samples_s": samples, "stats": {k: stats(v) for k, v in samples.items()},
            # the same on the host's wall clock, cut at the timestamp podsolved put on
            # that first message (the vertex's "started")
            "split_stats": {"client_start_to_daemon_stamp": {k: stats(v) for k, v in to_daemon.items()},
                            "daemon_stamp_to_client_line": {k: stats(v) for k, v in from_daemon.items()}},
        }

    # -- 8 different small builds: all at once vs one after another -------------
    def concurrency(self, wid, ctxs, path_ids, rounds):
        title = f"{len(ctxs)} different small builds (no cache): concurrent vs serial"
        log(f"workload {wid}: {title}")
        paths = [p for p in self.paths if p.id in path_ids]
        conc = {p.id: [] for p in paths}
        ser = {p.id: [] for p in paths}
        for r in range(rounds):
            for p in paths:
                cmds = [self._cmd(p, c, wid, True, f"r{r}-conc-c{i}", tag=f"bench-conc{i}-{p.id}")
                        for i, c in enumerate(ctxs)]
                conc[p.id].append(run_together(cmds))
                t0 = time.perf_counter()
                for i, c in enumerate(ctxs):
                    run_one(self._cmd(p, c, wid, True, f"r{r}-serial-c{i}", tag=f"bench-conc{i}-{p.id}"))
                ser[p.id].append(time.perf_counter() - t0)
                log(f"  {wid:12} round{r}   {p.id:10} {conc[p.id][-1]:7.3f} s at once, "
                    f"{ser[p.id][-1]:7.3f} s one by one")
        self.results[wid] = {
            "title": title, "kind": "concurrency",
            "samples_s": {"concurrent": conc, "serial": ser},
            "stats": {"concurrent": {k: stats(v) for k, v in conc.items()},
                      "serial": {k: stats(v) for k, v in ser.items()}},
        }


def heavy_workloads(runner, ctx, warmup):
    """Cold first build, no-op rebuild, one-file-changed rebuild.

    ``warmup`` is for the cold and one-file-changed workloads, whose runs are
    self-contained."""
    heavy = ctx

    stamp = [time.time()]

    def fresh_copy(_p):
        # A cold context, as a fresh checkout or copy would be: every file gets
        # a new mtime, so nothing a BuildKit client or daemon synced before
        # matches (the same effect as anchors.md's `cp -r`, without copying
        # 52 MB each time); tar clients get a new tar.  Not timed.
        stamp[0] = max(stamp[0] + 1, time.time())
        for name in os.listdir(heavy.dir):
            os.utime(os.path.join(heavy.dir, name), (stamp[0], stamp[0]))
        heavy.changed()

    counter = [0]

    def change_one_file(_p):
        counter[0] += 1
        _write(os.path.join(heavy.dir, "f0000.txt"), f"changed {counter[0]}\n")
        heavy.changed()

    runner.build("heavy-cold", "heavy context: cold first build (fresh copy, no cache)",
                 heavy, True, before=fresh_copy, warmup=warmup,
                 note="before every run every file of the context gets a new mtime (as in a "
                      "fresh copy) and the build runs with --no-cache / nocache=1; the tar "
                      "(curl paths) is made again, not timed")
    # The no-op warm-up matters for the BuildKit clients, which keep the
    # context synced between builds (the last path of the cold round left the
    # others with an older copy); tar clients send everything anyway, and the
    # cold builds already left the cache entries their no-op hits.
    runner.build("heavy-noop", "heavy context: no-op rebuild", heavy, False,
                 warmup=max(1, runner.warmup), warm_only=lambda p: p.kind in ("docker-bk", "buildx", "buildx-remote"),
                 note="warm-up run only for the BuildKit clients (to sync the current context); "
                      "for the others the cold builds left the cache entries the no-op hits")
    runner.build("heavy-change", "heavy context: one file changed, rebuild", heavy, False,
                 before=change_one_file, warmup=warmup,
                 note="before every run one small file gets new content; COPY and RUN rebuild")


def proxy_overhead(runner, ps_sock, pm_sock, cli_env, runs, requests=20):
    """Requests podsolved passes through to Podman, vs the same sent to Podman.

    * ``docker images`` (docker 20.10 CLI): HEAD /_ping (podsolved answers it
      itself) + GET /v1.41/images/json (passed through);
    * GET /v1.41/images/json and GET /_ping from an in-process client, a new
      connection per request (as the CLI does), ``requests`` per round.
    It runs first, while Podman's store holds just the base image, so that
    Podman's own work per request is small and the pass-through cost shows."""
    from .clients import Cmd, _check_exit
    from .systems import UnixHTTPConnection
    wid = "proxy"
    log(f"workload {wid}: requests through podsolved's pass-through vs straight to Podman")
    from .systems import http_get
    status, body = http_get(ps_sock, "/v1.41/images/json", 10)
    if status != 200:
        why = body.decode(errors="replace").strip()[:200]
        log(f"podsolved does not pass GET /v1.41/images/json through (HTTP {status}): skipped")
        return (f"proxy overhead: `podsolved --help` lists --upstream, but GET /v1.41/images/json "
                f"through podsolved answered HTTP {status} ({why}), so there is nothing to time yet")
    socks = {"ps-proxy": ps_sock, "pm-direct": pm_sock}
    cli = {k: [] for k in socks}
    for r in range(-1, runs):
        for k, sock in socks.items():
            env = dict(cli_env, DOCKER_HOST="unix://" + sock)
            c = run_one(Cmd([runner.docker_cli, "images"], env,
                            os.path.join(runner.logdir, wid, f"{k}-images-{r}.log"), _check_exit))
            if r >= 0:
                cli[k].append(c.elapsed)

    def one(sock, method, path):
        t0 = time.perf_counter()
        c = UnixHTTPConnection(sock, 10)
        try:
            c.request(method, path)
            resp = c.getresponse()
            resp.read()
            if resp.status != 200:
                raise BenchError(f"{method} {path} on {sock}: HTTP {resp.status}")
        finally:
            c.close()
        return time.perf_counter() - t0

    http = {}
    for name, method, path in (("GET /v1.41/images/json", "GET", "/v1.41/images/json"),
                               ("GET /_ping", "GET", "/_ping")):
        http[name] = {k: [] for k in socks}
        for r in range(-1, runs):
            for _ in range(requests):
                for k, sock in socks.items():
                    t = one(sock, method, path)
                    if r >= 0:
                        http[name][k].append(t)
    stats_ = {"docker images (CLI)": {k: stats(v) for k, v in cli.items()}}
    for name, d in http.items():
        stats_[name] = {k: stats(v) for k, v in d.items()}
    runner.results[wid] = {
        "title": "proxy overhead: through podsolved (--upstream) vs straight to Podman",
        "kind": "proxy", "stats": stats_,
        "note": "GET /_ping is answered by podsolved itself; GET /images/json is passed through",
    }
    return None
