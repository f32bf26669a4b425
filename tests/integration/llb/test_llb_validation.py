"""Raw LLB definitions sent to /solve are decoded and validated before
anything runs: every malformed definition is a 400 naming the op and the
problem; a valid graph is a 501 until the LLB executor exists."""

import base64
import hashlib
import json

import podsolve_testlib as lib


def _source_op(ident=b"docker-image://docker.io/library/alpine:latest"):
    src = b"\x0a" + bytes([len(ident)]) + ident
    return b"\x1a" + bytes([len(src)]) + src + b"\x52\x0e\x0a\x05amd64\x12\x05linux" + b"\x5a\x00"


def _digest(op):
    return "sha256:" + hashlib.sha256(op).hexdigest()


def _terminal(digest):
    inp = b"\x0a" + bytes([len(digest)]) + digest.encode()
    return b"\x0a" + bytes([len(inp)]) + inp


def _definition(ops):
    """A marshalled pb.Definition: field 1 (def) repeated bytes."""
    out = b""
    for op in ops:
        out += b"\x0a" + _varint(len(op)) + op
    return out


def _varint(n):
    b = b""
    while True:
        c = n & 0x7F
        n >>= 7
        if n:
            b += bytes([c | 0x80])
        else:
            return b + bytes([c])


def _post_json(daemon, definition):
    status, _, body = daemon.request("POST", "/solve", json.dumps({"definition": definition}).encode(),
                                     {"Content-Type": "application/json"})
    return status, json.loads(body)


GIT = b"git://git@127.0.0.1:none.git"  # valid LLB, not executable (a git remote over ssh)


def test_valid_definition_passes_validation_and_unsupported_ops_get_501(daemon):
    # BuildKit's own bytes for an alpine source give its documented digest
    assert _digest(_source_op()) == "sha256:665ba8b2cdc0cb0200e2a42a6b3c0f8f684089f4cd1b81494fbb9805879120f7"
    op = _source_op(GIT)
    ops = [op, _terminal(_digest(op))]
    # the {"def": [...]} form and the base64-of-Definition form
    for form in ({"def": [base64.b64encode(o).decode() for o in ops], "metadata": {}},
                 base64.b64encode(_definition(ops)).decode()):
        status, err = _post_json(daemon, form)
        assert status == 501 and "git" in err["message"], err


def test_raw_protobuf_definition_part_is_validated(daemon):
    op = _source_op(GIT)
    good = _definition([op, _terminal(_digest(op))])
    body, ctype = lib.multipart({"request": b"{}"}, {})
    for data, want in ((good, 501), (good[:-5], 400)):
        boundary = "llbtest"
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="request"\r\n'
                f"Content-Type: application/json\r\n\r\n{{}}\r\n"
                f'--{boundary}\r\nContent-Disposition: form-data; name="definition"; filename="def.pb"\r\n'
                f"Content-Type: application/x-protobuf\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        status, _, resp = daemon.request("POST", "/solve", body,
                                         {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert status == want, resp


def test_malformed_definitions_are_400_naming_the_op_and_nothing_runs(daemon):
    op = _source_op()
    d = _digest(op)
    b64 = lambda o: base64.b64encode(o).decode()  # noqa: E731
    cases = [
        ({"def": [], "metadata": {}}, "ops"),                                         # empty
        ({"def": [b64(op)], "metadata": {}}, ""),                                     # no terminal op
        ({"def": [b64(op[:-3]), b64(_terminal(d))], "metadata": {}}, ""),             # truncated op
        ({"def": [b64(op), b64(_terminal("sha256:" + "0" * 64))], "metadata": {}}, "sha256:"),  # missing input
        ({"def": [b64(_terminal(d)), b64(op)], "metadata": {}}, ""),                  # terminal not last
        ({"def": [b64(_source_op(b"oci-layout://x@sha256:1")), b64(_terminal(_digest(_source_op(b"oci-layout://x@sha256:1"))))],
          "metadata": {}}, "oci-layout"),                                             # unknown scheme
        ("!!!not base64", ""),
    ]
    before = daemon.working_containers()
    for definition, needle in cases:
        status, err = _post_json(daemon, definition)
        assert status == 400, (definition, err)
        assert needle in err["message"], err
    assert daemon.working_containers() == before
    st, _, jobs = daemon.request("GET", "/solve")
    assert all(j["frontend"] != "" for j in json.loads(jobs))  # no job was created for them


def test_more_malformed_graphs_are_refused_before_anything_runs(daemon):
    """The rest of the issue's list, through the HTTP API: a digest that
    names no op (one byte off), an output index out of range, an exec
    without mounts, and 100 000 ops (413).  (Truncations: above.)"""
    import llbgen as llb

    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(["true"], root=img)
    wrong = img.ref[:-1] + ("0" if img.ref[-1] != "0" else "1")
    no_mounts = llb.Op(llb.f_bytes(2, llb.f_bytes(1, llb.f_bytes(1, "true"))) + llb.PLATFORM)
    b64 = lambda o: base64.b64encode(o).decode()  # noqa: E731
    cases = [
        ({"def": [b64(img.data), b64(_terminal(wrong))], "metadata": {}}, wrong, 400),
        ({"def": [b64(img.data), b64(run.data), b64(llb.terminal(run, 3).data)], "metadata": {}}, "output", 400),
        ({"def": [b64(no_mounts.data), b64(llb.terminal(no_mounts).data)], "metadata": {}}, no_mounts.ref, 400),
    ]
    before = daemon.working_containers()
    for definition, needle, want in cases:
        status, err = _post_json(daemon, definition)
        assert status == want, (str(definition)[:200], err)
        assert needle in err["message"], err
    # 100 000 ops, as raw protobuf (a JSON request body is bounded lower)
    raw = _definition([llb.source(f"local://c{i}").data for i in range(100_000)] + [_terminal("sha256:" + "1" * 64)])
    boundary = "llbmany"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="request"\r\n\r\n{{}}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="definition"\r\n'
            f"Content-Type: application/x-protobuf\r\n\r\n").encode() + raw + f"\r\n--{boundary}--\r\n".encode()
    status, _, resp = daemon.request("POST", "/solve", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 413 and b"ops" in resp, resp
    assert daemon.working_containers() == before
    assert daemon.request("GET", "/_ping")[0] == 200

