"""api-docs/openapi.yaml held to schemathesis (4.32.5, pinned in
schemathesis-requirements.txt, installed by scripts/install-deps into
/var/cache/podsolve-test/schemathesis): property-based requests generated
from the spec, valid and invalid, against a live podsolved with storage of
its own.  Every check schemathesis has runs (no 5xx, only documented
status codes, content types and headers, every answer and every NDJSON
line matching its schema, invalid requests refused, a 405's Allow, ...),
plus ndjson_stream_conformance from schemathesis_hooks.py.  Afterwards the
daemon must be alive and still build.

Bounded so it ends in about a minute here (it runs again under the
sanitizers): MAX_EXAMPLES cases per operation and phase, a fixed seed so
that CI sees the same cases every time (PODSOLVE_SCHEMATHESIS_SEED=random,
or a number, to explore; RELIABILITY.md has a longer run and the command
to repeat it).  What is left out and why: schemathesis.toml."""

import json
import os
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest

import podsolve_testlib as lib

HERE = Path(__file__).resolve().parent
SPEC = lib.REPO_ROOT / "api-docs" / "openapi.yaml"
CONFIG = HERE / "schemathesis.toml"
HOOKS = HERE / "schemathesis_hooks.py"
VENV = Path(os.environ.get("PODSOLVE_SCHEMATHESIS_VENV") or "/var/cache/podsolve-test/schemathesis")
ST = VENV / "bin" / "st"

MAX_EXAMPLES = 40
SEED = "20261207"
KNOWN_REF = "st-known-job"  # schemathesis.toml draws refs from this name
# operationIds the run must reach: every operation but grpcUpgrade
OPERATIONS = {"POST /solve", "GET /solve", "POST /solve/prune", "POST /build/prune", "GET /solve/{ref}",
              "GET /solve/{ref}/status", "POST /solve/{ref}/cancel", "GET /solve/{ref}/outputs/{n}"}


@pytest.fixture(scope="module")
def st():
    if not os.access(ST, os.X_OK):
        pytest.fail(f"{ST} is missing: run scripts/install-deps (it installs schemathesis-requirements.txt "
                    f"into {VENV})", pytrace=False)
    return ST


@pytest.fixture(scope="module")
def d():
    port = lib.free_port()
    with lib.private_daemon("podsolve-it-schemathesis-",
                            ["--listen", f"tcp://127.0.0.1:{port}", "--insecure-tcp"]) as d:
        d.tcp_url = f"http://127.0.0.1:{port}"
        yield d


def make_known_job(d):
    """One finished solve whose ref and kept output (a tar export)
    schemathesis.toml hands to the job routes."""
    ctx = lib.tar_context({"Dockerfile": lib.containerfile(f"FROM {lib.BASE_IMAGE}",
                                                           "RUN echo schemathesis > /st.txt")})
    request = {"ref": KNOWN_REF, "frontend": "dockerfile.v0", "exporters": [{"type": "tar"}]}
    body, ctype = lib.multipart({"request": json.dumps(request).encode()}, {"context": ctx})
    status, _, it = d.stream("POST", "/solve", body, {"Content-Type": ctype})
    try:
        lines = list(it)
    finally:
        it.close()
    assert status == 200 and lines and "result" in lines[-1], f"{status}: {lines[-3:]}\n{d.log_tail(3000)}"
    status, _, raw = d.request("GET", f"/solve/{KNOWN_REF}")
    assert status == 200 and len(json.loads(raw)["outputs"]) == 1, raw[:500]


def responses(report):
    """(operation label, status code) of every request the run made."""
    out = Counter()
    with open(report) as f:
        for line in f:
            ev = json.loads(line).get("ScenarioFinished")
            if not ev:
                continue
            label = ev["recorder"]["label"]
            for it in ev["recorder"].get("interactions", {}).values():
                resp = it.get("response")
                out[(label, resp["status_code"] if resp else None)] += 1
    return out


def test_openapi_spec_holds_against_a_live_daemon(st, d):
    """schemathesis finds nothing: no 5xx, no answer outside the spec, no
    invalid request accepted; the daemon is alive and builds afterwards."""
    make_known_job(d)
    seed = os.environ.get("PODSOLVE_SCHEMATHESIS_SEED") or SEED
    with tempfile.TemporaryDirectory(prefix="podsolve-st-") as tmp:
        report = Path(tmp) / "events.ndjson"
        cmd = [str(st), "--config-file", str(CONFIG), "run", str(SPEC), "--url", d.tcp_url,
               "--max-examples", str(MAX_EXAMPLES), "--workers", "2", "--request-timeout", str(lib.scaled(60)),
               "--continue-on-failure", "--generation-database", "none", "--no-color",
               "--report", "ndjson", "--report-ndjson-path", str(report)]
        if seed != "random":
            cmd += ["--seed", seed]
        env = dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS), PYTHONHASHSEED="0")
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=lib.scaled(420))
        out = r.stdout + r.stderr
        summary = out[out.rfind("FAILURES"):] if "FAILURES" in out else out[-6000:]
        assert r.returncode == 0, f"schemathesis failed (exit {r.returncode}); by hand: {' '.join(cmd)}\n" \
                                  f"{summary[-12000:]}\n--- daemon log:\n{d.log_tail(3000)}"
        seen = responses(report)

    # the run reached what it is meant to reach, and nothing answered 5xx
    labels = {label for label, _ in seen} - {"Stateful tests"}  # the phase chaining operations by their links
    assert labels == OPERATIONS, labels ^ OPERATIONS
    assert not [k for k in seen if k[1] is None or k[1] >= 500], seen
    for label in ("GET /solve/{ref}", "GET /solve/{ref}/status", "GET /solve/{ref}/outputs/{n}"):
        assert seen[(label, 200)] > 0, f"{label} never reached the known job: {seen}"
    assert sum(seen.values()) >= 8 * MAX_EXAMPLES // 2, sum(seen.values())
    print(f"schemathesis: {sum(seen.values())} requests: " + ", ".join(f"{k[0]} {k[1]}: {v}"
                                                                         for k, v in sorted(seen.items())))

    lib.assert_daemon_builds(d, tag="podsolve-after-schemathesis")
