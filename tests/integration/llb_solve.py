"""What the LLB integration tests share: POST /solve with a definition made
by tests/fixtures/llbgen.py, and reading the NDJSON stream it answers."""

import base64
import json

import podsolve_testlib as lib

import llbgen as llb  # noqa: E402


def solve(daemon, ops, names=None, exporters=None, sources=None, attrs=None, ref=None, index=0, session=None,
          entitlements=None):
    """POST /solve (multipart: the request, then a tar part per local
    source) -> (http status, [events], or the error body as one item)."""
    req = {"definition": llb.definition_json(ops, names, index), "exporters": exporters or []}
    for key, value in (("frontendAttrs", attrs), ("ref", ref), ("session", session), ("entitlements", entitlements)):
        if value:
            req[key] = value
    body, ctype = lib.multipart({"request": json.dumps(req).encode()}, sources or {})
    status, _, it = daemon.stream("POST", "/solve", body, {"Content-Type": ctype})
    return status, list(it)


def solve_ok(daemon, ops, **kw):
    """solve() that must succeed -> [events]; a failure shows the daemon's log."""
    status, events = solve(daemon, ops, **kw)
    assert status == 200, events
    assert not errors(events), f"{errors(events)}\n{daemon.log_tail(3000)}"
    return events


def vertexes(events):
    """{digest: [every state the stream reported, in order]}"""
    out = {}
    for e in events:
        for v in e.get("status", {}).get("vertexes", []):
            out.setdefault(v["digest"], []).append(v)
    return out


def final(events, op):
    """The last state the stream reported for op's vertex."""
    states = vertexes(events).get(op.ref)
    assert states, f"no vertex {op.ref}"
    return states[-1]


def logs(events, op):
    return b"".join(base64.b64decode(l["data"]) for e in events for l in e.get("status", {}).get("logs", [])
                    if l.get("vertex") == op.ref)


def errors(events):
    return [e["error"] for e in events if "error" in e]


def image(events):
    """The result image's id; the solve must have succeeded."""
    res = [e["result"] for e in events if "result" in e]
    assert res and not errors(events), events[-5:]
    return res[-1]["exporterResponse"]["containerimage.config.digest"].split(":", 1)[1]
