"""Scaling with work: how each system's build time grows with the size of
the work, podsolve against buildkitd v0.32.2 through the same client.

Four tables (``bench/run --only scale-context`` etc.; the full run has all
four, ``--quick --smoke`` a small variant of each):

  scale-context  context size: 10 files of random (incompressible) content
                 totalling 10 MB / 100 MB / 1 GB; ``COPY . /ctx`` + a RUN
  scale-files    number of files: 1k / 10k / 100k small files (1000 per
                 directory), the same Dockerfile
  scale-steps    Dockerfile steps: 5 / 50 RUN and COPY steps, alternating
  scale-width    graph width: an LLB graph of 1 / 4 / 16 independent
                 branches of exec ops merged at the end (llbgraph.py)

The Dockerfile tables go through docker buildx v0.36.1 with its remote
driver (one builder for podsolved's --buildkit-listen socket, one for
buildkitd's; the same command line), the width table through buildctl
v0.32.2 with the same definition bytes to both.

Every point of every round gets fresh daemons: podsolved on new storage
with the base image copied in, buildkitd on a new root with the base image
pulled from the loopback registry (neither timed).  Then the **cold**
build (the first build that daemon sees) and the **no-op** rebuild (the
same command again: the context synced again, every step cached) are
timed.  Rounds are interleaved: for each round, every point, podsolve then
buildkitd.  Growth = median at a point ÷ median at the table's smallest
point, for each system on its own; the verdict says whether podsolve's
growth is no steeper than buildkitd's (podsolve's factor ≤ buildkitd's).
"""

import json
import os
import random
import shutil
import subprocess
import time
from datetime import datetime, timezone

from . import llbgraph
from .clients import Cmd, Context, Path, run_one
from .systems import BuildKitd, Podsolved, base_env, unmount_under
from .util import BenchError, fmt_s, log, run_checked, stats

TABLES = ("scale-context", "scale-files", "scale-steps", "scale-width")

FULL_POINTS = {
    "scale-context": [10_000_000, 100_000_000, 1_000_000_000],
    "scale-files": [1_000, 10_000, 100_000],
    "scale-steps": [5, 50],
    "scale-width": [1, 4, 16],
}
SMOKE_POINTS = {
    "scale-context": [1_000_000, 4_000_000],
    "scale-files": [100, 400],
    "scale-steps": [2, 6],
    "scale-width": [1, 2],
}
BIG_CONTEXT = 500_000_000     # context points from this size on get --scale-big-runs runs

TITLES = {
    "scale-context": "Context size",
    "scale-files": "Number of files",
    "scale-steps": "Number of Dockerfile steps",
    "scale-width": "Graph width",
}
CONTEXT_FILES = 10            # the context-size table: 10 files of size/10 bytes each
FILES_PER_DIR = 1000

SYSTEMS = ("ps", "bkd")
SYSTEM_LABEL = {"ps": "podsolve", "bkd": "buildkitd"}
PHASES = ("cold", "noop")
PHASE_LABEL = {"cold": "cold", "noop": "no-op rebuild"}
PHASE_LABEL_WIDTH = {"cold": "cold", "noop": "cached resubmission"}

BASE = llbgraph.BASE
BUILDERS = {"ps": "scale-podsolve", "bkd": "scale-buildkitd"}

DOCKERFILE_COPY = f"""FROM {BASE}
COPY . /ctx
RUN du -sk /ctx > /ctx-size && find /ctx -type f | wc -l > /ctx-files
"""


def point_label(table, v):
    if table == "scale-context":
        return f"{v / 1e9:g} GB" if v >= 1e9 else f"{v / 1e6:g} MB"
    if table == "scale-files":
        return f"{v / 1000:g}k files" if v >= 1000 else f"{v} files"
    if table == "scale-steps":
        return f"{v} steps"
    return f"{v} branch{'es' if v != 1 else ''}"


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def steps_dockerfile(n):
    """n steps after FROM: RUN and COPY (of step i's own file) alternating,
    the last one a RUN that checks the others' files."""
    lines = [f"FROM {BASE}"]
    for i in range(n - 1):
        if i % 2 == 0:
            lines.append(f"RUN mkdir -p /steps && echo step {i} > /steps/run-{i}")
        else:
            lines.append(f"COPY f{i}.txt /steps/f{i}.txt")
    lines.append(f"RUN test $(ls /steps | wc -l) = {n - 1}")
    return "\n".join(lines) + "\n"


def make_context(table, v, d):
    """The build context of one point in directory d (not timed)."""
    os.makedirs(d)
    if table == "scale-context":
        _write(os.path.join(d, "Dockerfile"), DOCKERFILE_COPY)
        rnd = random.Random(20261207 + v)    # the same bytes every run, incompressible
        per = v // CONTEXT_FILES
        for i in range(CONTEXT_FILES):
            with open(os.path.join(d, f"data{i:02d}.bin"), "wb") as f:
                left = per
                while left:
                    n = min(left, 8 << 20)
                    f.write(rnd.randbytes(n))
                    left -= n
    elif table == "scale-files":
        _write(os.path.join(d, "Dockerfile"), DOCKERFILE_COPY)
        for i in range(v):
            sub = os.path.join(d, f"d{i // FILES_PER_DIR:03d}")
            if i % FILES_PER_DIR == 0:
                os.makedirs(sub)
            _write(os.path.join(sub, f"f{i:06d}.txt"), f"small file {i:06d} of {v}\n")
    elif table == "scale-steps":
        _write(os.path.join(d, "Dockerfile"), steps_dockerfile(v))
        for i in range(1, v - 1, 2):
            _write(os.path.join(d, f"f{i}.txt"), f"the file of step {i}\n")
    else:
        raise ValueError(table)
    return Context(d, "Dockerfile")


class Setup:
    """What the tables need from bench/run: the binaries, the base image
    archive, the running loopback registry, the buildx DOCKER_CONFIG."""

    def __init__(self, top, logdir, podsolved, archive, registry, go_clients, bx_config,
                 docker_cli, upstream_flag):
        self.top = os.path.join(top, "scale")
        self.logdir = logdir
        self.podsolved = podsolved
        self.archive = archive
        self.registry = registry
        self.buildctl = go_clients["buildctl"]
        self.buildkitd = go_clients["buildkitd"]
        self.bx_config = bx_config
        self.docker_cli = docker_cli
        self.upstream_flag = upstream_flag
        self.env = base_env(top)
        os.makedirs(self.top, exist_ok=True)
        self.base_def = os.path.join(self.top, "base.pb")
        with open(self.base_def, "wb") as f:
            f.write(llbgraph.base_only_definition())
        self.rdir = {k: os.path.join(self.top, k) for k in SYSTEMS}
        self.paths = self._make_paths()

    def sock(self, k):
        """The socket each fresh daemon listens on (the same path every time,
        so one buildx builder per system serves every round)."""
        if k == "ps":
            return Podsolved(self.rdir["ps"], self.podsolved).buildkit_sock
        return BuildKitd(self.rdir["bkd"], self.buildkitd, self.buildctl, self.registry).sock

    def _make_paths(self):
        env = dict(self.env, DOCKER_CONFIG=self.bx_config)
        for k in ("BUILDX_BUILDER", "BUILDX_CONFIG", "BUILDKIT_PROGRESS", "BUILDKIT_HOST", "DOCKER_HOST"):
            env.pop(k, None)
        paths = {}
        for k in SYSTEMS:
            sock = self.sock(k)
            run_checked([self.docker_cli, "buildx", "create", "--name", BUILDERS[k], "--driver", "remote",
                         "unix://" + sock], f"docker buildx create {BUILDERS[k]}", env=env)
            p = Path(f"scale-{k}", SYSTEM_LABEL[k], "docker buildx, remote driver", "buildx-remote")
            p.env, p.docker_cli, p.builder, p.sock = env, self.docker_cli, BUILDERS[k], sock
            if k == "ps":
                root = Podsolved(self.rdir["ps"], self.podsolved)
                p.image_exists = lambda image, root=root: subprocess.run(
                    ["buildah", *root.storage_args(), "inspect", "--type", "image", image],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env).returncode == 0
            paths[k] = p
        return paths

    def start(self, k):
        """A fresh daemon for system k, the base image in it (not timed)."""
        rdir = self.rdir[k]
        if os.path.exists(rdir):
            unmount_under(rdir)
            shutil.rmtree(rdir)
        if k == "ps":
            d = Podsolved(rdir, self.podsolved)
            run_checked(["buildah", *d.storage_args(), "pull", "-q", f"docker-archive:{self.archive}"],
                        "buildah pull", env=self.env)
            d.start(extra=self.upstream_flag, buildkit_listen=True)
        else:
            d = BuildKitd(rdir, self.buildkitd, self.buildctl, self.registry)
            d.start()
            with open(self.base_def, "rb") as f:
                run_checked([self.buildctl, "--addr", d.addr, "build"], "buildctl: pull the base image "
                            "into buildkitd", env=self.env, stdin=f)
        return d

    def stop(self, k, d):
        try:
            d.stop()
        finally:
            unmount_under(self.rdir[k])
            shutil.rmtree(self.rdir[k], ignore_errors=True)


def _buildctl_cmd(s, k, def_path, n_ops, cached, log_path):
    argv = [s.buildctl, "--addr", "unix://" + s.sock(k), "build", "--progress=rawjson", "--output",
            "type=image,name=localhost/scale-width:latest"]
    c = Cmd(argv, s.env, log_path, llbgraph._buildctl_check(n_ops, cached))
    c.stdin_path = def_path
    return c


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def run_table(table, s, points, runs, big_runs):
    """One table: every point, `runs` interleaved rounds (big context points:
    `big_runs`) -> the results entry."""
    load_before = loadavg()
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    work = os.path.join(s.top, table)
    os.makedirs(work, exist_ok=True)
    labels = [point_label(table, v) for v in points]
    n_runs = {lab: (big_runs if table == "scale-context" and v >= BIG_CONTEXT else runs)
              for v, lab in zip(points, labels)}
    inputs = {}
    log(f"scaling table {table}: {', '.join(labels)}; making the inputs")
    for v, lab in zip(points, labels):
        d = os.path.join(work, f"p{v}")
        if table == "scale-width":
            os.makedirs(d)
            data, n_ops = llbgraph.width_definition(v)
            def_path = os.path.join(d, "definition.pb")
            with open(def_path, "wb") as f:
                f.write(data)
            inputs[lab] = (def_path, n_ops)
        else:
            inputs[lab] = make_context(table, v, d)
    samples = {f"{k}-{ph}": {lab: [] for lab in labels} for k in SYSTEMS for ph in PHASES}
    for r in range(max(n_runs.values())):
        for lab in labels:
            if r >= n_runs[lab]:
                continue
            for k in SYSTEMS:
                d = s.start(k)
                try:
                    times = {}
                    for ph in PHASES:
                        lp = os.path.join(s.logdir, table, f"{k}-{lab.replace(' ', '')}-{ph}-run{r}.log")
                        if table == "scale-width":
                            def_path, n_ops = inputs[lab]
                            c = _buildctl_cmd(s, k, def_path, n_ops, ph == "noop", lp)
                        else:
                            tag = f"scale-{table[6:]}-{lab.replace(' ', '').lower()}"
                            c = s.paths[k].command(inputs[lab], tag, False, lp)
                        run_one(c)
                        times[ph] = c.elapsed
                        samples[f"{k}-{ph}"][lab].append(c.elapsed)
                finally:
                    s.stop(k, d)
                log(f"  {table:13} run{r} {lab:12} {SYSTEM_LABEL[k]:9} cold {times['cold']:8.3f} s  "
                    f"{PHASE_LABEL[ 'noop']} {times['noop']:7.3f} s")
    shutil.rmtree(work, ignore_errors=True)
    st = {key: {lab: stats(v) for lab, v in by.items()} for key, by in samples.items()}
    entry = {
        "title": TITLES[table], "kind": "scale", "points": labels, "point_values": points,
        "runs": n_runs, "samples_s": samples, "stats": st,
        "client": "buildctl v0.32.2 (the same definition bytes)" if table == "scale-width"
                  else "docker buildx v0.36.1, remote driver (the same command line)",
        "date": started.strftime("%Y-%m-%d %H:%M UTC"), "duration_s": round(time.monotonic() - t0, 1),
        "load_before": load_before, "load_after": loadavg(),
    }
    entry["growth"] = growth(entry)
    return entry


def growth(entry):
    """{phase: {label: {"ps": factor, "bkd": factor, "ratio": ps÷bkd, "no_steeper": bool}}}"""
    out = {}
    first = entry["points"][0]
    for ph in PHASES:
        rows = {}
        for lab in entry["points"]:
            row = {}
            for k in SYSTEMS:
                a, b = entry["stats"][f"{k}-{ph}"].get(lab), entry["stats"][f"{k}-{ph}"].get(first)
                row[k] = a["median"] / b["median"] if a and b and b["median"] > 0 else None
            a, b = entry["stats"][f"ps-{ph}"].get(lab), entry["stats"][f"bkd-{ph}"].get(lab)
            row["ratio"] = a["median"] / b["median"] if a and b and b["median"] > 0 else None
            row["no_steeper"] = (row["ps"] <= row["bkd"]) if None not in (row["ps"], row["bkd"]) else None
            rows[lab] = row
        out[ph] = rows
    return out


def run_tables(tables, s, smoke, runs, big_runs, run_meta):
    """-> {table: entry}; run_meta (commit, machine, command) goes into each."""
    pts = SMOKE_POINTS if smoke else FULL_POINTS
    out = {}
    for t in tables:
        e = run_table(t, s, pts[t], runs, big_runs)
        e["run"] = dict(run_meta, smoke=smoke)
        out[t] = e
    return out


# -- report --------------------------------------------------------------------

def _cell(st):
    if not st:
        return "–"
    if st["n"] == 1:
        return fmt_s(st["median"])
    return f"{fmt_s(st['median'])} ({fmt_s(st['min'])}–{fmt_s(st['max'])})"


def _f(x):
    return "–" if x is None else f"×{x:.2f}"


def intro():
    return [
        "## Scaling with work\n",
        "How each system's build time grows with the size of the work: podsolve (its `--buildkit-listen` "
        "socket) against buildkitd v0.32.2, **through the same client**: docker buildx v0.36.1 with its "
        "remote driver for the Dockerfile tables (one builder per daemon, the same command line: "
        "`docker buildx build --builder B --output type=image,name=… --provenance=false "
        "--metadata-file … -f Dockerfile DIR`), buildctl v0.32.2 with the same definition bytes for "
        "the graph-width table. Every point of every round gets **fresh daemons** (podsolved on new "
        "storage, buildkitd on a new root, the base image put in each, not timed): **cold** is the "
        "first build that daemon sees, **no-op** the same command again right after (the context "
        "synced again, every step cached). Rounds interleave: each round runs every point, podsolve "
        "then buildkitd. **Growth** = median at that point ÷ median at the table's smallest point, for "
        "each system on its own; the verdict column says whether podsolve's growth is no steeper than "
        "buildkitd's (podsolve's factor ≤ buildkitd's, no tolerance). Other helpers loaded the machine "
        "during these runs (load averages below): read the ratios within a table, not absolute times.\n",
        "- **Context size**: 10 files of random (incompressible) bytes totalling the size; "
        "`COPY . /ctx` and a `RUN du -sk /ctx; find /ctx -type f | wc -l`.",
        "- **Number of files**: that many small files (≈30 bytes each, 1000 per directory), "
        "the same Dockerfile.",
        "- **Dockerfile steps**: that many steps after `FROM`: `RUN` and `COPY` (of a file of its own) "
        "alternating, the last a `RUN` checking the others' files.",
        f"- **Graph width**: an LLB graph of N independent branches of {llbgraph.WIDTH_DEPTH} exec ops "
        "each (1 MiB of random data hashed per op) on a base FileOp, merged by one FileOp copying every "
        "branch's output and a final exec checking the merge "
        "(`bench/podbench/llbgraph.py:width_definition`).\n",
        "Reproduce one table in minutes: `bench/run --only scale-context` (or `scale-files`, "
        "`scale-steps`, `scale-width`; `--only scale` runs all four); results land in "
        "`bench/out/scale-*/` and in this section.\n",
    ]


def table_section(table, e):
    """The ### subsection of one table."""
    L = []
    w = L.append
    w(f"### {TITLES[table]} (`bench/run --only {table}`)\n")
    if not e:
        w("**Figures: pending** — no run of this table yet.\n")
        return L
    r = e.get("run", {})
    runs = sorted(set(e["runs"].values()), reverse=True)
    runs_txt = (f"median (min–max) of {runs[0]} run{'s' if runs[0] != 1 else ''}" if len(runs) == 1 else
                "median (min–max) of " + ", ".join(f"{n} runs at {', '.join(l for l, m in e['runs'].items() if m == n)}"
                                                  for n in runs))
    w(f"Run: `{r.get('command', '?')}`, {e['date']}, podsolve commit {r.get('commit', '?')}, "
      f"{r.get('machine', '?')}; load average {e['load_before'][0]:.2f} before, "
      f"{e['load_after'][0]:.2f} after; {e['duration_s']:.0f} s. {runs_txt}"
      + (" (fewer at the 1 GB point: each round there moves 1 GB through each daemon twice)"
         if len(runs) > 1 else "") + f". Client: {e['client']}.\n")
    plabel = PHASE_LABEL_WIDTH if table == "scale-width" else PHASE_LABEL
    w("| point | phase | podsolve | buildkitd | podsolve ÷ buildkitd | podsolve growth | buildkitd growth "
      "| podsolve's growth no steeper than buildkitd's |")
    w("|---|---|---|---|---|---|---|---|")
    g = e["growth"]
    for ph in PHASES:
        for i, lab in enumerate(e["points"]):
            row = g[ph][lab]
            verdict = "(base)" if i == 0 else {True: "yes", False: "**no**", None: "–"}[row["no_steeper"]]
            rt = "–" if row["ratio"] is None else f"{row['ratio']:.2f}"
            w(f"| {lab} | {plabel[ph]} | {_cell(e['stats'][f'ps-{ph}'].get(lab))} | "
              f"{_cell(e['stats'][f'bkd-{ph}'].get(lab))} | {rt} | {_f(row['ps'])} | {_f(row['bkd'])} | {verdict} |")
    w("")
    if e.get("notes"):
        for n in e["notes"]:
            w(n + "\n")
    return L


# What the tables say and why, from the runs of 2026-12-07 (bench/scaling-results.json)
# and the diagnostics made beside them; kept with the tables by splice_into() and section().
FINDINGS_HEAD = "#### What the growth says (runs of 2026-12-07)"
FINDINGS = [
    FINDINGS_HEAD + "\n",
    "Growth factors compare each system with itself, so a system with a large fixed cost (podsolve's "
    "per-build session, sync and `buildah build` start) looks flatter than one whose fixed cost is "
    "small: the marginal cost per unit of work is given beside each finding.\n",
    "- **Context size: yes** (×23 vs ×42 from 10 MB to 1 GB; added time podsolve 16.7 s, "
    "buildkitd 20.7 s), in the quietest of three runs (13:04 UTC, load 1.7 → 2.1, 5 rounds). Of the "
    "two runs before it (git history of this file), the one at 12:45 UTC also said yes (×29 vs ×38), "
    "the one at 12:51 UTC (load 3.8 → 5.9) said no (×33 vs ×23) only because buildkitd's 10 MB "
    "median was 1.36 s against 0.55 s in its first round: podsolve was faster at every point of that "
    "run too. Where the time goes at 1 GB (buildx's progress lines, 5 runs): the context transfer "
    "2.4–2.7 s for podsolve's DiffCopy receive vs 2.8–3.5 s for buildkitd's; then podsolve's `COPY` "
    "in buildah 13.5–15.6 s (buildah-copier writes the 1 GB into the container, the layer commit "
    "writes it again), against buildkitd's `COPY` 1.1 s plus 15.7–20.0 s of `exporting layers` "
    "(gzip of the incompressible 1 GB layer for its image store). Nothing of podsolve's own grows "
    "faster than the bytes.",
    "- **Number of files: yes** (×38 vs ×40 from 1k to 100k files). podsolve's own part, the "
    "FileSync/DiffCopy receive, took 12–15 s for 100k files against buildkitd's 48 s (the "
    "`transferring context` lines of the build logs); it is flat per file: an strace of a 10k-file "
    "build shows the receiving thread doing ≈ 1 openat, 1 fchown, 1 fchmod, 1 utimensat, 2 "
    "newfstatat and about 3 writes (the file's data and the socket frames of its REQ) per file, nothing that grows "
    "with the number of files already received. The rest is buildah's `COPY`: buildah-copier writes "
    "every file into the container, then the layer commit (`storage-untar`) writes every file again "
    "into the new layer, and removing the intermediate container unlinks them (≈ 10k unlinkat in "
    "the same trace); 37–127 s at 100k files, swinging with the I/O pressure of the other helpers' "
    "work (`/proc/pressure/io` some avg60 8.7 % during the run).",
    "- **Dockerfile steps: no** (×11.6 vs ×6.1 from 5 to 50 steps; per added step podsolve 0.26 s, "
    "buildkitd 0.05 s; run of 13:36 UTC, load 3.1 → 2.3; the loaded run of 12:15 UTC said ×11.1 vs "
    "×6.7). **The cost is buildah's**: the same 5- and 50-step Dockerfiles built by raw "
    "`buildah build` with podsolved's exact flags on fresh storage (2026-12-07 12:32 UTC, beside the "
    "scale-files run) took 1.52 / 2.05 s and 28.6 / 36.1 s (×17–19), i.e. podsolve's 50-step time "
    "*is* buildah's time; podsolve adds a fixed cost, not a per-step one. Under `--layers` buildah "
    "commits every step as a layer (a `storage-untar` re-exec writing the layer again, an image "
    "record) and runs every `RUN` through runc create/start/delete (bench/PROFILE.md); buildkitd's "
    "overlayfs snapshotter commits a step by keeping its upper directory. BuildKit-mode Dockerfiles "
    "still run on `buildah build`; the direct `runc run` below is the LLB engine's.",
    '- **Graph width: yes** since LLB execs keep their results as snapshots (run of 21:06 UTC at e14'
    'e79a, load 4.9 → 5.4: ×2.5 vs ×4.2 from 1 to 16 branches of 2 execs; per added branch podsolve '
    '0.07 s, buildkitd 0.09 s; podsolve ÷ buildkitd 1.70 at 1 branch, 1.00 at 16). Before (17:56 UTC'
    ' at 27c747b, load 1.7 → 9.7) it was **no**: ×6.2 vs ×4.4, 0.30 s per added branch, because ever'
    'y exec cost `buildah from` (≈ 60 ms), `buildah mount` (≈ 40 ms) and `buildah commit` (≈ 155 ms,'
    ' a layer and an image record) around its `runc run`. Now an exec on the direct path is one `run'
    "c run` on an overlay of podsolved's own whose upper directory is the result (solver/llb/snapsho"
    't.h), the merge reads the branches through read-only overlays, and one `skopeo copy` makes the '
    "final image (a layer per exec) — buildkitd's design: an exec in a snapshot it keeps as the resu"
    "lt. What is left is a fixed cost (the single-branch build is 0.29 s slower than buildkitd's: th"
    "e export's `skopeo copy` and the file ops, which still commit through buildah). Both run the br"
    'anches concurrently (podsolve at most 4 vertices at once, its `--max-parallel` default; buildki'
    'td all 16) on 2 vCPUs. The cached resubmission stays flat (×1.06 vs ×1.21 at 16 branches; at 4 '
    'branches ×1.14 vs ×0.94, within a few milliseconds of 20 ms).',
    "- **No-op rebuilds: yes at every point but one** (width 4, cached resubmission: ×1.17 for both, "
    "podsolve's a hair steeper in the unrounded medians) — within tens of milliseconds of "
    "buildkitd's at the small points and below them at the large ones (1 GB: 0.13 s vs 0.16 s; 100k "
    "files: 2.8 s vs 3.5 s; 50 steps: 0.12 s vs 0.19 s; 16 branches: 16 ms vs 37 ms).\n",
]


def section(entries):
    """The whole "Scaling with work" section from {table: entry}."""
    L = intro()
    for t in TABLES:
        L += table_section(t, entries.get(t))
    return L + FINDINGS


def splice_into(md_path, new_entries):
    """Put the tables of an --only run into ``md_path``'s "Scaling with work"
    section: the tables this run made replace theirs; the others stay as
    they are (they name the run that made them)."""
    with open(md_path) as f:
        text = f.read()
    head = "## Scaling with work\n"
    start = text.find(head)
    if start < 0:
        anchor = text.find("## Proxy overhead")
        if anchor < 0:
            anchor = text.find("## Not measured yet")
        if anchor < 0:
            anchor = len(text)
        before, old, after = text[:anchor], "", text[anchor:]
    else:
        end = text.find("\n## ", start + len(head))
        end = len(text) if end < 0 else end + 1
        before, old, after = text[:start], text[start:end], text[end:]
    # the existing subsections (up to the findings after the last one)
    subs = {}
    cur = None
    for line in old.splitlines():
        if line.startswith("### "):
            cur = next((t for t in TABLES if f"`bench/run --only {t}`" in line), None)
            if cur:
                subs[cur] = [line]
                continue
        if line.startswith("#### What the growth says"):
            cur = None
        if cur:
            subs[cur].append(line)
    L = intro()
    for t in TABLES:
        if t in new_entries:
            L += table_section(t, new_entries[t])
        elif t in subs:
            L += subs[t]
        else:
            L += table_section(t, None)
    L += FINDINGS
    body = "\n".join(L).rstrip("\n") + "\n\n"
    with open(md_path, "w") as f:
        f.write(before + body + after)


def save_results(path, new_entries):
    """bench/scaling-results.json: the latest real run of each table."""
    try:
        with open(path) as f:
            allres = json.load(f)
    except (OSError, ValueError):
        allres = {}
    allres.update(new_entries)
    with open(path, "w") as f:
        json.dump(allres, f, indent=1)
        f.write("\n")


def problems(entries, tables, runs):
    """The smoke check: every table, every point, both systems, both phases."""
    out = []
    for t in tables:
        e = entries.get(t)
        if not e:
            out.append(f"{t}: no results")
            continue
        for key in (f"{k}-{ph}" for k in SYSTEMS for ph in PHASES):
            for lab in e["points"]:
                st = e["stats"].get(key, {}).get(lab)
                if not st or st["n"] != e["runs"][lab]:
                    out.append(f"{t}/{key}/{lab}: expected {e['runs'][lab]} samples")
        for ph in PHASES:
            for lab in e["points"][1:]:
                if e["growth"][ph][lab]["no_steeper"] is None:
                    out.append(f"{t}/{ph}/{lab}: no growth factors")
    return out
