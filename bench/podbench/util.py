"""Small shared helpers: logging, checked commands, statistics."""

import statistics
import subprocess
import sys
import time

_T0 = time.monotonic()


class BenchError(Exception):
    """A run failed or the harness cannot go on; the message says why."""


def log(msg):
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def run_checked(argv, what=None, env=None, cwd=None, timeout=600, stdin=None):
    p = subprocess.run(argv, env=env, cwd=cwd, stdin=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    if p.returncode != 0:
        tail = p.stdout.decode(errors="replace")[-2000:]
        raise BenchError(f"{what or argv[0]} failed (exit {p.returncode}):\n{tail}")
    return p.stdout.decode(errors="replace")


def stats(samples):
    """median / min / max / n of a list of numbers (None when empty)."""
    if not samples:
        return None
    return {"median": statistics.median(samples), "min": min(samples),
            "max": max(samples), "n": len(samples)}


def fmt_s(x):
    """Seconds, with a precision that suits the size."""
    if x is None:
        return "–"
    if x < 0.1:
        return f"{x * 1000:.1f} ms"
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def fmt_bytes(n):
    if n is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"
