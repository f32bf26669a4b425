"""The LLB workload: one build graph with 4 independent branches, sent to
podsolved as an LLB definition (POST /solve) and built by raw buildah as
the same graph written as a multi-stage Containerfile (`buildah build
--jobs 4`).

The graph, 20 ops (plus the terminal op):

    busybox ─ base (FileOp: mkdir /work, mkfile /work/seed)
                ├─ branch 0: gen ─ hash ─ gzip ─ finish ─┐
                ├─ branch 1: gen ─ hash ─ gzip ─ finish ─┤
                ├─ branch 2: …                           ├─ join (FileOp: 4 copies of /work/out
                └─ branch 3: …                           ┘   into /out/bN) ─ sums (exec)

Each branch op is an exec doing real work on its own random data: `dd`
from /dev/urandom, repeated sha256sum, gzip, md5sum (about a second each on
the bench machine).  The Containerfile has one stage per branch and one RUN
per exec, COPY --from per copy; its base stage does the FileOp's work with a
RUN.  Every command names its branch, so no two branches share a cache
entry in either system.

With BuildKit's own client (``buildctl`` v0.32.2, the definition piped on
stdin, ``--output type=image,name=…``), the SAME definition bytes also go to
buildkitd v0.32.2 (a fresh root per round; the base image pulled from the
loopback registry before the timed build) and to a second podsolved's
``--buildkit-listen`` socket: the only difference is the daemon.

Timed, interleaved per round (A B C D, then A B C D again): a cold build
on private storage made for that round (each daemon started on it; buildah
--root on its own), then the fully cached resubmission (the same
definition to the same daemon; `buildah build --layers` again).
"""

import json
import os
import shutil
import sys
from datetime import datetime

from .clients import Cmd, _CURL_W, _curl_body_code, _check_exit, run_one
from .systems import Buildah, BuildKitd, Podsolved, unmount_under
from .util import BenchError, log, run_checked, stats

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BASE = "localhost/busybox:latest"
BRANCHES = 4

# Work per branch: MiB of random data, sha256sum passes over it.
FULL_SCALE = {"mib": 24, "hash_passes": 6}
SMOKE_SCALE = {"mib": 2, "hash_passes": 1}

def branch_commands(b, scale):
    """The 4 exec steps of branch b, as shell command lines."""
    d = "/work/data"
    return [
        f"echo branch {b} > /work/branch && mkdir -p /work/out && "
        f"busybox dd if=/dev/urandom of={d} bs=1M count={scale['mib']} 2>/dev/null && "
        f"sha256sum {d} > /work/out/data.sha256",
        f"i=0; while [ $i -lt {scale['hash_passes']} ]; do sha256sum {d}; i=$((i+1)); done "
        f"> /work/out/hashes-{b}",
        f"busybox gzip -c {d} | sha256sum > /work/out/gzip-{b}.sha256",
        f"busybox md5sum {d} > /work/out/md5-{b} && rm {d} && ls -l /work/out > /work/out/listing-{b}",
    ]


SEED = "podsolve LLB bench seed\n"
FINAL = "test $(ls /out | wc -l) = 4 && sha256sum /out/*/* > /out/SUMS"


def containerfile(scale):
    lines = [f"FROM {BASE} AS base",
             f"RUN mkdir -p /work && printf '{SEED.strip()}\\n' > /work/seed", ""]
    for b in range(BRANCHES):
        lines.append(f"FROM base AS b{b}")
        lines += [f"RUN {c}" for c in branch_commands(b, scale)]
        lines.append("")
    lines.append("FROM base")
    lines += [f"COPY --from=b{b} /work/out /out/b{b}" for b in range(BRANCHES)]
    lines.append(f"RUN {FINAL}")
    return "\n".join(lines) + "\n"


def _llb():
    """examples/llb-frontend/llb.py: the reference frontend's graph builder."""
    sys.path.insert(0, os.path.join(REPO, "examples", "llb-frontend"))
    try:
        import llb
    finally:
        sys.path.pop(0)
    return llb


def _branches(what, commands, join_name, final_cmd, final_name):
    """The graph both workloads share: an image, a base FileOp, independent
    branches of exec ops (``commands``: one list of shell commands per
    branch), one FileOp copying every branch's /work/out into /out/bN, and a
    final exec -> (pb.Definition bytes, number of ops without the terminal op)."""
    llb = _llb()
    try:
        g = llb.Graph()
    except llb.LLBError as e:
        raise BenchError(f"{what}: {e}") from None
    env = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    img = g.image(BASE, name=f"FROM {BASE}")
    base = g.file(img, [g.mkdir("/work", 0o755), g.mkfile("/work/seed", SEED)], name="base: mkdir + mkfile")
    ends = []
    for b, cmds in enumerate(commands):
        s = base
        for i, cmd in enumerate(cmds):
            s = g.exec(s, ["/bin/sh", "-c", cmd], env=env, name=f"branch {b} step {i + 1}")
        ends.append(s)
    join = g.file(base, [g.copy(e, "/work/out", f"/out/b{b}") for b, e in enumerate(ends)], name=join_name)
    final = g.exec(join, ["/bin/sh", "-c", final_cmd], env=env, name=final_name)
    return g.marshal(final), len(g.ops)


def definition(scale):
    """(pb.Definition bytes, number of ops without the terminal op)."""
    return _branches("LLB workload", [branch_commands(b, scale) for b in range(BRANCHES)],
                     "join: copy each branch's /work/out", FINAL, "sums")


def _ts(s):
    head, _, frac = s.rstrip("Z").partition(".")
    return datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").timestamp() + float("0." + (frac or "0"))


def stream_facts(body):
    """From a /solve stream: ({digest: last vertex}, result or None)."""
    vs, result = {}, None
    for line in body.splitlines():
        if not line.startswith("{"):
            continue
        ev = json.loads(line)
        for v in ev.get("status", {}).get("vertexes", []):
            vs[v["digest"]] = {**vs.get(v["digest"], {}), **v}
        result = ev.get("result", result)
    return vs, result


def max_overlap(vs):
    """Most vertices running at the same moment (from started/completed)."""
    edges = []
    for v in vs.values():
        if v.get("started") and v.get("completed") and not v.get("cached"):
            a, b = _ts(v["started"]), _ts(v["completed"])
            if b > a:
                edges += [(a, 1), (b, -1)]
    cur = best = 0
    for _, d in sorted(edges, key=lambda e: (e[0], e[1])):
        cur += d
        best = max(best, cur)
    return best


def _solve_check(n_ops, want_cached):
    def check(rc, out):
        if rc != 0:
            return f"curl exit status {rc}"
        body, code = _curl_body_code(out)
        if code != "200":
            return f"HTTP {code}: {body[-300:]}"
        vs, result = stream_facts(body)
        if result is None:
            return "stream did not end with a result"
        if len(vs) < n_ops:
            return f"the stream reported {len(vs)} vertices, the definition has {n_ops} ops"
        missed = [v["name"] for v in vs.values()
                  if not v.get("cached") and not v.get("name", "").startswith("exporting")]
        if want_cached and missed:
            return "resubmission was not fully cached: " + ", ".join(missed)
        return None
    return check


def rawjson_facts(text):
    """From `buildctl build --progress=rawjson` output: {digest: vertex}
    (the records of one vertex merged; other lines are skipped)."""
    vs = {}
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        for v in ev.get("vertexes") or []:
            vs[v["digest"]] = {**vs.get(v["digest"], {}), **v}
    return vs


def _buildctl_check(n_ops, want_cached):
    def check(rc, out):
        if rc != 0:
            return f"buildctl exit status {rc}"
        vs = rawjson_facts(out)
        if len(vs) < n_ops:
            return f"buildctl reported {len(vs)} vertices, the definition has {n_ops} ops"
        # (the image source is resolved again each time, not "cached", in buildkitd)
        missed = [v["name"] for v in vs.values() if not v.get("cached")
                  and not v.get("name", "").startswith(("exporting", "FROM "))]
        if want_cached and missed:
            return "resubmission was not fully cached: " + ", ".join(missed)
        return None
    return check


def base_only_definition():
    """An LLB definition of just the base image: solving it pulls the image
    into a fresh buildkitd (untimed), as the others have it in their stores."""
    llb = _llb()
    g = llb.Graph()
    return g.marshal(g.image(BASE, name=f"FROM {BASE}"))


# keys of the samples, in the order each round runs them (cold, then cached)
LLB_SYSTEMS = ["ps-llb", "psb-llb", "bkd-llb", "bh-jobs4"]


def llb_branches(top, podsolved, archive, buildah_flags, runs, warmup, logdir, scale, upstream_flag,
                 buildctl=None):
    """Run the workload; returns the results entry for results.json.

    buildctl: {"buildctl", "buildkitd": binaries, "registry": the running
    LoopbackRegistry, "podsolve": bool (podsolved has --buildkit-listen)},
    or None for just podsolve /solve vs buildah."""
    wid = "llb-branches"
    work = os.path.join(top, "llb")
    os.makedirs(work, exist_ok=True)
    data, n_ops = definition(scale)
    def_path = os.path.join(work, "definition.pb")
    with open(def_path, "wb") as f:
        f.write(data)
    ctx = os.path.join(work, "ctx")
    os.makedirs(ctx, exist_ok=True)
    with open(os.path.join(ctx, "Containerfile"), "w") as f:
        f.write(containerfile(scale))
    env = dict(os.environ, TMPDIR=os.path.join(top, "tmp"))
    log(f"workload {wid}: {n_ops}-op LLB graph, {BRANCHES} branches, {scale['mib']} MiB per branch "
        f"({warmup} warm-up + {runs} runs)")
    systems = ["ps-llb", "bh-jobs4"]
    if buildctl:
        systems = [k for k in LLB_SYSTEMS if k != "psb-llb" or buildctl.get("podsolve")]
        base_def = os.path.join(work, "base.pb")
        with open(base_def, "wb") as f:
            f.write(base_only_definition())
    samples = {f"{k}-{phase}": [] for phase in ("cold", "cached") for k in systems}
    overlap = []
    overlap_by = {k: [] for k in ("psb-llb", "bkd-llb") if k in systems}
    for r in range(-warmup, runs):
        label = f"warmup{-r}" if r < 0 else f"run{r}"
        rdir = os.path.join(work, label)
        ps = Podsolved(rdir, podsolved)
        bh = Buildah(rdir)
        psb = Podsolved(os.path.join(rdir, "via-buildctl"), podsolved) if "psb-llb" in systems else None
        bkd = (BuildKitd(rdir, buildctl["buildkitd"], buildctl["buildctl"], buildctl["registry"])
               if "bkd-llb" in systems else None)
        try:
            # private storage for this round, the base image in it (not timed)
            for s in (ps, bh, psb):
                if s:
                    run_checked(["buildah", *s.storage_args(), "pull", "-q", f"docker-archive:{archive}"],
                                "buildah pull", env=env)
            ps.start(extra=upstream_flag)
            bctl = {}
            if psb:
                psb.start(extra=upstream_flag, buildkit_listen=True)
                bctl["psb-llb"] = "unix://" + psb.buildkit_sock
            if bkd:
                bkd.start()
                with open(base_def, "rb") as f:
                    run_checked([buildctl["buildctl"], "--addr", bkd.addr, "build"], "buildctl: pull the base "
                                "image into buildkitd", env=env, stdin=f)
                bctl["bkd-llb"] = bkd.addr
            req = os.path.join(rdir, "request.json")
            with open(req, "w") as f:
                json.dump({"ref": f"bench-llb-{label}",
                           "exporters": [{"type": "image", "attrs": {"name": "localhost/bench-llb:latest"}}]}, f)
            solve = ["curl", "-sS", "-N", "--unix-socket", ps.sock, "-F", f"request=<{req}",
                     "-F", f"definition=@{def_path};type=application/x-protobuf", "-w", _CURL_W,
                     "http://d/solve"]
            bh_argv = ["buildah", *bh.storage_args(), "build", *buildah_flags, "--jobs=4",
                       f"--file={os.path.join(ctx, 'Containerfile')}", "--tag=localhost/bench-llb:latest",
                       "--", ctx]
            times = {}
            steps = []
            for phase in ("cold", "cached"):
                for k in systems:
                    if k == "ps-llb":
                        steps.append((f"{k}-{phase}", solve, None, _solve_check(n_ops, phase == "cached")))
                    elif k == "bh-jobs4":
                        steps.append((f"{k}-{phase}", bh_argv, None, _check_exit))
                    else:
                        steps.append((f"{k}-{phase}", [buildctl["buildctl"], "--addr", bctl[k], "build",
                                                       "--progress=rawjson", "--output",
                                                       "type=image,name=localhost/bench-llb:latest"],
                                      def_path, _buildctl_check(n_ops, phase == "cached")))
            ovs = {}
            for key, argv, stdin_path, check in steps:
                c = Cmd(argv, env, os.path.join(logdir, wid, f"{key}-{label}.log"), check)
                if stdin_path:
                    c.stdin_path = stdin_path
                run_one(c)
                times[key] = c.elapsed
                if key.endswith("-cold") and key != "bh-jobs4-cold":
                    with open(c.log, errors="replace") as f:
                        text = f.read()
                    ovs[key[:-5]] = max_overlap(stream_facts(_curl_body_code(text)[0])[0]
                                                if key == "ps-llb-cold" else rawjson_facts(text))
                if r >= 0:
                    samples[key].append(c.elapsed)
            if r >= 0:
                overlap.append(ovs["ps-llb"])
                for k in overlap_by:
                    overlap_by[k].append(ovs[k])
            log(f"  {wid:12} {label:8} " + "; ".join(
                f"{phase}: " + ", ".join(f"{k} {times[f'{k}-{phase}']:7.3f} s" for k in systems)
                for phase in ("cold", "cached")) + "; at most " +
                ", ".join(f"{k} {v}" for k, v in ovs.items()) + " vertex(es) at once")
        finally:
            if bkd:
                bkd.stop()
            if psb:
                psb.stop()
            ps.stop()
            unmount_under(rdir)
            shutil.rmtree(rdir, ignore_errors=True)
    return {
        "title": f"LLB graph, {n_ops} ops in {BRANCHES} independent branches: podsolve (definition) vs "
                 "buildah build --jobs 4 (multi-stage Containerfile)",
        "kind": "llb", "ops": n_ops, "branches": BRANCHES, "scale": scale, "warmup": warmup,
        "samples_s": samples, "stats": {k: stats(v) for k, v in samples.items()},
        "podsolve_max_concurrent_vertices": overlap,
        "max_concurrent_vertices": overlap_by,
        "systems": systems,
        "containerfile": containerfile(scale),
    }


# -- graph width (bench/run --only scale-width; podbench/scaling.py) ---------
WIDTH_DEPTH = 2          # exec ops per branch


def width_commands(b, depth):
    """The exec steps of branch b of the width graph: a little real work each
    (1 MiB of random data hashed), every command naming its branch."""
    return [f"mkdir -p /work/out && busybox dd if=/dev/urandom bs=1M count=1 2>/dev/null | sha256sum "
            f"> /work/out/b{b}-s{i} && echo branch {b} step {i} >> /work/out/b{b}-s{i}"
            for i in range(depth)]


def width_definition(width, depth=WIDTH_DEPTH):
    """An LLB graph of ``width`` independent branches of ``depth`` exec ops
    each on a base FileOp, merged at the end by one FileOp (a copy of every
    branch's /work/out into /out/bN) and a final exec that checks the merge
    -> (pb.Definition bytes, number of ops without the terminal op)."""
    return _branches("width workload", [width_commands(b, depth) for b in range(width)],
                     f"merge: copy the {width} branches' /work/out",
                     f"test $(ls /out | wc -l) = {width} && test $(find /out -type f | wc -l) = {width * depth}",
                     "check the merge")
