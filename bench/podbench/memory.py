"""Daemon memory: idle figures from /proc, and a sampler for peaks.

Idle (same method as the former bench/idle-rss): after the daemon answered
GET /_ping and GET /v1.41/version and then idled, read VmRSS, RssAnon and
RssFile from /proc/PID/status and Pss from /proc/PID/smaps_rollup.

Peak over the run, two ways, because the daemons split work differently
(Podman and dockerd build in-process, podsolved forks buildah):
  * VmHWM of the daemon process itself, read just before it is stopped;
  * the largest sum of RSS over the daemon's whole process tree (daemon and
    every descendant: buildah, runc, shims...), sampled twice a second.
"""

import os
import threading

_PAGE = os.sysconf("SC_PAGE_SIZE")


def status_kb(pid, keys=("VmRSS", "RssAnon", "RssFile", "VmHWM")):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0])
    return out


def idle_kb(pid):
    m = status_kb(pid, ("VmRSS", "RssAnon", "RssFile"))
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                m["Pss"] = int(line.split()[1])
    return m


def top_mappings_kb(pid, n=8):
    """Largest resident mappings of a process, grouped by file name."""
    per = {}
    name = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(" ", 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                name = os.path.basename(parts[5]) if len(parts) > 5 else "[anon]"
            elif line.startswith("Rss:"):
                per[name] = per.get(name, 0) + int(line.split()[1])
    return sorted(per.items(), key=lambda kv: -kv[1])[:n]


def _ppid_map():
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    return children


def _rss_kb(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE // 1024
    except OSError:
        return 0


class TreeSampler:
    """Samples, per system, the summed RSS of its daemons' process trees."""

    def __init__(self, roots, interval=0.5):
        self.roots = roots        # {system: [root pids]}
        self.interval = interval
        self.peak_kb = {s: 0 for s in roots}
        self.phase_kb = None      # peaks since begin_phase(), or None
        self.phase = None
        self.tag = None           # the client path whose build runs now (set by the Runner)
        self.tag_kb = {}          # {(system, tag): peak}, for the phase's builds
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self._t.start()
        return self

    def begin_phase(self, name):
        """Start a second set of peaks (e.g. during the heavy workload)."""
        self.phase = name
        self.tag_kb = {}
        self.phase_kb = {s: 0 for s in self.roots}

    def end_phase(self):
        """-> ({system: peak tree RSS in kB since begin_phase()},
        {system: {tag: peak while that tag's builds ran}})."""
        out, self.phase_kb, self.phase = self.phase_kb, None, None
        by_tag = {}
        for (system, tag), kb in self.tag_kb.items():
            by_tag.setdefault(system, {})[tag] = kb
        self.tag_kb = {}
        return out, by_tag

    def stop(self):
        self._stop.set()
        self._t.join()

    def _loop(self):
        while not self._stop.wait(self.interval):
            children = _ppid_map()
            for system, roots in self.roots.items():
                seen, todo = set(), list(roots)
                while todo:
                    p = todo.pop()
                    if p not in seen:
                        seen.add(p)
                        todo.extend(children.get(p, ()))
                total = sum(_rss_kb(p) for p in seen)
                self.peak_kb[system] = max(self.peak_kb[system], total)
                ph, tag = self.phase_kb, self.tag
                if ph is not None:
                    ph[system] = max(ph.get(system, 0), total)
                    if tag:
                        self.tag_kb[(system, tag)] = max(self.tag_kb.get((system, tag), 0), total)
