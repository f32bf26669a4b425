"""results.json, BENCHMARKS.md and the ratio chart, from one run's results."""

import json
import math
import os
import re
import shutil
import statistics
import subprocess

from . import scaling
from . import stores
from .util import BenchError, fmt_bytes, fmt_s, log, stats

BUILD_WORKLOADS = ["4step-first", "4step-noop", "heavy-cold", "heavy-noop", "heavy-change"]
SHORT = {"4step-first": "4-step first", "4step-noop": "4-step no-op",
         "heavy-cold": "heavy cold", "heavy-noop": "heavy no-op",
         "heavy-change": "heavy 1 file changed", "concurrent8": "8 at once",
         "first-line-grpc": "first Control.Status (gRPC)"}
# the client path over POST /grpc (docker buildx, docker driver)
GRPC_PATH = "ps-bx"
# the modern anchor: docker buildx, remote driver, the same command line for
# podsolved's --buildkit-listen socket and for buildkitd v0.32.2
BKD_PS, BKD = "ps-bxr", "bkd-bx"

# Comparison groups: a table each.  (title, columns, [(podsolve path, anchor path)])
GROUPS = [
    ("curl `POST /build` (Docker-compatible endpoint): podsolve vs Podman",
     ["ps-curl", "pm-curl"], [("ps-curl", "pm-curl")]),
    ("docker 20.10 CLI, BuildKit mode (`DOCKER_BUILDKIT=1`): podsolve vs Docker Engine "
     "(and vs Podman's `/build`, which has no BuildKit mode)",
     ["ps-bk", "dk-bk", "pm-curl"], [("ps-bk", "dk-bk"), ("ps-bk", "pm-curl")]),
    ("curl `POST /solve` vs `buildah build` on the same inputs with the same flags",
     ["ps-solve", "buildah"], [("ps-solve", "buildah")]),
    ("docker 20.10 CLI, legacy builder (`DOCKER_BUILDKIT=0`): podsolve vs Docker Engine",
     ["ps-legacy", "dk-legacy"], [("ps-legacy", "dk-legacy")]),
    ("docker buildx v0.36.1 (docker driver, BuildKit's gRPC API on `POST /grpc`) → podsolve, "
     "beside the docker 20.10 CLI's BuildKit mode against podsolve and Docker Engine",
     ["ps-bx", "ps-bk", "dk-bk"], [("ps-bx", "dk-bk")]),
]

CHART_PAIRS = [(BKD_PS, BKD, "buildx remote driver: podsolve / buildkitd v0.32.2"),
               ("ps-curl", "pm-curl", "curl /build: podsolve / Podman"),
               ("ps-bk", "dk-bk", "docker BuildKit: podsolve / Docker"),
               ("ps-solve", "buildah", "/solve / buildah build"),
               ("ps-legacy", "dk-legacy", "docker legacy: podsolve / Docker")]


def _med(res, wid, pid):
    st = res["workloads"].get(wid, {}).get("stats", {}).get(pid)
    return st["median"] if st else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def _cell(st):
    """median (min–max), all three in the median's unit."""
    if not st:
        return "–"
    med = fmt_s(st["median"])
    if st["n"] == 1:
        return med
    if med.endswith(" ms"):
        return f"{med} ({st['min'] * 1000:.1f}–{st['max'] * 1000:.1f})"
    return f"{med} ({st['min']:.2f}–{st['max']:.2f})"


def _fr(r):
    return "–" if r is None else f"{r:.2f}"


def _mb(kb):
    return f"{kb / 1024:.1f} MB"


def compute_ratios(res):
    out = []
    paths = res.get("paths", {})
    for wid in BUILD_WORKLOADS + ["first-line"]:
        for ps, anchor, label in CHART_PAIRS:
            if ps in paths and anchor in paths:
                r = _ratio(_med(res, wid, ps), _med(res, wid, anchor))
                if r is not None:
                    out.append({"workload": wid, "podsolve": ps, "anchor": anchor,
                                "label": label, "ratio": round(r, 4)})
    llb = res["workloads"].get("llb-branches")
    if llb:
        for phase in ("cold", "cached"):
            for ps, anchor, label in (("psb-llb", "bkd-llb", "LLB buildctl: podsolve / buildkitd v0.32.2"),
                                      ("ps-llb", "bh-jobs4", "LLB /solve / buildah build --jobs 4")):
                a, b = llb["stats"].get(f"{ps}-{phase}"), llb["stats"].get(f"{anchor}-{phase}")
                if a and b:
                    out.append({"workload": f"llb-{phase}", "podsolve": ps, "anchor": anchor,
                                "label": label, "ratio": round(a["median"] / b["median"], 4)})
    conc = res["workloads"].get("concurrent8")
    if conc:
        cs = conc["stats"]["concurrent"]
        for ps, anchor, label in CHART_PAIRS:
            if ps in cs and anchor in cs:
                out.append({"workload": "concurrent8", "podsolve": ps, "anchor": anchor,
                            "label": label,
                            "ratio": round(cs[ps]["median"] / cs[anchor]["median"], 4)})
        ss = conc["stats"]["serial"]
        if BKD_PS in ss and BKD in ss:
            out.append({"workload": "serial8", "podsolve": BKD_PS, "anchor": BKD,
                         "label": CHART_PAIRS[0][2],
                         "ratio": round(ss[BKD_PS]["median"] / ss[BKD]["median"], 4)})
    fg = res["workloads"].get("first-line-grpc", {}).get("stats", {})
    if fg.get(BKD_PS) and fg.get(BKD):
        out.append({"workload": "first-line-grpc", "podsolve": BKD_PS, "anchor": BKD,
                    "label": CHART_PAIRS[0][2], "ratio": round(fg[BKD_PS]["median"] / fg[BKD]["median"], 4)})
    a, b = _heavy_peaks(res)
    if a and b:
        out.append({"workload": "heavy-peak-rss", "podsolve": BKD_PS, "anchor": BKD,
                    "label": "peak RSS of the daemon's process tree during its heavy buildx (remote "
                             "driver) builds: podsolve / buildkitd",
                    "ratio": round(a / b, 4)})
    return out


def _heavy_peaks(res):
    """(podsolve's, buildkitd's) peak tree RSS in kB while their buildx
    remote-driver heavy builds ran, or Nones."""
    bp = res.get("memory", {}).get("heavy_tree_peak_by_path_kb") or {}
    return bp.get("podsolve", {}).get(BKD_PS), bp.get("buildkitd", {}).get(BKD)


def evaluate_targets(res):
    t = []
    paths = res.get("paths", {})

    def add(target, measured, ok):
        t.append({"target": target, "measured": measured, "met": ok})

    fl = res["workloads"].get("first-line", {}).get("stats", {})
    for pid, name in (("ps-solve", "/solve"), ("ps-curl", "/build v1 (curl)"),
                      ("ps-legacy", "/build v1 (docker legacy)"), ("ps-bk", "/build v2 (docker BuildKit)")):
        if fl.get(pid):
            m = fl[pid]["median"]
            add(f"{name}: request to first status line ≤ 10 ms", fmt_s(m), m <= 0.010)
    if "ps-solve" in paths and "buildah" in paths:
        for wid in BUILD_WORKLOADS:
            r = _ratio(_med(res, wid, "ps-solve"), _med(res, wid, "buildah"))
            if r is not None:
                add(f"{SHORT[wid]}: /solve overhead vs buildah build ≤ 5 %",
                    f"{(r - 1) * 100:+.0f} % ({fmt_s(_med(res, wid, 'ps-solve'))} vs "
                    f"{fmt_s(_med(res, wid, 'buildah'))})", r <= 1.05)
    if "ps-bk" in paths and "dk-bk" in paths:
        for wid in ("heavy-cold", "heavy-noop", "heavy-change"):
            a, b = _med(res, wid, "ps-bk"), _med(res, wid, "dk-bk")
            if a is not None and b is not None:
                add(f"{SHORT[wid]}: podsolve ≤ Docker BuildKit (docker CLI, BuildKit mode)",
                    f"{fmt_s(a)} vs {fmt_s(b)} (ratio {a / b:.2f})", a <= b)
    idle = res.get("memory", {}).get("idle_starts_kb", {}).get("podsolved")
    if idle:
        m = statistics.median(s["VmRSS"] for s in idle)
        add("podsolved idle VmRSS ≤ 4 MB", _mb(m), m <= 4096)
    return t


# ----------------------------------------------------------------------------

def _pow2_label(e):
    return str(2 ** e) if e >= 0 else f"1/{2 ** -e}"


def chart(res, ratios, png):
    """Clustered bars of podsolve/anchor ratios per workload (log scale)."""
    if not shutil.which("gnuplot"):
        log("gnuplot not found (apt-get install gnuplot-nox): no chart")
        return False
    wids = [w for w in BUILD_WORKLOADS + ["concurrent8"] if any(r["workload"] == w for r in ratios)]
    pairs = [p for p in CHART_PAIRS if any(r["label"] == p[2] for r in ratios)]
    if not wids or not pairs:
        return False
    dat = png[:-4] + ".dat"
    with open(dat, "w") as f:
        f.write("workload\t" + "\t".join(f'"{p[2]}"' for p in pairs) + "\n")
        for w in wids:
            row = [f'"{SHORT[w]}"']
            for p in pairs:
                v = next((r["ratio"] for r in ratios if r["workload"] == w and r["label"] == p[2]), None)
                row.append(f"{v:.4f}" if v else "NaN")
            f.write("\t".join(row) + "\n")
    m = res["meta"]
    vals = [r["ratio"] for r in ratios if r["workload"] in wids and r["label"] in [p[2] for p in pairs]]
    lo = 2.0 ** min(-1, math.floor(math.log2(min(vals))))
    hi = 2.0 ** max(1, math.ceil(math.log2(max(vals) * 1.1)))
    tics = ", ".join(f'"{_pow2_label(e)}" {2.0 ** e}' for e in range(int(math.log2(lo)), int(math.log2(hi)) + 1))
    script = f"""
set terminal pngcairo size 1000,600 font "DejaVu Sans,11"
set output "{png}"
set title "podsolve ÷ anchor: ratio of median times (below 1 = podsolve faster)\\n{m['mode']} run of {m['date']}: {m['runs']} timed run(s) per cell, {m['machine']['cpus']} vCPU; numbers in BENCHMARKS.md"
set style data histograms
set style histogram clustered gap 1.5
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y 2
set yrange [{lo}:{hi}]
set ytics ({tics})
set grid ytics
set ylabel "podsolve / anchor (log scale)"
set key below horizontal maxcols 2 width -6
set xtics scale 0 font ",10"
set datafile missing "NaN"
set datafile separator "\\t"
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 lc rgb "black"
plot for [i=2:{len(pairs) + 1}] "{dat}" using i:xtic(1) title columnheader(i)
"""
    p = subprocess.run(["gnuplot"], input=script.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    os.unlink(dat)
    if p.returncode != 0:
        log("gnuplot failed: " + p.stdout.decode(errors="replace")[-500:])
        return False
    return True


# ----------------------------------------------------------------------------

def _idle_rows(res):
    mem = res["memory"]
    rows = []
    starts = mem.get("idle_starts_kb", {})
    first = mem["idle_first_start_kb"]
    for name, label in (("podsolved", "podsolved"), ("podman service", "podman system service 4.3.1")):
        s = starts.get(name) or [first[name]]
        v = [x["VmRSS"] for x in s]
        rng = f" ({_mb(min(v))}–{_mb(max(v))})".replace(" MB–", "–") if len(v) > 1 else ""
        rows.append((label, len(v), f"{_mb(statistics.median(v))}{rng}",
                     _mb(statistics.median(x["RssAnon"] for x in s)),
                     _mb(statistics.median(x["RssFile"] for x in s)),
                     _mb(statistics.median(x["Pss"] for x in s))))
    if "dockerd" in first:
        for name, label in (("dockerd", "dockerd 20.10 (overlay2)"), ("containerd", "containerd 1.6")):
            x = first[name]
            rows.append((label, 1, _mb(x["VmRSS"]), _mb(x["RssAnon"]), _mb(x["RssFile"]), _mb(x["Pss"])))
        tot = {k: first["dockerd"][k] + first["containerd"][k] for k in ("VmRSS", "RssAnon", "RssFile", "Pss")}
        rows.append(("**dockerd + containerd**", 1, _mb(tot["VmRSS"]), _mb(tot["RssAnon"]),
                     _mb(tot["RssFile"]), _mb(tot["Pss"])))
    return rows


def _kb_cell(kb):
    return _mb(kb) if kb else "–"


def buildkitd_section(res):
    """The leading table: podsolve ÷ buildkitd v0.32.2, the same client."""
    paths = res.get("paths", {})
    wl = res.get("workloads", {})
    if BKD not in paths or BKD_PS not in paths:
        return []
    v = res["meta"]["machine"]["versions"]
    L = []
    w = L.append
    w("## podsolve ÷ buildkitd v0.32.2 (same buildx / buildctl client)\n")
    w(f"The modern anchor: {v.get('buildkitd', 'buildkitd v0.32.2')} (built with Go from the module proxy by "
      "`scripts/get-go-clients --only buildkitd`, OCI worker with runc and the overlayfs snapshotter, host "
      "network, a private root; see *How each system runs*). Both daemons are driven by **the same client "
      "with the same command line**, so the only difference is the daemon: docker buildx v0.36.1 with a "
      "`remote`-driver builder (`docker buildx create --driver remote unix://SOCK`) pointed at podsolved's "
      "`--buildkit-listen` socket or at buildkitd's, `docker buildx build --builder NAME --output "
      "type=image,name=localhost/TAG:latest --provenance=false --metadata-file F`; and, for the LLB graph, buildctl v0.32.2 "
      "piping the same definition bytes (`buildctl --addr unix://SOCK build --output type=image,… < "
      "def.pb`). The right-hand columns are podsolve through buildx's `docker` driver (`POST /grpc` on "
      "its Docker API socket, the image exported into its store the docker way) against the same "
      "buildkitd. Median (min–max); ratio = podsolve ÷ buildkitd, below 1 means podsolve is faster "
      "(or smaller).\n")
    head = [paths[BKD_PS]["label"] + " (`--buildkit-listen`)", paths[BKD]["label"], "**podsolve ÷ buildkitd**"]
    has_bx = GRPC_PATH in paths
    if has_bx:
        head += [paths[GRPC_PATH]["label"] + " (docker driver, `POST /grpc`)", "÷ buildkitd"]
    w("| workload | " + " | ".join(head) + " |")
    w("|---" * (len(head) + 1) + "|")

    def row(name, a, b, c=None, fmt=_cell):
        cells = [fmt(a), fmt(b), f"**{_fr(_ratio(a and a['median'], b and b['median']))}**"]
        if has_bx:
            cells += [fmt(c), _fr(_ratio(c and c["median"], b and b["median"]))] if c else ["–", "–"]
        w(f"| {name} | " + " | ".join(cells) + " |")

    for wid in ("heavy-noop", "heavy-change", "4step-first", "4step-noop", "heavy-cold"):
        if wid in wl:
            st = wl[wid]["stats"]
            row(SHORT[wid], st.get(BKD_PS), st.get(BKD), st.get(GRPC_PATH))
    cc = wl.get("concurrent8")
    if cc and BKD in cc["stats"]["concurrent"] and BKD_PS in cc["stats"]["concurrent"]:
        c, s_ = cc["stats"]["concurrent"], cc["stats"]["serial"]
        row("8 small builds at once (wall time)", c.get(BKD_PS), c.get(BKD))
        row("8 small builds one by one (total)", s_.get(BKD_PS), s_.get(BKD))
        cs = {k: s_[k]["median"] / c[k]["median"] for k in (BKD_PS, BKD)}
        conc_line = (f"Concurrent vs serial (serial ÷ concurrent, higher = more gained from running the "
                     f"eight at once): podsolve {cs[BKD_PS]:.2f}, buildkitd {cs[BKD]:.2f}.")
    else:
        conc_line = None
    llb = wl.get("llb-branches")
    if llb and llb["stats"].get("bkd-llb-cold") and llb["stats"].get("psb-llb-cold"):
        for phase, name in (("cold", "cold"), ("cached", "fully cached")):
            row(f"LLB graph, {llb['ops']} ops, {name} (buildctl, same definition)",
                llb["stats"].get(f"psb-llb-{phase}"), llb["stats"].get(f"bkd-llb-{phase}"))
    fg = wl.get("first-line-grpc")
    if fg and fg["stats"].get(BKD):
        st = fg["stats"]
        row("first status line (client start → first Control.Status)", st.get(BKD_PS), st.get(BKD),
            st.get(GRPC_PATH))
    hp = res.get("memory", {}).get("heavy_tree_peak_kb") or {}
    a, b = _heavy_peaks(res)
    if b:
        c = (res["memory"].get("heavy_tree_peak_by_path_kb") or {}).get("podsolve", {}).get(GRPC_PATH)
        w(f"| peak RSS of the daemon's whole process tree, heavy builds | {_kb_cell(a)} | {_kb_cell(b)} | "
          f"**{_fr(_ratio(a, b))}** |" + (f" {_kb_cell(c)} | {_fr(_ratio(c, b))} |" if has_bx else ""))
    w("")
    notes = []
    if conc_line:
        notes.append(conc_line)
    notes.append("The heavy rows: 2000 small files + one 50 MiB random file, `COPY . /ctx` + `RUN` "
                 "(see *Workloads* below); buildx syncs the context to each daemon over its session "
                 "(only what changed, once synced). Exporting `type=image` makes buildkitd write "
                 "registry-format (gzip-compressed) layer blobs and a manifest into its image store; "
                 "podsolved commits the image into containers-storage. `--provenance=false` for both: "
                 "podsolved makes no attestations, so buildkitd is not asked for the one buildx "
                 "requests by default either.")
    if b:
        notes.append("Peak RSS: the largest summed RSS of the daemon's process tree (the daemon and "
                     "every descendant: buildah and runc for podsolved, runc for buildkitd), sampled "
                     "every 0.5 s while that column's heavy builds (cold, no-op, 1 file changed) ran; "
                     "builds run one at a time, so each figure belongs to its client path alone"
                     + (f" (over all of podsolve's client paths: {_mb(hp['podsolve'])})" if hp.get("podsolve") else "")
                     + ". The loopback registry serving buildkitd's base image is not counted.")
    if llb and llb["stats"].get("bkd-llb-cold"):
        ov = llb.get("max_concurrent_vertices") or {}
        if ov.get("bkd-llb") and ov.get("psb-llb"):
            notes.append(f"LLB graph: a fresh daemon on fresh storage per round, the base image already "
                         f"there (buildkitd pulls it from the loopback registry before the timed build); at "
                         f"most {max(ov['psb-llb'])} (podsolve) and {max(ov['bkd-llb'])} (buildkitd) vertices "
                         f"ran at once in a cold build.")
    w(" ".join(notes) + "\n")
    return L


def markdown(res, chart_rel, data_rel):
    m = res["meta"]
    mc = m["machine"]
    paths = res.get("paths", {})
    wl = res["workloads"]
    L = []
    w = L.append
    w("# Benchmarks\n")
    w("All figures are measured by `bench/run` on the project's machine kind, with podsolve and the")
    w("systems users would pick instead (buildkitd v0.32.2, Podman's API service, Docker Engine 20.10")
    w("with BuildKit and the legacy builder, raw buildah) set up by the harness in private directories and measured")
    w("**in the same run, interleaved** (A B C A B C …). These machines are shared and noisy: read")
    w("medians and ratios, not lone absolute times. Ratio = median(podsolve) ÷ median(anchor);")
    w("below 1 means podsolve is faster.\n")
    w("- **Reproduce** (as root): `scripts/install-deps && make -j2 && make bench` (`make bench` runs "
      "`bench/run`; `bench/run --quick` is a 1-run check in under 3 minutes). "
      f"This file came from `{m['command']}`. Raw numbers: [`results.json`]({data_rel}results.json); "
      f"per-build logs: `bench/out/logs-{m['mode'] if not m.get('smoke') else 'smoke'}/`.")
    hw = "" if m.get("heavy_warmup", m["warmup"]) == m["warmup"] else \
        f" ({m['heavy_warmup']} for the self-contained heavy cold / one-file-changed runs; a no-op always has one)"
    w(f"- **Run**: {m['date']}, {m['mode']} mode, {m['runs']} timed runs per workload and path after "
      f"{m['warmup']} warm-up{hw}; {m['duration_s']:.0f} s from start to this report (deleting "
      "the private stores afterwards comes on top); load average "
      f"{m['load_before'][0]:.2f} before, {m['load_after'][0]:.2f} after.")
    w(f"- **Machine**: {mc['cpu']}, {mc['cpus']} vCPU, {mc['mem_gib']} GiB, Debian {mc['debian']}, "
      f"kernel {mc['kernel']}, cgroups {mc['cgroups']}.")
    v = mc["versions"]
    t = m.get("podsolve_tree")
    if t:
        lc = f" + {t['local_changes']} locally changed file(s)" if t["local_changes"] else ""
        how = ("built by the harness from `git archive` of that commit" if t.get("from_archive")
               else "the tree's `server/podsolved`")
        w(f"- **podsolve measured**: commit {t['commit']}{lc}, {how}, built {t['binary_mtime']} "
          "(a private copy is run, so a rebuild during the run changes nothing).")
    w(f"- **Versions**: {v['podsolved']}; {v['podman']}; {v['buildah']}; {v['docker CLI']}; "
      f"dockerd {v['dockerd'].split('version ')[-1]}; {v['containerd']}; {v['runc']}"
      + (f"; {v['buildkitd']}; {v['buildctl']}" if v.get("buildkitd") else "") + ".")
    if res.get("isolation"):
        w(f"- **RUN isolation**: podsolved chose `{res['isolation'].split(',')[0]}` (crun refuses hybrid "
          "cgroups); raw buildah gets the same flags. Podman's service runs RUN with runc (its "
          "containers.conf), dockerd with runc via containerd; BuildKit's RUN gets a network "
          "namespace on the docker0 bridge" + ("; buildkitd v0.32.2 runs RUN with runc and "
          "`--oci-worker-net=host`, the host network, as podsolved's and buildah's `--network=host`."
          if BKD in paths else "."))
    w("")
    L += buildkitd_section(res)
    w("## How each system runs\n")
    w("| system | set up by bench/run |")
    w("|---|---|")
    up = " --upstream unix://<the Podman socket below>" if m.get("podsolved_upstream") else ""
    bl = (" --buildkit-listen unix://$D/buildkitd.sock" if BKD_PS in paths else "")
    bl_note = ("; `--buildkit-listen`: BuildKit's gRPC API on a socket of its own, as buildkitd serves "
               "it, for buildx's remote driver and buildctl" if bl else "")
    sn = " --sandbox-network host" if m.get("podsolved_sandbox_network_host") else ""
    sn_note = ("; `--sandbox-network host`: LLB execs in BuildKit's default network mode run on the host network, "
               "as buildkitd's with `--oci-worker-net=host` below" if sn else "")
    w(f"| podsolved | `server/podsolved --listen unix://$D/api.sock{bl}{sn} --root … --runroot … --storage-driver overlay --state-dir …{up}` (defaults otherwise, e.g. `--max-parallel 4`){bl_note}{sn_note} |")
    w("| Podman | `podman system service --time=0` with a private `containers.conf` (runtime runc, cgroupfs, ulimits) and `storage.conf` (overlay), anchors.md §1 |")
    w("| Docker Engine | its own `containerd --config …` and dockerd 20.10 (`dpkg -x` of Debian's docker.io) with `--storage-driver=overlay2 --iptables=false --ip6tables=false`, private data/exec roots, `deprecated-key-path`, the default bridge (BuildKit's RUN needs it; deleted afterwards), anchors.md §3 |")
    flags = " ".join(res.get("buildah_flags") or [])
    w(f"| buildah | `buildah --root … build {flags} --file=… --tag=… DIR`: its own storage and exactly the flags podsolved passes for `/solve`, read from podsolved's debug log in a calibration build at the start of the run |")
    if BKD in paths:
        w("| buildkitd | `buildkitd --config $D/buildkitd.toml --root $D/root --addr unix://$D/buildkitd.sock --oci-worker=true --containerd-worker=false --oci-worker-snapshotter=overlayfs --oci-worker-binary=/usr/sbin/runc --oci-worker-net=host` (v0.32.2, `go build` of the module from the Go module proxy by `scripts/get-go-clients --only buildkitd`; defaults otherwise, e.g. its garbage collector); ready when `buildctl debug workers` answers; stopped by PID. `buildkitd.toml` only makes the loopback registry below the plain-HTTP mirror of the registry host `localhost`. `--oci-worker-net=host`: podsolved's RUNs (and buildah's here) use the host network too, and no CNI is set up for the default bridge |")
    w("")
    w("The base image (`localhost/busybox:latest`, from Debian's busybox-static by "
      "`tests/fixtures/make-base-image`) is made offline once and copied into every store "
      "(`buildah push docker-archive:` → `buildah pull` / `docker load`), so all systems build "
      "FROM the same image ID. " + ("buildkitd has no local image store to build FROM: a loopback "
      "`docker-registry` (Debian's distribution 2.8, plain HTTP on 127.0.0.1, started and stopped by "
      "PID) holds the same image (`buildah push` from podsolved's store; the harness checks that the "
      "registry's manifest names the same config digest, i.e. image ID) and buildkitd.toml makes it "
      "the mirror of `localhost`, so every system builds the same `FROM localhost/busybox:latest`; "
      "buildkitd resolves that tag against the registry on each build, as it does for any base "
      "image. " if BKD in paths else "") + "Clients: curl for `/build` and `/solve` (context tar made "
      "beforehand, not timed), the docker 20.10 CLI for both legacy and BuildKit modes against "
      "both podsolved and the anchors (it tars or syncs the context itself, timed), buildah on the "
      "directory, and docker buildx v0.36.1 (a plugin of the docker 28 CLI, built by "
      "`scripts/get-go-clients`) with its `docker` driver against podsolved (buildx drives the build "
      "over BuildKit's gRPC API on `POST /grpc` and syncs the context over `POST /session`; its "
      "run is checked by its exit status and by the image being in podsolved's store afterwards)" +
      ("; the same buildx with its `remote` driver against podsolved's `--buildkit-listen` socket and "
      "against buildkitd, with `--output type=image,name=localhost/TAG:latest`: the remote driver "
      "has no Docker daemon to `--load` into, so each daemon keeps the image in its own store "
      "(containers-storage for podsolved, buildkitd's image store), the closest equivalent of the "
      "docker driver's export, and `type=cacheonly` would let podsolved skip the commit that a "
      "user's build needs (checked by exit status, buildx's `--metadata-file` naming the image, and, "
      "for podsolved, the image in its store). " if BKD_PS in paths else ". ") +
      "Times are the wall clock of the client command; every run's exit status and "
      "stream are checked (an `errorDetail`, a missing `result`, a non-200 fails the run).\n")
    w("Workloads: **4-step** = `FROM` / `RUN echo` / `COPY file.txt` / `CMD` (10 kB context). "
      "**heavy** = 2000 small files + one 50 MiB random file (52.6 MB), `FROM` / `COPY . /ctx` / "
      "`RUN ls /ctx | wc -l`; *cold* = the context copied afresh (new mtimes) before each run and "
      "built without cache, *no-op* = the same build again, *1 file changed* = one small file gets "
      "new content before each run.\n")

    targets = evaluate_targets(res)
    if targets:
        w("## Targets\n")
        w("| target | measured (median) | met? |")
        w("|---|---|---|")
        for t in targets:
            w(f"| {t['target']} | {t['measured']} | {'**yes**' if t['met'] else '**no**'} |")
        w("")

    w("## Build times\n")
    w("Each cell: median (min–max) wall time of the client command.\n")
    for title, cols, pairs in GROUPS:
        cols = [c for c in cols if c in paths]
        pairs = [(a, b) for a, b in pairs if a in paths and b in paths]
        if not pairs:
            continue
        w(f"### {title}\n")
        head = [paths[c]["label"] for c in cols] + [
            f"podsolve ÷ {paths[b]['system']}" if paths[a]["client"] == paths[b]["client"]
            else f"podsolve ÷ {paths[b]['system']} ({paths[b]['client']})" for a, b in pairs]
        w("| workload | " + " | ".join(head) + " |")
        w("|---" * (len(head) + 1) + "|")
        for wid in BUILD_WORKLOADS:
            if wid not in wl:
                continue
            st = wl[wid]["stats"]
            cells = [_cell(st.get(c)) for c in cols]
            cells += [_fr(_ratio(_med(res, wid, a), _med(res, wid, b))) for a, b in pairs]
            w(f"| {SHORT[wid]} | " + " | ".join(cells) + " |")
        w("")
    if chart_rel:
        w(f"![podsolve ÷ anchor ratios per workload]({chart_rel})\n")

    if "heavy-cold" in wl:
        w("## Bytes sent by the client (heavy context)\n")
        w("What the client sent to the daemon's socket in each timed run (request, headers, the "
          "tar or the session stream), median. curl reports it itself (`size_request + "
          "size_upload`); for the docker CLI it is the process's `wchar` from `/proc/PID/io`, read "
          "after it exited and before it was reaped (for docker buildx it includes the plugin, a "
          "child the CLI reaped before exiting), minus what it wrote to its own output. "
          "buildah reads the directory itself.\n")
        w("| client path | cold | no-op | 1 file changed |")
        w("|---|---|---|---|")
        for pid, p in paths.items():
            vals = [wl[x]["client_bytes_sent"].get(pid) for x in ("heavy-cold", "heavy-noop", "heavy-change")]
            if any(x is not None for x in vals):
                w(f"| {p['label']} | " + " | ".join(fmt_bytes(x["median"] if x else None) for x in vals) + " |")
        w("")

    fl = wl.get("first-line")
    if fl:
        w("## Time from request to first status line\n")
        w(f"{fl['note']}. 4-step no-op build, median (min–max).\n")
        w("| endpoint | client | system | time to first line |")
        w("|---|---|---|---|")
        ep = {"ps-solve": "/solve", "ps-curl": "/build v1", "pm-curl": "/build v1",
              "ps-legacy": "/build v1", "dk-legacy": "/build v1",
              "ps-bk": "/build v2", "dk-bk": "/build v2"}
        for pid in ("ps-solve", "ps-curl", "pm-curl", "ps-legacy", "dk-legacy", "ps-bk", "dk-bk"):
            if fl["stats"].get(pid):
                p = paths[pid]
                w(f"| {ep[pid]} | {p['client']} | {p['system']} | {_cell(fl['stats'][pid])} |")
        w("")

    fg = wl.get("first-line-grpc")
    if fg:
        w("## Time from the client's start to the first status message over gRPC\n")
        w(f"{fg['note']}. 4-step no-op build, median (min–max).\n")
        w("The two right-hand columns cut that time at the timestamp the daemon put on the first "
          "message (its `started`; daemon and client share the host's wall clock): before it, the "
          "client's own start (the docker CLI, the buildx plugin, the builder's lookup), its "
          "session and the Solve call; after it, the way back to the client's output.\n")
        w("| endpoint | client | system | time to first Control.Status | client start → the daemon's "
          "timestamp | timestamp → client's line |")
        w("|---|---|---|---|---|---|")
        sp = fg.get("split_stats", {})
        for pid, st in fg["stats"].items():
            if st:
                a = sp.get("client_start_to_daemon_stamp", {}).get(pid)
                b = sp.get("daemon_stamp_to_client_line", {}).get(pid)
                ep = ("`POST /grpc`" if pid == GRPC_PATH else "`--buildkit-listen` socket"
                      if paths[pid]["system"] == "podsolve" else "buildkitd's socket")
                w(f"| {ep} | {paths[pid]['client']} | {paths[pid]['system']} | {_cell(st)} | "
                  f"{_cell(a)} | {_cell(b)} |")
        w("")

    cc = wl.get("concurrent8")
    if cc:
        w("## 8 different small builds: concurrent vs serial\n")
        w("Eight distinct 4-step builds without cache, started at once (wall time until the last "
          "one ends) and then one after another (total). podsolved runs with its default "
          "`--max-parallel 4`. Median (min–max) over the rounds.\n")
        w("| client path | concurrent | serial | serial ÷ concurrent |")
        w("|---|---|---|---|")
        for pid in cc["stats"]["concurrent"]:
            c, s = cc["stats"]["concurrent"][pid], cc["stats"]["serial"][pid]
            w(f"| {paths[pid]['label']} | {_cell(c)} | {_cell(s)} | {s['median'] / c['median']:.2f} |")
        w("")
        rs = [r for r in compute_ratios(res) if r["workload"] == "concurrent8"]
        if rs:
            w("Concurrent wall time, podsolve ÷ anchor: " +
              "; ".join(f"{r['label'].split(':')[0]} {r['ratio']:.2f}" for r in rs) + ".\n")

    L += gateway_section(res)

    L += llb_section(res)
    L += stores.sections(res)

    L += scaling.section({k: v for k, v in wl.items() if v.get("kind") == "scale"})

    px = wl.get("proxy")
    if px:
        w("## Proxy overhead: through podsolved vs straight to Podman\n")
        w("podsolved started with `--upstream unix://<our Podman socket>`; the same requests sent "
          f"to podsolved and to Podman directly, interleaved, at the start of the run (Podman's "
          f"store holds only the base image). {px['note']}. Median (min–max) over all requests "
          "(a new connection each, as the CLI does).\n")
        w("| request | through podsolved | Podman directly | ratio | added by podsolved (median) |")
        w("|---|---|---|---|---|")
        for name, st in px["stats"].items():
            a, b = st.get("ps-proxy"), st.get("pm-direct")
            added = f"{(a['median'] - b['median']) * 1000:+.1f} ms" if a and b else "–"
            w(f"| {name} | {_cell(a)} | {_cell(b)} | {_fr(_ratio(a and a['median'], b and b['median']))} | {added} |")
        w("")

    mem = res["memory"]
    w("## Daemon memory\n")
    w("### Idle memory (issue: foundation; target ≤ 4 MB)\n")
    n_idle = len(mem.get("idle_starts_kb", {}).get("podsolved", [])) or 1
    w(f"Each daemon starts with private storage, answers `GET /_ping` and `GET /v1.41/version`, "
      f"idles {mem['idle_seconds']:g} s, then `/proc/PID/status` and `/proc/PID/smaps_rollup` are "
      f"read. podsolved and Podman: {n_idle} start(s) each, median (min–max); dockerd and "
      "containerd: the one start of this run. (`bench/run --only idle-rss` measures just this; "
      "`bench/idle-rss` is a shortcut for it.)\n")
    w("| daemon | starts | VmRSS median (min–max) | RssAnon | RssFile (shared libraries) | Pss |")
    w("|---|---|---|---|---|---|")
    for row in _idle_rows(res):
        w("| " + " | ".join(str(x) for x in row) + " |")
    w("")
    ps_idle = statistics.median(x["VmRSS"] for x in mem["idle_starts_kb"]["podsolved"])
    pm_idle = statistics.median(x["VmRSS"] for x in mem["idle_starts_kb"]["podman service"])
    ratio_line = f"Ratio podsolved ÷ Podman service (VmRSS): **{ps_idle / pm_idle:.2f}**"
    first = mem["idle_first_start_kb"]
    if "dockerd" in first:
        dc = first["dockerd"]["VmRSS"] + first["containerd"]["VmRSS"]
        ratio_line += f"; podsolved ÷ (dockerd + containerd): **{ps_idle / dc:.2f}**"
    w(ratio_line + ".\n")
    anon = statistics.median(x["RssAnon"] for x in mem["idle_starts_kb"]["podsolved"])
    pss = statistics.median(x["Pss"] for x in mem["idle_starts_kb"]["podsolved"])
    met = ps_idle <= 4096
    w(f"**The 4 MB VmRSS target is {'met' if met else 'not met'}.** podsolved's own memory "
      f"(RssAnon) is {_mb(anon)}; the rest of VmRSS is pages of shared libraries touched while "
      f"they load, which any other process using the same libraries shares (Pss, {_mb(pss)} "
      "here, divides them among the processes mapping them). Largest resident mappings "
      "of podsolved at idle, this run: " +
      ", ".join(f"{n} {kb / 1024:.1f} MB" for n, kb in mem["podsolved_top_mappings_kb"]) + ".")
    w("What an idle podsolved does not load: libarchive and what only it brings (libxml2, ICU, "
      "libstdc++) are opened on the first context or tar; OpenSSL's configuration, error strings "
      "and providers on the first digest, TLS handshake or libcurl transfer. What remains: "
      "Debian's libmicrohttpd links GnuTLS and initialises it in its library constructor (with "
      "p11-kit, nettle, gmp) though podsolved serves no TLS through it; libcurl with all Debian "
      "links it against (Kerberos, LDAP, libssh2, RTMP) and, from the first request passed to "
      "Podman (here the `/_ping`), the OpenSSL initialisation libcurl's global set-up runs; libc; "
      "podsolved itself. Reaching 4 MB would need a libmicrohttpd without TLS and an upstream "
      "client that does not initialise OpenSSL for a Unix socket (bench/PROFILE.md, *Idle "
      "memory*, has the breakdown). Measure yourself:")
    w("`awk '/^[0-9a-f]+-/{n=$6} /^Rss:/{r[n]+=$2} END{for(k in r) print r[k], k}' "
      "/proc/$(pidof podsolved)/smaps | sort -rn`.\n")
    if mem.get("peak"):
        w("### Peak over the run\n")
        w("VmHWM of the daemon process(es) just before they were stopped, and the largest "
          "summed RSS of each daemon's whole process tree (sampled every 0.5 s; podsolved's "
          "tree includes the buildah processes it forks, Podman and dockerd build in-process "
          "and their trees include runc/conmon/shims).\n")
        w("| system | daemon VmHWM | peak RSS of the process tree |")
        w("|---|---|---|")
        for name, pk in sorted(mem["peak"].items(), key=lambda kv: kv[0] != "podsolve"):
            hw = " + ".join(f"{k} {_mb(v)}" for k, v in pk["vmhwm_kb"].items())
            if len(pk["vmhwm_kb"]) > 1:
                hw += f" = {_mb(sum(pk['vmhwm_kb'].values()))}"
            w(f"| {name} | {hw} | {_mb(pk['tree_peak_kb'])} |")
        w("")

    # The profile is measured by bench/profile, not by this run: its text
    # (with its own date, commit and load) is kept in bench/PROFILE.md and
    # carried into every report.
    profile = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "PROFILE.md")
    if os.path.exists(profile):
        with open(profile) as f:
            w(f.read().rstrip() + "\n")

    w("## Not measured yet\n")
    for x in res["left_out"]:
        w(f"- {x}.")
    w("")

    if wl:
        w("## Every path, every workload\n")
        w("| workload | client path | median | min | max | n |")
        w("|---|---|---|---|---|---|")
        for wid in BUILD_WORKLOADS + ["first-line", "first-line-grpc"]:
            for pid, st in wl.get(wid, {}).get("stats", {}).items():
                if st:
                    w(f"| {SHORT.get(wid, wid)} | {paths[pid]['label']} | {fmt_s(st['median'])} | "
                      f"{fmt_s(st['min'])} | {fmt_s(st['max'])} | {st['n']} |")
        w("")
    return "\n".join(L)


# -- the gateway frontend path (ps-gw) beside the buildah path (ps-solve) -------

GW_PATH, BUILDAH_PATH = "ps-gw", "ps-solve"
UNCACHED_WORKLOADS = ["4step-first", "heavy-cold", "heavy-change"]
_STEP = re.compile(r"^\[\d+/\d+\] ")
_OPS = {"exec": re.compile(r"^\[\d+/\d+\] RUN "), "file": re.compile(r"^\[\d+/\d+\] (COPY|ADD) ")}


def _runs(res, wid, pid):
    return res["workloads"].get(wid, {}).get("stream_vertices", {}).get(pid) or []


def op_costs(res, wid, pid):
    """{'exec'|'file': {step (without "[n/m] "): [ms, …]}} of the steps that ran (not cached)."""
    out = {k: {} for k in list(_OPS) + ["context"]}
    for run in _runs(res, wid, pid):
        lf = next((v["start_s"] for v in run["vertices"]
                   if v["name"].startswith("[internal] load frontend")), None)
        for v in run["vertices"]:
            if v["cached"] or v["dur_s"] is None:
                continue
            # the frontend's local source of the context (a source op), which the
            # gateway path runs when the frontend asks for it; the buildah path
            # has unpacked the tar before its first vertex
            if lf is not None and v["start_s"] > lf and v["name"] == "[internal] load build context":
                out["context"].setdefault(v["name"], []).append(v["dur_s"] * 1000)
            for k, rx in _OPS.items():
                if rx.match(v["name"]):    # keyed without "[n/m] ": the paths count steps differently
                    out[k].setdefault(_STEP.sub("", v["name"]), []).append(v["dur_s"] * 1000)
    return out


def before_first_step(run):
    """(seconds from the stream's first vertex to the first `[n/m]` step's
    start, [(name, start, duration) of the vertices that started before it])."""
    steps = [v["start_s"] for v in run["vertices"] if _STEP.match(v["name"])]
    if not steps:
        return None, []
    t = min(steps)
    return t, [(v["name"], v["start_s"], v["dur_s"]) for v in run["vertices"]
               if v["start_s"] < t and not _STEP.match(v["name"])]


def _frontend_split(run):
    """Gateway path, one run: {phase: seconds} of the time before the first
    step, cut at the `[internal] load frontend` vertex, plus the vertices
    before the first step, each marked podsolved's (before the frontend was
    loaded) or the frontend's (after)."""
    t, before = before_first_step(run)
    lf = next((v for v in run["vertices"] if v["name"].startswith("[internal] load frontend")), None)
    if t is None or lf is None or lf["dur_s"] is None:
        return None, []
    lf_end = lf["start_s"] + lf["dur_s"]
    after = [v for v in run["vertices"] if v["start_s"] >= lf_end]
    first_fe = min((v["start_s"] for v in after), default=t)
    phases = {"podsolved, before the frontend": lf["start_s"],
              "[internal] load frontend (resolve the image)": lf["dur_s"],
              "frontend container start (load frontend done → its first solve)": first_fe - lf_end,
              "the frontend's own solves, up to the first step": t - first_fe}
    marked = []
    for name, start, dur in before:
        if name.startswith("[internal] load frontend"):
            continue
        who = "podsolved" if start < lf["start_s"] else "frontend"
        marked.append((f"{name} ({who})", dur))
    return phases, marked


def gateway_summary(res):
    """The per-op figures of the report, also kept in results.json."""
    out = {"ops": {}, "before_first_step_ms": {}, "outside_vertices_ms": {},
           "frontend_phases_ms": {}, "pre_step_vertices_ms": {}}
    for pid in (BUILDAH_PATH, GW_PATH):
        ops = {"exec": [], "file": [], "context": []}
        for wid in UNCACHED_WORKLOADS:
            for k, by in op_costs(res, wid, pid).items():
                for name, ms in by.items():
                    out["ops"].setdefault(pid, {}).setdefault(wid, {}).setdefault(k, {})[name] = stats(ms)
                    if wid == "4step-first":
                        ops[k] += ms
        out["ops"].setdefault(pid, {})["small-steps"] = {k: stats(v) for k, v in ops.items()}
        pre = []
        for wid in BUILD_WORKLOADS:
            outside = []
            for run in _runs(res, wid, pid):
                t, _ = before_first_step(run)
                if t is None:
                    continue
                pre.append(t * 1000)
                ends = [v["start_s"] + v["dur_s"] for v in run["vertices"] if v["dur_s"] is not None]
                if ends:
                    outside.append((run["wall_s"] - max(ends)) * 1000)
                if pid == GW_PATH:
                    phases, marked = _frontend_split(run)
                    for k, sec in (phases or {}).items():
                        out["frontend_phases_ms"].setdefault(k, []).append(sec * 1000)
                    for key, dur in marked:
                        if dur is not None:
                            out["pre_step_vertices_ms"].setdefault(key, []).append(dur * 1000)
            out["outside_vertices_ms"].setdefault(pid, {})[wid] = stats(outside)
        out["before_first_step_ms"][pid] = stats(pre)
    out["frontend_phases_ms"] = {k: stats(v) for k, v in out["frontend_phases_ms"].items()}
    out["pre_step_vertices_ms"] = {k: stats(v) for k, v in out["pre_step_vertices_ms"].items()}
    return out


def _ms(st):
    if not st:
        return "–"
    if st["n"] == 1:
        return f"{st['median']:.0f} ms"
    return f"{st['median']:.0f} ms ({st['min']:.0f}–{st['max']:.0f}, n={st['n']})"


def gateway_section(res):
    paths = res.get("paths", {})
    wl = res.get("workloads", {})
    if GW_PATH not in paths or BUILDAH_PATH not in paths:
        return []
    L = []
    w = L.append
    w("## Gateway frontend path (`# syntax=docker/dockerfile:1`)\n")
    w("The same `curl POST /solve` as the buildah path, with the workload's Dockerfile prefixed by "
      "`# syntax=docker/dockerfile:1` (sent as `Dockerfile.gw`, added to the context tar): "
      "podsolved runs BuildKit's own Dockerfile frontend (the image `docker.io/docker/dockerfile:1`, "
      "made offline in podsolved's private storage by `tests/fixtures/make-dockerfile-frontend`) as a "
      "gateway frontend and executes the LLB it sends op by op in its LLB engine; without the line "
      "podsolved runs `buildah build`. Interleaved with the other paths in the same rounds.\n")
    w("| workload | podsolve · curl /solve (buildah path) | podsolve · curl /solve, gateway "
      "(docker/dockerfile:1) | gateway ÷ buildah path |")
    w("|---|---|---|---|")
    for wid in BUILD_WORKLOADS:
        if wid not in wl:
            continue
        st = wl[wid]["stats"]
        w(f"| {SHORT[wid]} | {_cell(st.get(BUILDAH_PATH))} | {_cell(st.get(GW_PATH))} | "
          f"{_fr(_ratio(_med(res, wid, GW_PATH), _med(res, wid, BUILDAH_PATH)))} |")
    w("")
    g = gateway_summary(res)
    w("**Cost per step**, from the `/solve` stream of the timed runs (each vertex's `completed` − "
      "`started`; steps that ran, not `cached`). On the gateway path an exec op (LLB `ExecOp`) is a "
      "Dockerfile `RUN` and a file op (`FileOp`) a `COPY`; on the buildah path the same steps are "
      "`buildah build`'s, timed by podsolved from buildah's output. Median (min–max, n) in ms:\n")
    w("| workload | step | buildah path | gateway path | gateway ÷ buildah path |")
    w("|---|---|---|---|---|")
    for wid in UNCACHED_WORKLOADS:
        a = g["ops"].get(BUILDAH_PATH, {}).get(wid, {})
        b = g["ops"].get(GW_PATH, {}).get(wid, {})
        for k in ("exec", "file", "context"):
            for name in sorted(set(a.get(k, {})) | set(b.get(k, {}))):
                sa, sb = a.get(k, {}).get(name), b.get(k, {}).get(name)
                step = name.replace("|", "\\|")
                kind = "source op (the frontend's local context)" if k == "context" else f"{k} op"
                w(f"| {SHORT[wid]} | {kind}: `{step}` | {_ms(sa)} | {_ms(sb)} | "
                  f"{_fr(_ratio(sb and sb['median'], sa and sa['median']))} |")
    w("")
    sa = g["ops"].get(GW_PATH, {}).get("small-steps", {})
    sb = g["ops"].get(BUILDAH_PATH, {}).get("small-steps", {})
    w("The 4-step build's steps do almost no work (`echo` into a file; one 30-byte file), so "
      "their time is the per-op cost itself: **gateway path "
      f"{_ms(sa.get('exec'))} per exec op, {_ms(sa.get('file'))} per file op**; buildah path "
      f"{_ms(sb.get('exec'))} per `RUN`, {_ms(sb.get('file'))} per `COPY`. The heavy build's steps "
      "are dominated by their data (52.6 MB copied, 2001 files listed). On the gateway path the "
      "context is also a source op of its own: podsolved unpacks the uploaded tar before the first "
      "vertex on both paths, and on the gateway path the frontend's `[internal] load build context` "
      "(an LLB local source, `solver/llb/local.c`) then stages a copy of what it selects when the "
      "LLB first needs it, after the first step has started.\n")
    pb, pg = g["before_first_step_ms"].get(BUILDAH_PATH), g["before_first_step_ms"].get(GW_PATH)
    w("**Before the first step** (from the stream's first vertex to the start of the first "
      "`[n/m]` step, every timed run of every workload, cached or not): buildah path "
      f"{_ms(pb)}, gateway path {_ms(pg)}. On the gateway path this is the frontend's start: "
      "podsolved reads the Dockerfile and finds the syntax line, resolves the frontend image "
      "(`[internal] load frontend`) and starts its container; the frontend then makes its own "
      "solves (the Dockerfile, `.dockerignore`, the base image) before it sends the build's LLB. "
      "Split at the vertices' timestamps, median (min–max, n):\n")
    w("| gateway path, before the first step | time |")
    w("|---|---|")
    for name, st in g["frontend_phases_ms"].items():
        w(f"| {name} | {_ms(st)} |")
    w("")
    w("The vertices before the first step on the gateway path (their durations overlap the "
      "phases above), median (min–max, n):\n")
    w("| vertex (whose) | duration |")
    w("|---|---|")
    for name, st in sorted(g["pre_step_vertices_ms"].items(), key=lambda kv: -kv[1]["median"]):
        w(f"| {name.replace('|', chr(92) + '|')} | {_ms(st)} |")
    w("")
    w("**Outside the vertices**: the client's wall time minus the span from the first vertex's "
      "start to the last one's end — curl's start, the upload and podsolved reading it before the "
      "first vertex, and whatever follows the last vertex. The buildah path ends with an "
      "`exporting to image` vertex; the gateway path shows none, so on it this also holds the "
      "frontend's return and the export. Median (min–max, n):\n")
    w("| workload | buildah path | gateway path |")
    w("|---|---|---|")
    ob, og = g["outside_vertices_ms"].get(BUILDAH_PATH, {}), g["outside_vertices_ms"].get(GW_PATH, {})
    for wid in BUILD_WORKLOADS:
        if ob.get(wid) or og.get(wid):
            w(f"| {SHORT[wid]} | {_ms(ob.get(wid))} | {_ms(og.get(wid))} |")
    w("")
    return L


def llb_section(res):
    """The LLB workload: what it is, and its figures when this run has them."""
    from .llbgraph import BRANCHES, FULL_SCALE
    L = []
    w = L.append
    llb = res.get("workloads", {}).get("llb-branches")
    scale = llb["scale"] if llb else FULL_SCALE
    w(f"## LLB graph: {BRANCHES} independent branches, podsolve vs `buildah build --jobs 4`"
      + (" and buildkitd (buildctl)" if llb and llb["stats"].get("bkd-llb-cold") else "") + "\n")
    w("One build graph of 20 ops: the busybox image; a base FileOp (mkdir, mkfile); "
      f"{BRANCHES} independent branches of 4 execs each, every one doing real work on the branch's "
      f"own random data (`dd` of {scale['mib']} MiB from /dev/urandom, `sha256sum` × "
      f"{scale['hash_passes']}, `gzip`, `md5sum`"
      f"{'; about a second per op on this machine' if scale == FULL_SCALE else ', the small --smoke size'}"
      "); a FileOp "
      "copying each branch's `/work/out` into `/out/bN`; a final exec over the result. podsolve gets "
      "it as an LLB definition (made by `examples/llb-frontend/llb.py`) in a multipart "
      "`POST /solve` with curl; buildah gets the same graph as a multi-stage Containerfile (one "
      "stage per branch, one `RUN` per exec, `COPY --from` per copy; `RUN` for the base FileOp) "
      "with the flags above plus `--jobs 4`. **Cold**: storage made afresh for every run (a new "
      "podsolved started on it; `buildah --root` of its own) with the base image copied in, not "
      "timed. **Fully cached**: the same definition sent again to the same daemon; the same "
      "`buildah build --layers` again. Each round runs podsolve cold, buildah cold, podsolve "
      "cached, buildah cached (with buildkitd in the run: every system cold — podsolve /solve, "
      "podsolve via buildctl, buildkitd via buildctl, buildah — then every system cached). "
      "`bench/run --only llb` runs just this workload.\n")
    if not llb:
        w("**Figures: pending re-run** — this report's run did not include the workload (see "
          "*Not measured yet*).\n")
        return L
    st = llb["stats"]
    w(f"Median (min–max) of {st['ps-llb-cold']['n']} run(s) after {llb['warmup']} warm-up round(s).\n")
    w(f"| phase | {PATHS_LLB['ps-llb']} | {PATHS_LLB['bh-jobs4']} | podsolve ÷ buildah |")
    w("|---|---|---|---|")
    for phase, label in (("cold", "cold (private storage)"), ("cached", "fully cached resubmission")):
        a, b = st.get(f"ps-llb-{phase}"), st.get(f"bh-jobs4-{phase}")
        w(f"| {label} | {_cell(a)} | {_cell(b)} | {_fr(_ratio(a and a['median'], b and b['median']))} |")
    w("")
    if st.get("bkd-llb-cold"):
        w("The same definition bytes with BuildKit's own client, `buildctl` v0.32.2 (`buildctl --addr "
          "unix://SOCK build --progress=rawjson --output type=image,name=localhost/bench-llb:latest < "
          "definition.pb`), to buildkitd v0.32.2 (a fresh root per round; the base image pulled from "
          "the loopback registry by an untimed build of just the image source) and to a second podsolved "
          "on fresh storage of its own with `--buildkit-listen` (so podsolve's curl `/solve` run above "
          "leaves it no cache). A run counts when buildctl exits 0 and reports every op (the cached "
          "resubmission: every op cached).\n")
        cols = [k for k in ("psb-llb", "bkd-llb", "ps-llb") if st.get(f"{k}-cold")]
        w("| phase | " + " | ".join(PATHS_LLB[k] for k in cols) + " | podsolve ÷ buildkitd (buildctl) |")
        w("|---" * (len(cols) + 2) + "|")
        for phase, label in (("cold", "cold (private storage)"), ("cached", "fully cached resubmission")):
            a, b = st.get(f"psb-llb-{phase}"), st.get(f"bkd-llb-{phase}")
            w(f"| {label} | " + " | ".join(_cell(st.get(f"{k}-{phase}")) for k in cols) +
              f" | {_fr(_ratio(a and a['median'], b and b['median']))} |")
        w("")
    ov = llb.get("podsolve_max_concurrent_vertices") or []
    if ov:
        w(f"podsolve ran at most {max(ov)} {'vertices' if max(ov) > 1 else 'vertex'} at once in a cold run "
          "(from the stream's "
          "`started`/`completed` times; buildah's `--jobs 4` runs up to 4 stages at once).\n")
    return L


PATHS_LLB = {"ps-llb": "podsolve · curl /solve (LLB definition)",
             "bh-jobs4": "buildah · `buildah build --jobs 4` (Containerfile)",
             "psb-llb": "podsolve · buildctl (`--buildkit-listen`)",
             "bkd-llb": "buildkitd v0.32.2 · buildctl"}


def write_llb_only(res, out):
    """bench/run --only llb: results.json and a BENCHMARKS.md with just the
    LLB section, in ``out``."""
    res["ratios"] = compute_ratios(res)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    m = res["meta"]
    mc = m["machine"]
    t = m["podsolve_tree"]
    head = ["# Benchmarks: the LLB workload alone\n",
            f"`{m['command']}`, {m['date']}, {mc['cpu']}, {mc['cpus']} vCPU, load average "
            f"{m['load_before'][0]:.2f} before, {m['load_after'][0]:.2f} after; podsolve commit "
            f"{t['commit']}{' + local changes' if t['local_changes'] else ''}; {m['duration_s']:.0f} s. "
            f"buildah flags: `{' '.join(res.get('buildah_flags') or [])}`.\n"]
    with open(os.path.join(out, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(head + llb_section(res)))
    log(f"wrote {os.path.join(out, 'BENCHMARKS.md')} and results.json")


def _llb_problems(res):
    llb = res["workloads"].get("llb-branches")
    if not llb:
        return ["workload llb-branches has no results"]
    runs = res["meta"]["runs"]
    return [f"llb-branches/{k}: expected {runs} samples" for k, s in llb["stats"].items()
            if not s or s["n"] != runs]


def smoke_check_llb(res):
    problems = _llb_problems(res)
    if problems:
        raise BenchError("smoke check failed:\n  " + "\n  ".join(problems))


def write_all(res, out, repo, only_idle=False):
    """Full run: REPO/BENCHMARKS.md + REPO/bench/{results.json,ratios.png};
    otherwise everything in ``out``."""
    if os.path.abspath(out) == os.path.abspath(repo):
        md_path = os.path.join(repo, "BENCHMARKS.md")
        data_dir = os.path.join(repo, "bench")
        rel = "bench/"
    else:
        md_path = os.path.join(out, "BENCHMARKS.md")
        data_dir = out
        rel = ""
    res["ratios"] = compute_ratios(res) if not only_idle else []
    res["targets"] = evaluate_targets(res)
    if not only_idle and GW_PATH in res.get("paths", {}):
        res["gateway"] = gateway_summary(res)
    png = os.path.join(data_dir, "ratios.png")
    have_chart = (not only_idle) and chart(res, res["ratios"], png)
    with open(os.path.join(data_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=False)
        f.write("\n")
    with open(md_path, "w") as f:
        f.write(markdown(res, rel + "ratios.png" if have_chart else None, rel))
    log(f"wrote {md_path}, {os.path.join(data_dir, 'results.json')}" + (f", {png}" if have_chart else ""))


def smoke_check(res, out, only_idle=False):
    """CI: the harness ran and produced every result.  Never asserts a timing."""
    problems = []
    for f in ("BENCHMARKS.md", "results.json"):
        if not os.path.exists(os.path.join(out, f)):
            problems.append(f"{f} not written")
    with open(os.path.join(out, "results.json")) as f:
        json.load(f)
    mem = res.get("memory", {})
    for d in ("podsolved", "podman service") + (() if only_idle else ("dockerd", "containerd")):
        if d not in mem.get("idle_first_start_kb", {}):
            problems.append(f"no idle memory for {d}")
    if not only_idle:
        if shutil.which("gnuplot") and not os.path.exists(os.path.join(out, "ratios.png")):
            problems.append("ratios.png not written")
        runs = res["meta"]["runs"]
        if GRPC_PATH not in res["paths"]:
            problems.append(f"the docker buildx → podsolve path ({GRPC_PATH}) did not run")
        for pid in (BKD_PS, BKD):
            if pid not in res["paths"]:
                problems.append(f"the docker buildx (remote driver) path {pid} did not run")
            for wid in BUILD_WORKLOADS + ["first-line-grpc"]:
                if pid in res["paths"] and not res["workloads"].get(wid, {}).get("stats", {}).get(pid):
                    problems.append(f"{wid}: no result for {pid}")
        if not (res.get("memory", {}).get("heavy_tree_peak_kb") or {}).get("buildkitd"):
            problems.append("no peak memory of buildkitd during the heavy workloads")
        if not any(r["workload"] == "heavy-noop" and r["anchor"] == BKD for r in res.get("ratios", [])):
            problems.append("no podsolve ÷ buildkitd ratio")
        for wid in BUILD_WORKLOADS + ["first-line-grpc"]:
            if GRPC_PATH in res["paths"] and not res["workloads"].get(wid, {}).get("stats", {}).get(GRPC_PATH):
                problems.append(f"{wid}: no result for {GRPC_PATH} (docker buildx → podsolve)")
        for wid in BUILD_WORKLOADS + ["first-line", "first-line-grpc"]:
            st = res["workloads"].get(wid, {}).get("stats")
            if not st:
                problems.append(f"workload {wid} has no results")
                continue
            for pid, s in st.items():
                if not s or s["n"] != runs:
                    problems.append(f"{wid}/{pid}: expected {runs} samples")
        if GW_PATH in res["paths"]:
            g = gateway_summary(res)
            for k in ("exec", "file"):
                if not (g["ops"].get(GW_PATH, {}).get("small-steps", {}).get(k)):
                    problems.append(f"4step-first: no uncached {k} op in the {GW_PATH} streams")
            if not g["frontend_phases_ms"]:
                problems.append(f"no `[internal] load frontend` vertex in the {GW_PATH} streams")
        for pid in res["paths"]:
            for wid in ("heavy-cold", "heavy-noop", "heavy-change"):
                if pid != "buildah" and pid not in res["workloads"][wid]["client_bytes_sent"]:
                    problems.append(f"{wid}: no byte count for {pid}")
        if (res["meta"].get("podsolved_upstream") and "proxy" not in res["workloads"]
                and not any(x.startswith("proxy overhead") for x in res["left_out"])):
            problems.append("podsolved has --upstream but the proxy workload did not run")
        cc = res["workloads"].get("concurrent8", {}).get("stats", {}).get("concurrent", {})
        if len(cc) < 2:
            problems.append("concurrency workload incomplete")
        if res["meta"].get("smoke"):
            problems += _llb_problems(res)
            llb_st = res["workloads"].get("llb-branches", {}).get("stats", {})
            for k in ("psb-llb-cold", "bkd-llb-cold", "psb-llb-cached", "bkd-llb-cached"):
                if not llb_st.get(k):
                    problems.append(f"llb-branches: no buildctl result {k}")
        if res["meta"].get("smoke") and not any("Scaling with work" in x for x in res["left_out"]):
            problems += scaling.problems(res["workloads"], scaling.TABLES, 1)
        if res["meta"].get("smoke"):
            problems += stores.smoke_problems(res)
        if not res["ratios"]:
            problems.append("no ratios computed")
        if not mem.get("peak"):
            problems.append("no peak memory")
    if problems:
        raise BenchError("smoke check failed:\n  " + "\n  ".join(problems))
