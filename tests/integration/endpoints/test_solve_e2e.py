"""End-to-end /solve tests against a REAL local registry (Debian's
docker-registry, distribution 2.8), real buildah storage and real clients:
push, registry and local build caches, named contexts, re-attached watchers,
cancellation, OCI downloads and registry auth through the BuildKit session.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import podsolve_testlib as lib

BASE = lib.BASE_IMAGE
MANIFEST_ACCEPT = lib.REGISTRY_MANIFEST_ACCEPT
USER, PASSWORD = lib.REGISTRY_USER, lib.REGISTRY_PASSWORD


# --------------------------------------------------------------------------
# a real registry


_free_port = lib.free_port


Registry = lib.Registry


@pytest.fixture(scope="module")
def registry():
    with lib.running_registry() as r:
        yield r


@pytest.fixture(scope="module")
def auth_registry():
    with lib.running_registry(auth=True) as r:
        yield r


# --------------------------------------------------------------------------
# /solve helpers


def solve_body(request, files):
    return lib.multipart({"request": json.dumps(request).encode()}, files)


def dockerfile_ctx(*lines, extra=None):
    files = {"Dockerfile": lib.containerfile(*lines)}
    files.update(extra or {})
    return lib.tar_context(files)


def run_solve(d, request, files, timeout=300):
    """POST /solve and read the whole stream -> (headers, lines)."""
    body, ctype = solve_body(request, files)
    status, headers, it = d.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=timeout)
    try:
        lines = list(it)
    finally:
        it.close()
    assert status == 200, f"HTTP {status}: {lines}\nlog tail:\n{d.log_tail(3000)}"
    return headers, lines


def describe(lines, d=None):
    out = "\n".join(json.dumps(l)[:500] for l in lines[-30:])
    if d is not None:
        out += f"\n--- daemon log tail:\n{d.log_tail(4000)}"
    return out


def result_of(lines, d=None):
    assert lines, "empty stream"
    last = lines[-1]
    assert "result" in last, f"stream did not end with a result:\n{describe(lines, d)}"
    return last["result"]


vertexes = lib.stream_vertexes


def vertex_named(lines, needle):
    vs = [v for v in vertexes(lines) if needle in v.get("name", "")]
    assert vs, f"no vertex named like {needle!r}: {[v.get('name') for v in vertexes(lines)]}"
    return vs[-1]


def log_text(lines):
    out = b""
    for l in lines:
        for lg in (l.get("status") or {}).get("logs") or []:
            out += base64.b64decode(lg.get("data") or "")
    return out.decode("utf-8", "replace")


share_base = lib.share_base


def stamp_dockerfile(uniq, base=BASE):
    # the ARG: buildah 1.28 never looks ARG steps up in --cache-from (podsolve
    # pulls them first, solver/cache_registry.h)
    return dockerfile_ctx(f"FROM {base}", "ARG NOTE=stamped", f'RUN echo "{uniq} $NOTE" > /uniq.txt',
                          "RUN cat /proc/sys/kernel/random/uuid > /stamp")


# --------------------------------------------------------------------------
# 1. image exporter with push


def test_image_push_to_registry(daemon, registry, uniq):
    ref = f"e2e-push-{uniq}"
    name = f"{registry.host}/app:1"
    # plain HTTP without registry.insecure: a loopback registry (as dockerd)
    req = {"ref": ref, "frontend": "dockerfile.v0",
           "exporters": [{"type": "image", "attrs": {"name": name, "push": "true"}}]}
    _, lines = run_solve(daemon, req, {"context": dockerfile_ctx(f"FROM {BASE}", f"RUN echo {uniq} > /pushed")})
    res = result_of(lines, daemon)
    status, headers, body = registry.manifest("app", "1")
    assert status == 200, f"registry has no app:1 manifest ({status}): {body[:300]!r}\n{lib.tail(registry.log_path)}"
    manifest = json.loads(body)
    assert manifest.get("schemaVersion") == 2 and manifest.get("layers"), manifest
    reg_digest = headers.get("Docker-Content-Digest")
    assert reg_digest and reg_digest.startswith("sha256:")
    # the config the registry holds is the image podsolve built
    cfg_digest = manifest["config"]["digest"]
    assert res["exporterResponse"].get("containerimage.config.digest") == cfg_digest, (res, manifest)
    PUSHED[registry.host] = (res, reg_digest)


PUSHED = {}


def test_image_push_reports_pushed_digest(daemon, registry):
    if registry.host not in PUSHED:
        pytest.skip("needs test_image_push_to_registry")
    res, reg_digest = PUSHED[registry.host]
    reported = res["exporterResponse"].get("containerimage.digest")
    assert reported, res
    assert reported == reg_digest, f"result says {reported}, registry serves {reg_digest}"


# --------------------------------------------------------------------------
# 2. registry cache: export from one daemon, import in a fresh one


def test_registry_cache_export_import(daemon, spawn_daemon, registry, uniq):
    cache_ref = f"{registry.host}/cache-{uniq}"
    img = f"localhost/e2e-regcache-{uniq}:latest"
    base = f"localhost/e2e-base-{uniq}:latest"
    ctx = stamp_dockerfile(uniq, base)
    d2 = spawn_daemon()
    share_base(daemon, d2, base, d2.tmpdir)
    req1 = {"ref": f"e2e-regcache-a-{uniq}", "frontend": "dockerfile.v0",
            "exporters": [{"type": "image", "attrs": {"name": img}}],
            "cache": {"exports": [{"type": "registry", "attrs": {"ref": cache_ref, "registry.insecure": "true"}}]}}
    _, lines1 = run_solve(daemon, req1, {"context": ctx})
    result_of(lines1, daemon)
    stamp1 = daemon.image_file(img, "/stamp")
    assert len(stamp1.strip()) == 36, stamp1
    # the cache is really in the registry
    status, _, body = registry.get(f"/v2/cache-{uniq}/tags/list")
    assert status == 200 and json.loads(body).get("tags"), f"{status} {body[:300]!r}"

    assert not d2.image_exists(img)
    req2 = {"ref": f"e2e-regcache-b-{uniq}", "frontend": "dockerfile.v0",
            "exporters": [{"type": "image", "attrs": {"name": img}}],
            "cache": {"imports": [{"type": "registry", "attrs": {"ref": cache_ref, "registry.insecure": "true"}}]}}
    _, lines2 = run_solve(d2, req2, {"context": ctx})
    result_of(lines2, d2)
    run = vertex_named(lines2, "RUN cat /proc")
    assert run.get("cached") is True or "Cache pulled" in log_text(lines2), \
        f"RUN step not taken from the imported cache: {run}\n{describe(lines2, d2)}"
    assert d2.image_file(img, "/stamp") == stamp1


def test_registry_cache_gives_a_fresh_daemon_the_whole_result(daemon, spawn_daemon, registry, uniq):
    """A build that exports its cache also leaves its result there, keyed by
    what decides it (the Dockerfile, the options, the base image, the
    context's bytes): a fresh daemon importing the cache takes that image
    instead of building, so every step is reused (the COPY too, which
    buildah's own per-step cache must copy again before it can look up),
    the image ID is the same and so is a RUN's random stamp, even when the
    context's files were made again (new mtimes).  One changed byte in
    the context builds anew."""
    cache_ref = f"{registry.host}/whole-{uniq}"
    img = f"localhost/e2e-whole-{uniq}:latest"
    base = f"localhost/e2e-base-{uniq}:latest"
    steps = (f"FROM {base}", "COPY . /ctx", "RUN cat /proc/sys/kernel/random/uuid > /stamp", 'CMD ["cat", "/stamp"]')
    files = {"a.txt": f"{uniq}\n", "sub/b.bin": os.urandom(200_000)}
    d2 = spawn_daemon()
    share_base(daemon, d2, base, d2.tmpdir)
    cache = {"registry.insecure": "true", "ref": cache_ref}
    req_a = {"ref": f"e2e-whole-a-{uniq}", "frontend": "dockerfile.v0",
             "exporters": [{"type": "image", "attrs": {"name": img}}],
             "cache": {"exports": [{"type": "registry", "attrs": cache}]}}
    _, lines_a = run_solve(daemon, req_a, {"context": dockerfile_ctx(*steps, extra=files)})
    result_of(lines_a, daemon)
    id_a = daemon.image_id(img)
    stamp_a = daemon.image_file(img, "/stamp")
    status, _, body = registry.get(f"/v2/whole-{uniq}/tags/list")
    tags = json.loads(body).get("tags") or []
    assert status == 200 and any(t.startswith("podsolve-result-") for t in tags), tags

    time.sleep(1.1)  # the same bytes in files made again: other mtimes
    req_b = {"ref": f"e2e-whole-b-{uniq}", "frontend": "dockerfile.v0",
             "exporters": [{"type": "image", "attrs": {"name": img}}],
             "cache": {"imports": [{"type": "registry", "attrs": cache}]}}
    _, lines_b = run_solve(d2, req_b, {"context": dockerfile_ctx(*steps, extra=files)})
    result_of(lines_b, d2)
    steps_b = [v for v in vertexes(lines_b) if re.match(r"\[\d+/\d+\] ", v.get("name", ""))]
    assert len(steps_b) == len(steps), describe(lines_b, d2)
    assert all(v.get("cached") is True for v in steps_b), describe(lines_b, d2)
    assert "the whole build's result, from cache" in log_text(lines_b), describe(lines_b, d2)
    assert "the whole build's result is in cache" in d2.log_tail(20000)
    # keyed from the uploaded tar: the context was never unpacked
    assert "build context tar not unpacked" in d2.log_tail(20000)
    assert d2.image_id(img) == id_a
    assert d2.image_file(img, "/stamp") == stamp_a
    assert d2.image_file(img, "/ctx/sub/b.bin") == files["sub/b.bin"]

    changed = dict(files, **{"a.txt": f"{uniq[:-1]}#\n"})  # same size, one byte differs
    req_c = dict(req_b, ref=f"e2e-whole-c-{uniq}")
    _, lines_c = run_solve(d2, req_c, {"context": dockerfile_ctx(*steps, extra=changed)})
    result_of(lines_c, d2)
    assert "the whole build's result" not in log_text(lines_c), describe(lines_c, d2)
    assert d2.image_id(img) != id_a
    assert d2.image_file(img, "/ctx/a.txt") == changed["a.txt"].encode()
    assert d2.image_file(img, "/stamp") != stamp_a


# --------------------------------------------------------------------------
# 3. local cache directory under --allow-output-root


def test_local_cache_export_import(spawn_daemon, uniq):
    root = lib.new_tmp_dir("podsolve-e2e-out-")
    try:
        cache_dir = str(root / "cache")
        img = f"localhost/e2e-localcache-{uniq}:latest"
        base = f"localhost/e2e-base-{uniq}:latest"
        ctx = stamp_dockerfile(uniq, base)
        d1 = spawn_daemon("--allow-output-root", str(root))
        d2 = spawn_daemon("--allow-output-root", str(root))
        share_base(d1, d2, base, root)
        req1 = {"ref": f"e2e-lc-a-{uniq}", "frontend": "dockerfile.v0",
                "exporters": [{"type": "image", "attrs": {"name": img}}],
                "cache": {"exports": [{"type": "local", "attrs": {"dest": cache_dir}}]}}
        _, lines1 = run_solve(d1, req1, {"context": ctx})
        result_of(lines1, d1)
        stamp1 = d1.image_file(img, "/stamp")
        assert os.path.isdir(cache_dir) and any(Path(cache_dir).rglob("*")), "local cache dir is empty"

        req2 = {"ref": f"e2e-lc-b-{uniq}", "frontend": "dockerfile.v0",
                "exporters": [{"type": "image", "attrs": {"name": img}}],
                "cache": {"imports": [{"type": "local", "attrs": {"src": cache_dir}}]}}
        _, lines2 = run_solve(d2, req2, {"context": ctx})
        result_of(lines2, d2)
        run = vertex_named(lines2, "RUN cat /proc")
        assert run.get("cached") is True or "Cache pulled" in log_text(lines2), \
            f"RUN step not taken from the local cache: {run}\n{describe(lines2, d2)}"
        assert d2.image_file(img, "/stamp") == stamp1
    finally:
        if os.environ.get("PODSOLVE_KEEP_TMP") != "1":
            shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------
# 4. named context from a multipart part


def test_named_context_local_part(daemon, uniq):
    img = f"localhost/e2e-named-{uniq}:latest"
    req = {"ref": f"e2e-named-{uniq}", "frontend": "dockerfile.v0",
           "frontendAttrs": {"context:extra": "local:extra"},
           "exporters": [{"type": "image", "attrs": {"name": img}}]}
    files = {"context": dockerfile_ctx(f"FROM {BASE}", "COPY --from=extra /f.txt /f.txt"),
             "extra": lib.tar_context({"f.txt": f"from the extra part {uniq}\n"})}
    _, lines = run_solve(daemon, req, files)
    result_of(lines, daemon)
    assert daemon.image_file(img, "/f.txt") == f"from the extra part {uniq}\n".encode()


def test_tar_context_with_a_session_serves_secrets_and_ssh_to_buildahs_dialect(daemon, ssh_agent, tmp_path, uniq):
    """POST /solve with the context as a tar part and "session" naming a
    /session that serves a secret and an ssh agent, the Dockerfile without
    `# syntax` (buildah's dialect): RUN --mount=type=secret reads the
    session's secret and RUN --mount=type=ssh reaches its agent (what
    `podsolve build --secret/--ssh` sends)."""
    from session_peer import SessionPeer
    secret = f"tar-session-secret-{uniq}".encode()
    img = f"localhost/e2e-tar-session-{uniq}:latest"
    probe = lib.agent_probe(tmp_path / "agent-probe").read_bytes()
    ctx = lib.tar_context({"Dockerfile": lib.containerfile(
        f"FROM {BASE}", "COPY agent-probe /agent-probe", "RUN chmod 0755 /agent-probe",
        "RUN --mount=type=secret,id=tok,required=true wc -c < /run/secrets/tok > /tok-len",
        "RUN --mount=type=ssh,required=true /agent-probe > /keys"), "agent-probe": probe})
    req = {"ref": f"e2e-tar-session-{uniq}", "frontend": "dockerfile.v0",
           "exporters": [{"type": "image", "attrs": {"name": img}}]}
    with SessionPeer(daemon.sock, {}, secrets={"tok": secret}, ssh_agents={"default": ssh_agent.sock}) as peer:
        req["session"] = peer.uuid
        _, lines = run_solve(daemon, req, {"context": ctx})
    result_of(lines, daemon)
    assert daemon.image_file(img, "/tok-len").strip() == str(len(secret)).encode()
    assert daemon.image_file(img, "/keys") == f"key: {ssh_agent.comment}\nkeys: 1\n".encode()


# --------------------------------------------------------------------------
# 5. a second watcher sees exactly the same stream


def test_second_watcher_same_stream(daemon, uniq):
    ref = f"e2e-watch-{uniq}"
    req = {"ref": ref, "frontend": "dockerfile.v0", "frontendAttrs": {"no-cache": ""}}
    ctx = dockerfile_ctx(f"FROM {BASE}", f"RUN echo {uniq}; for i in 1 2 3 4 5; do echo tick$i; sleep 0.4; done")
    body, ctype = solve_body(req, {"context": ctx})
    status, _, it = daemon.stream("POST", "/solve", body, {"Content-Type": ctype})
    assert status == 200
    first = []
    try:
        for obj in it:
            first.append(obj)
            if "tick1" in log_text([obj]):
                break
        else:
            pytest.fail(f"build ended before the RUN printed:\n{describe(first, daemon)}")
        wstatus, _, wit = daemon.stream("GET", f"/solve/{ref}/status")
        assert wstatus == 200
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("lines", list(wit)), daemon=True)
        t.start()
        first.extend(it)
        t.join(lib.scaled(60))
        assert not t.is_alive(), "watcher stream did not end"
        wit.close()
    finally:
        it.close()
    watcher = box["lines"]
    assert "result" in first[-1], describe(first, daemon)
    assert watcher[-1] == first[-1]
    assert "tick5" in log_text(first)
    assert watcher == first, "re-attached stream differs from the original"


# --------------------------------------------------------------------------
# 6. cancel a running RUN


def _sleep_procs(marker):
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if "sleep 30" in cmd and (marker in cmd or cmd.strip() == "sleep 30"):
            pids.append((int(p.name), cmd))
    return pids


def test_cancel_running_build(daemon, uniq):
    ref = f"e2e-cancel-{uniq}"
    req = {"ref": ref, "frontend": "dockerfile.v0", "frontendAttrs": {"no-cache": ""}}
    ctx = dockerfile_ctx(f"FROM {BASE}", f"RUN echo start-{uniq}; sleep 30")
    before = {pid for pid, _ in _sleep_procs(uniq)}
    body, ctype = solve_body(req, {"context": ctx})
    status, _, it = daemon.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=120)
    assert status == 200
    lines = []
    try:
        for obj in it:
            lines.append(obj)
            if f"start-{uniq}" in log_text([obj]):
                break
        else:
            pytest.fail(f"build ended before the RUN started:\n{describe(lines, daemon)}")
        deadline = time.monotonic() + lib.scaled(10)
        while time.monotonic() < deadline and not {p for p, _ in _sleep_procs(uniq)} - before:
            time.sleep(0.1)
        assert {p for p, _ in _sleep_procs(uniq)} - before, "the RUN's sleep 30 never showed up"
        t0 = time.monotonic()
        cstatus, _, cbody = daemon.request("POST", f"/solve/{ref}/cancel", timeout=60)
        assert cstatus == 200, (cstatus, cbody)
        assert json.loads(cbody).get("state") == "cancelled", cbody
        lines.extend(it)
    finally:
        it.close()
    assert time.monotonic() - t0 < lib.scaled(20)
    assert "error" in lines[-1], describe(lines, daemon)
    deadline = time.monotonic() + lib.scaled(15)
    while time.monotonic() < deadline and daemon.working_containers():
        time.sleep(0.5)
    assert daemon.working_containers() == [], daemon.working_containers()
    deadline = time.monotonic() + lib.scaled(15)
    while time.monotonic() < deadline and {p for p, _ in _sleep_procs(uniq)} - before:
        time.sleep(0.3)
    left = [pc for pc in _sleep_procs(uniq) if pc[0] not in before]
    assert left == [], f"processes survived the cancel: {left}"


# --------------------------------------------------------------------------
# 7. OCI archive kept for download


def test_oci_output_download_is_loadable(daemon, uniq, tmp_path):
    ref = f"e2e-oci-{uniq}"
    req = {"ref": ref, "frontend": "dockerfile.v0",
           "exporters": [{"type": "oci", "attrs": {"name": f"localhost/e2e-oci-{uniq}:1"}}]}
    _, lines = run_solve(daemon, req, {"context": dockerfile_ctx(f"FROM {BASE}", f"RUN echo {uniq} > /oci")})
    res = result_of(lines, daemon)
    status, headers, data = daemon.request("GET", f"/solve/{ref}/outputs/0")
    assert status == 200, (status, data[:300])
    assert headers.get("Content-Type", "").startswith("application/x-tar")
    f = tmp_path / "image.tar"
    f.write_bytes(data)
    r = subprocess.run(["skopeo", "inspect", f"oci-archive:{f}"], capture_output=True, text=True, timeout=lib.scaled(60))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info.get("Layers"), info
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{f}"], capture_output=True, text=True)
    assert raw.returncode == 0, raw.stderr
    manifest = json.loads(raw.stdout)
    # the archive holds the image this build produced
    assert manifest["config"]["digest"] == res["exporterResponse"]["containerimage.config.digest"], (manifest, res)


# --------------------------------------------------------------------------
# 8. BuildKit mode: registry credentials asked from the CLI over the session


def _docker_config(tmp_path, host, user, password):
    cfgdir = tmp_path / "docker-config"
    cfgdir.mkdir()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (cfgdir / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return cfgdir


def _buildkit_build(docker_cli, d, cfgdir, ctxdir, tag):
    env = d.env()
    env.update(DOCKER_BUILDKIT="1", DOCKER_CONFIG=str(cfgdir), DOCKER_HOST=f"unix://{d.sock}")
    return subprocess.run([docker_cli, "build", "--pull", "--progress=plain", "-t", tag, str(ctxdir)],
                          env=env, capture_output=True, text=True, timeout=lib.scaled(300))


@pytest.fixture(scope="module")
def auth_registry_with_base(auth_registry, daemon):
    # the registry really wants credentials
    status, _, _ = auth_registry.get("/v2/")
    assert status == 401
    status, _, _ = auth_registry.get("/v2/", creds=(USER, PASSWORD))
    assert status == 200
    daemon.buildah("push", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", BASE,
                   f"docker://{auth_registry.host}/busybox:latest")
    assert auth_registry.manifest("busybox", "latest", creds=(USER, PASSWORD))[0] == 200
    return auth_registry


# BuildKit mode with a registry that requires credentials: the daemon asks
# the CLI's Auth/Credentials over the session.  The test registry speaks
# plain HTTP on 127.0.0.1, which the daemon trusts without --insecure-registry
# (as dockerd trusts loopback registries).
@pytest.fixture
def auth_daemon(spawn_daemon, auth_registry_with_base):
    return spawn_daemon()


def test_buildkit_session_registry_auth_loopback(auth_daemon, docker_cli, auth_registry_with_base,
                                                      tmp_path, uniq):
    d, reg = auth_daemon, auth_registry_with_base
    cfgdir = _docker_config(tmp_path, reg.host, USER, PASSWORD)
    ctxdir = lib.make_context(tmp_path / "ctx", {
        "Dockerfile": lib.containerfile(f"FROM {reg.host}/busybox:latest", f"RUN echo {uniq} > /authed")})
    tag = f"e2e-auth-{uniq}"
    r = _buildkit_build(docker_cli, d, cfgdir, ctxdir, tag)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{out[-4000:]}\n--- daemon log:\n{d.log_tail(4000)}"
    assert d.image_file(f"docker.io/library/{tag}:latest", "/authed") == f"{uniq}\n".encode()
    # the credentials came from the CLI over the session, and the pull needed them
    log = d.log_tail(200000)
    assert "/moby.filesync.v1.Auth/Credentials" in log, log[-3000:]
    assert f"credentials for {reg.host}: found" in log, log[-3000:]


def test_buildkit_session_registry_auth_loopback_wrong_password(auth_daemon, docker_cli,
                                                                     auth_registry_with_base, tmp_path, uniq):
    d, reg = auth_daemon, auth_registry_with_base
    cfgdir = _docker_config(tmp_path, reg.host, USER, "wrong-password")
    ctxdir = lib.make_context(tmp_path / "ctx", {
        "Dockerfile": lib.containerfile(f"FROM {reg.host}/busybox:latest", f"RUN echo {uniq} > /authed")})
    tag = f"e2e-noauth-{uniq}"
    r = _buildkit_build(docker_cli, d, cfgdir, ctxdir, tag)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    low = out.lower()
    assert "unauthorized" in low or "authentication required" in low, out[-3000:]
    assert not d.image_exists(f"docker.io/library/{tag}:latest")


# An LLB definition's docker-image source pulls with the session's
# Auth/Credentials, as BuildKit does for a frontend's image sources.
def test_llb_image_source_pulls_with_session_credentials(auth_daemon, auth_registry_with_base, uniq):
    import llbgen as llb
    from session_peer import SessionPeer
    d, reg = auth_daemon, auth_registry_with_base
    img = llb.source(f"docker-image://{reg.host}/busybox:latest")
    run = llb.exec_(["sh", "-c", f"echo {uniq} > /authed"], root=img)

    def solve(creds):
        with SessionPeer(d.sock, {}, credentials={reg.host: creds}) as peer:
            req = {"definition": llb.definition_json([img, run]), "session": peer.uuid}
            status, _, it = d.stream("POST", "/solve", json.dumps(req).encode(), {"Content-Type": "application/json"})
            return status, list(it), peer.credential_requests

    status, events, asked = solve((USER, "wrong-password"))
    assert status == 200 and asked == [reg.host]
    errs = [e["error"] for e in events if "error" in e]
    assert errs and errs[0]["vertex"] == img.ref, events[-3:]
    status, events, asked = solve((USER, PASSWORD))
    res = [e["result"] for e in events if "result" in e]
    assert res, events[-3:]
    image = res[0]["exporterResponse"]["containerimage.config.digest"].split(":", 1)[1]
    assert d.image_file(image, "/authed") == f"{uniq}\n".encode()
    assert PASSWORD not in d.log_tail(400000)


def test_a_json_body_that_does_not_parse_says_where(daemon):
    # A newcomer's typo (a stray `}`): the 400 names the line and column and
    # shows the bytes there, instead of only "not valid JSON".
    body = b'{"frontend": "dockerfile.v0",\n  "exporters": [},\n}'
    status, _, resp = daemon.request("POST", "/solve", body=body, headers={"Content-Type": "application/json"})
    assert status == 400, resp
    err = json.loads(resp)
    assert err["response"] == 400
    assert err["message"] == 'request body is not valid JSON: line 2, column 17, at "},"', err
