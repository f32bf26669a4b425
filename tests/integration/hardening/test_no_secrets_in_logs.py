"""Credentials and secrets never reach podsolved's log (issue: hardening).

A daemon at --log-level debug (the most verbose) gets every kind of secret a
client can send: X-Registry-Auth and X-Registry-Config on /build and /solve,
a header that fails to decode, registry credentials from the BuildKit
session's Auth service and a build secret from its Secrets service.  The
builds succeed (the secret did reach the RUN step), and afterwards no byte
sequence of any of them -- nor of the headers carrying them -- appears
anywhere in the log, in an error answer, or left in /dev/shm.
"""

import base64
import glob
import hashlib
import json
import secrets

import podsolve_testlib as lib
from session_peer import SessionPeer

UNUSED_REGISTRY = "registry.example.invalid"


def _config_header(user, password):
    return base64.b64encode(json.dumps({UNUSED_REGISTRY: {"username": user, "password": password}}).encode()).decode()


def _auth_header(user, password):
    return lib.b64url_json({"username": user, "password": password, "serveraddress": UNUSED_REGISTRY})


def test_credentials_and_secrets_never_appear_in_the_log(spawn_daemon, uniq):
    d = spawn_daemon()
    assert "--log-level" in d.command() and "debug" in d.command()
    token = secrets.token_hex(12)
    values = {
        "X-Registry-Auth password": f"xra-pw-{token}",
        "X-Registry-Config password": f"xrc-pw-{token}",
        "undecodable X-Registry-Auth": f"bad-pw-{token}",
        "session Auth secret": f"sess-pw-{token}",
        "session build secret": f"build-secret-{token}",
    }
    headers = {"X-Registry-Auth": _auth_header("alice", values["X-Registry-Auth password"]),
               "X-Registry-Config": _config_header("bob", values["X-Registry-Config password"])}
    answers = []

    # 1. classic /build with both headers
    r = d.build({"Dockerfile": f"FROM {lib.BASE_IMAGE}\nRUN echo built > /b\n"}, {"t": f"nosecret-b-{uniq}"},
                headers=dict(headers, **{"Content-Type": "application/x-tar"}))
    assert r.status == 200 and r.error is None, r.describe()

    # 2. /solve with both headers
    req = {"frontend": "dockerfile.v0", "exporters": [{"type": "image", "attrs": {"name": f"localhost/ns-{uniq}"}}]}
    body, ctype = lib.multipart({"request": json.dumps(req).encode()},
                                {"context": lib.tar_context({"Dockerfile": f"FROM {lib.BASE_IMAGE}\n"})})
    status, _, out = d.request("POST", "/solve", body, dict(headers, **{"Content-Type": ctype}))
    assert status == 200 and b'"result"' in out, out[-500:]
    answers.append(out)

    # 3. an X-Registry-Auth that does not decode: the answer names the
    #    header, never its content
    bad = base64.urlsafe_b64encode(f'{{"username":"eve","password":"{values["undecodable X-Registry-Auth"]}",'
                                   .encode()).decode()
    r = d.build({"Dockerfile": f"FROM {lib.BASE_IMAGE}\n"}, {"t": f"nosecret-bad-{uniq}"},
                headers={"X-Registry-Auth": bad, "Content-Type": "application/x-tar"})
    assert r.status == 400 and "X-Registry-Auth" in r.raw.decode(), r.describe()
    answers.append(r.raw)

    # 4. BuildKit mode: registry credentials for a FROM host (an unused
    #    stage's: asked for, never pulled) and a secret mounted by RUN
    dockerfile = (f"FROM {UNUSED_REGISTRY}/never/pulled AS unused\n"
                  f"FROM {lib.BASE_IMAGE}\n"
                  "RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /tok.sha\n")
    files = {"Dockerfile": dockerfile}
    secret = values["session build secret"].encode()
    with SessionPeer(d.sock, {"context": files, "dockerfile": files},
                     credentials={UNUSED_REGISTRY: ("carol", values["session Auth secret"])},
                     secrets={"tok": secret}) as peer:
        params = {"version": "2", "remote": "client-session", "session": peer.uuid, "dockerfile": "Dockerfile",
                  "t": f"nosecret-s-{uniq}", "buildid": secrets.token_hex(16)}
        r = d.build(body=b"", params=params, headers={"Content-Type": "application/x-tar"}, timeout=180)
        assert r.status == 200 and r.error is None, r.describe() + peer.trace() + d.log_tail(3000)
        assert peer.credential_requests == [UNUSED_REGISTRY] and peer.secret_requests == ["tok"], (
            peer.credential_requests, peer.secret_requests)
        answers.append(r.raw)
    got = d.image_file(f"docker.io/library/nosecret-s-{uniq}:latest", "/tok.sha").decode().strip()
    assert got == hashlib.sha256(secret).hexdigest()  # the secret reached the RUN step

    # nothing left behind on tmpfs
    assert glob.glob("/dev/shm/podsolve-secrets-*") == []

    log = d.log_path.read_bytes()
    assert b"diffcopy" in log and b"POST /solve" in log  # it is the verbose log of these requests
    needles = dict(values)
    needles.update({f"{k} header": v for k, v in headers.items()})
    needles["undecodable X-Registry-Auth header"] = bad
    for what, needle in needles.items():
        n = needle.encode()
        assert n not in log, f"the {what} appears in the daemon log"
        for a in answers:
            assert n not in a, f"the {what} appears in an answer"
