"""The `store` exporter (issue #17): POST /solve writes the image into a
store speaking api-docs/store-protocol.md — here the reference adapter,
examples/store-adapter — and what lands there is a real image: pulled back
with examples/store-adapter/store_pull.py into an OCI layout, copied by
skopeo into a fresh containers-storage, and run.  A multi-platform build
lands as an index of both images.  A store that is down, refuses the
token, or fails half-way gives a clear error and leaves no tag behind; the
token appears nowhere in the stream, the log or the state dir.
"""

import base64
import http.server
import json
import re
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE

STORE_PULL = lib.REPO_ROOT / "examples" / "store-adapter" / "store_pull.py"


def solve(d, exporters, dockerfile_lines, extra=None, attrs=None):
    files = {"Dockerfile": lib.containerfile(*dockerfile_lines)}
    files.update(extra or {})
    request = {"frontend": "dockerfile.v0", "frontendAttrs": attrs or {}, "exporters": exporters}
    body, ctype = lib.multipart({"request": json.dumps(request).encode()}, {"context": lib.tar_context(files)})
    status, headers, it = d.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=300)
    try:
        lines = list(it)
    finally:
        it.close()
    return status, lines


def ok(lines, d):
    assert lines and "result" in lines[-1], "\n".join(json.dumps(l)[:400] for l in lines[-15:]) + d.log_tail(3000)
    return lines[-1]["result"]


def error_of(lines):
    assert lines and "error" in lines[-1], lines[-5:]
    return lines[-1]["error"]["message"] if isinstance(lines[-1]["error"], dict) else lines[-1]["error"]


@pytest.fixture
def store(tmp_path):
    s = lib.StoreAdapter(tmp_path / "store")
    yield s
    s.stop()


def pull_and_copy(store, ref, tmp_path, token=None):
    """store -> OCI layout -> skopeo -> a fresh containers-storage -> (buildah argv prefix, image name)."""
    layout = tmp_path / "layout"
    argv = [sys.executable, str(STORE_PULL), "--store", store.endpoint, ref, str(layout)]
    if token:
        argv[3:3] = ["--token", token]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=lib.scaled(120))
    assert r.returncode == 0, r.stderr
    root, run = tmp_path / "fresh-root", tmp_path / "fresh-run"
    name = "localhost/from-store:1"
    r = subprocess.run(["skopeo", "copy", f"oci:{layout}",
                        f"containers-storage:[overlay@{root}+{run}]{name}"],
                       capture_output=True, text=True, timeout=lib.scaled(300))
    assert r.returncode == 0, r.stderr
    return ["buildah", "--root", str(root), "--runroot", str(run), "--storage-driver", "overlay"], layout, name


def test_image_exported_to_a_store_is_pulled_back_and_runs(daemon, store, tmp_path, uniq):
    status, lines = solve(daemon, [{"type": "store", "attrs": {
        "endpoint": store.endpoint, "name": f"team/app-{uniq}:1,team/app-{uniq}:latest"}}],
        [f"FROM {BASE_IMAGE}", "RUN echo built > /built.txt", "COPY app.txt /app.txt", 'CMD ["cat", "/app.txt"]'],
        extra={"app.txt": f"app {uniq}\n"})
    assert status == 200
    res = ok(lines, daemon)
    st, _, body = store.call("GET", f"/v1/names/team/app-{uniq}/tags")
    assert st == 200 and json.loads(body)["tags"] == ["1", "latest"]
    st, hdrs, man = store.call("GET", f"/v1/names/team/app-{uniq}/manifests/1")
    assert hdrs["Store-Content-Digest"] == res["exporterResponse"]["containerimage.digest"]
    assert json.loads(man)["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    buildah, _, name = pull_and_copy(store, f"team/app-{uniq}:1", tmp_path)
    ctr = subprocess.run(buildah + ["from", "--pull=never", "--quiet", name], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        out = subprocess.run(buildah + ["run", "--isolation", "chroot", ctr, "--", "cat", "/app.txt", "/built.txt"],
                             capture_output=True, text=True, timeout=lib.scaled(120))
        assert out.returncode == 0, out.stderr
        assert out.stdout == f"app {uniq}\nbuilt\n"
    finally:
        subprocess.run(buildah + ["rm", ctr], capture_output=True)
    cfg = json.loads(subprocess.run(buildah + ["inspect", "--type", "image", name], capture_output=True, text=True,
                                    check=True).stdout)
    assert cfg["OCIv1"]["config"]["Cmd"] == ["cat", "/app.txt"]
    # A second export of the same image sends no blob again.
    status, lines = solve(daemon, [{"type": "store", "attrs": {
        "endpoint": store.endpoint, "name": f"team/app-{uniq}:2"}}],
        [f"FROM {BASE_IMAGE}", "RUN echo built > /built.txt", "COPY app.txt /app.txt", 'CMD ["cat", "/app.txt"]'],
        extra={"app.txt": f"app {uniq}\n"})
    ok(lines, daemon)
    pushed = [s for l in lines for s in (l.get("status") or {}).get("statuses") or [] if s.get("id") == "pushing blobs"]
    assert pushed and pushed[-1]["current"] == 0, pushed


def test_a_second_export_of_an_image_reuses_its_layout_until_a_prune(daemon, store, tmp_path, uniq):
    """The OCI layout an image was exported as is kept under the state dir
    (build cache `export.layout`): the next export of the same image, to
    another name, uploads it without compressing anything again and gives
    the same manifest; a prune of that type removes it, and the export
    after it writes it again."""
    steps = [f"FROM {BASE_IMAGE}", f"RUN head -c 300000 /dev/urandom > /blob; echo {uniq} > /id"]

    def export(tag):
        status, lines = solve(daemon, [{"type": "store", "attrs": {
            "endpoint": store.endpoint, "name": f"layouts/app-{uniq}:{tag}"}}], steps)
        assert status == 200
        res = ok(lines, daemon)
        notes = [s.get("id") for l in lines for s in (l.get("status") or {}).get("statuses") or []]
        return res["exporterResponse"], "reusing the layout of an earlier export" in notes

    first, reused = export("1")
    assert not reused
    image = first["containerimage.config.digest"].split(":", 1)[1]
    kept = daemon.state / "export-layouts" / image
    assert (kept / "index.json").is_file(), sorted(p.name for p in kept.parent.iterdir())
    second, reused = export("2")
    assert reused
    assert second["containerimage.digest"] == first["containerimage.digest"]
    st, hdrs, _ = store.call("GET", f"/v1/names/layouts/app-{uniq}/manifests/2")
    assert st == 200 and hdrs["Store-Content-Digest"] == first["containerimage.digest"]

    status, _, raw = daemon.request("POST", lib.with_query("/v1.41/build/prune", {
        "filters": json.dumps({"type": ["export.layout"], "id": [image]})}), None, None, timeout=600)
    assert status == 200, raw
    report = json.loads(raw)
    assert [r["Type"] for r in report["Records"]] == ["export.layout"], report
    assert not kept.exists()
    third, reused = export("3")
    assert not reused and (kept / "index.json").is_file()
    buildah, _, name = pull_and_copy(store, f"layouts/app-{uniq}:3", tmp_path)
    assert subprocess.run(buildah + ["inspect", "--type", "image", name], capture_output=True).returncode == 0


def test_multi_platform_build_lands_as_an_index(daemon, store, tmp_path, uniq):
    status, lines = solve(daemon, [{"type": "store", "attrs": {"endpoint": store.endpoint, "name": f"mp-{uniq}"}}],
                          ["FROM scratch", "COPY f /f"], extra={"f": "x\n"},
                          attrs={"platform": "linux/amd64,linux/arm64"})
    ok(lines, daemon)
    st, hdrs, body = store.call("GET", f"/v1/names/mp-{uniq}/manifests/latest")
    index = json.loads(body)
    assert hdrs["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    for m in index["manifests"]:
        st, _, man = store.call("GET", f"/v1/names/mp-{uniq}/manifests/{m['digest']}")
        assert st == 200
        cfg_digest = json.loads(man)["config"]["digest"]
        st, _, cfg = store.call("GET", f"/v1/blobs/{cfg_digest}")
        assert json.loads(cfg)["architecture"] == m["platform"]["architecture"]


def test_store_down_is_a_clear_error(daemon, tmp_path):
    sock = tmp_path / "nobody.sock"
    status, lines = solve(daemon, [{"type": "store", "attrs": {"endpoint": f"unix://{sock}", "name": "x:1"}}],
                          ["FROM scratch", "COPY f /f"], extra={"f": "x\n"})
    msg = error_of(lines)
    assert f"store unix://{sock}" in msg and "GET /v1/" in msg, msg
    lib.assert_daemon_builds(daemon)


def test_bad_store_attrs_are_refused_before_the_build(daemon):
    for attrs, want in (({"name": "x:1"}, "attrs.endpoint"),
                        ({"endpoint": "unix:///x.sock"}, "attrs.name"),
                        ({"endpoint": "unix:///x.sock", "name": "Bad Name"}, "not a store name"),
                        ({"endpoint": "http://example.com", "name": "x"}, "loopback"),
                        ({"endpoint": "unix:///x.sock", "name": "x", "colour": "red"}, "unknown attr")):
        body, ctype = lib.multipart({"request": json.dumps({
            "frontend": "dockerfile.v0", "exporters": [{"type": "store", "attrs": attrs}]}).encode()},
            {"context": lib.tar_context({"Dockerfile": "FROM scratch\n"})})
        if "loopback" in want:
            # the endpoint is checked when the exporter runs: the stream's error line
            status, lines = solve(daemon, [{"type": "store", "attrs": attrs}], ["FROM scratch"])
            assert want in error_of(lines)
            continue
        status, _, data = daemon.request("POST", "/solve", body, {"Content-Type": ctype})
        text = data.decode()
        assert status == 400, (attrs, status, text)
        assert want in text and "cause" in json.loads(text), (attrs, text)


class HalfStore(http.server.BaseHTTPRequestHandler):
    """A store that accepts blobs, then fails every manifest with a 500."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _answer(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/":
            return self._answer(200, json.dumps({"protocol": "podsolve-store", "version": 1,
                                                 "features": []}).encode())
        self._answer(404, b'{"error":"not_found","message":"no"}')

    def do_HEAD(self):
        self._answer(404)

    def do_PUT(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        type(self).puts.append(self.path)
        if "/manifests/" in self.path:
            return self._answer(500, b'{"error":"bad_request","message":"disk on fire"}')
        self._answer(201)


def test_store_failing_half_way_leaves_no_tag(daemon, tmp_path):
    HalfStore.puts = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HalfStore)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
        status, lines = solve(daemon, [{"type": "store", "attrs": {"endpoint": endpoint, "name": "half:1"}}],
                              ["FROM scratch", "COPY f /f"], extra={"f": "x\n"})
        msg = error_of(lines)
        assert "500" in msg and "disk on fire" in msg, msg
        # blobs went first; the one manifest PUT failed; no tag was ever written
        assert any("/v1/blobs/" in p for p in HalfStore.puts)
        assert not any(p.endswith("/manifests/1") for p in HalfStore.puts), HalfStore.puts
    finally:
        srv.shutdown()


def test_token_is_used_and_never_shown(daemon, tmp_path, uniq):
    token = f"tok-{uniq}-" + os.urandom(8).hex()
    s = lib.StoreAdapter(tmp_path / "tstore", token=token)
    try:
        lines_bad = solve(daemon, [{"type": "store", "attrs": {"endpoint": s.endpoint, "name": "t:1"}}],
                          ["FROM scratch", "COPY f /f"], extra={"f": "x\n"})[1]
        assert "401" in error_of(lines_bad) and "unauthorized" in error_of(lines_bad)
        status, lines = solve(daemon, [{"type": "store", "attrs": {
            "endpoint": s.endpoint, "name": "t:1", "token": token}}], ["FROM scratch", "COPY f /f"],
            extra={"f": "x\n"})
        ok(lines, daemon)
        assert s.call("GET", "/v1/names/t/tags", headers={"Authorization": f"Bearer {token}"})[0] == 200
        everything = json.dumps(lines) + json.dumps(lines_bad)
        assert token not in everything
        assert token not in Path(daemon.log_path).read_text(errors="replace")
        r = subprocess.run(["grep", "-rl", "--binary-files=text", token, str(daemon.state)], capture_output=True,
                           text=True)
        assert r.stdout == "", f"token found in state: {r.stdout}"
    finally:
        s.stop()


def test_podsolve_cli_and_buildx_export_to_a_store(daemon, go_clients, store, tmp_path, uniq):
    """`podsolve build --output type=store,...` and `docker buildx build
    --output type=store,...` (the exporter reaches /grpc's Control.Solve as
    BuildKit sends it) both land in the store."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": lib.containerfile(
        f"FROM {BASE_IMAGE}", f"RUN echo {uniq} > /id")})
    env = daemon.env()
    env["PODSOLVE_HOST"] = f"unix://{daemon.sock}"
    r = subprocess.run([str(lib.REPO_ROOT / "client" / "podsolve"), "build", "--progress", "plain", "--output",
                        f"type=store,endpoint={store.endpoint},name=cli/app:{uniq}", str(ctx)],
                       env=env, capture_output=True, text=True, timeout=lib.scaled(240))
    assert r.returncode == 0, r.stdout + r.stderr
    r = lib.run([go_clients.docker, "buildx", "build", "--progress", "plain", "--output",
                 f"type=store,endpoint={store.endpoint},name=buildx/app:{uniq}",
                 "--cache-to", f"type=store,endpoint={store.endpoint},name=buildx/cache-{uniq}", "."],
                go_clients.env(daemon), cwd=ctx, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    st, _, body = store.call("GET", f"/v1/names/buildx/cache-{uniq}/tags")
    assert st == 200 and json.loads(body)["tags"], body
    for name in ("cli/app", "buildx/app"):
        st, hdrs, man = store.call("GET", f"/v1/names/{name}/manifests/{uniq}")
        assert st == 200, (name, man)
        layers = json.loads(man)["layers"]
        assert layers and all(store.call("HEAD", f"/v1/blobs/{l['digest']}")[0] == 200 for l in layers)


def test_large_layer_goes_up_in_resumable_chunks(daemon, store, tmp_path, uniq):
    """A layer larger than the store's upload_chunk_bytes (8 MiB for the
    reference adapter) goes through POST /v1/uploads and PATCHes; the blob
    the store assembles has the right digest (the store checks it)."""
    big = os.urandom(20 << 20)
    status, lines = solve(daemon, [{"type": "store", "attrs": {"endpoint": store.endpoint, "name": f"big-{uniq}"}}],
                          ["FROM scratch", "COPY big.bin /big.bin"], extra={"big.bin": big})
    ok(lines, daemon)
    log = (store.dir / "adapter.log").read_text()
    assert log.count('"PATCH /v1/uploads/') >= 3, log[-2000:]
    st, _, man = store.call("GET", f"/v1/names/big-{uniq}/manifests/latest")
    layer = json.loads(man)["layers"][0]
    assert layer["size"] > (16 << 20)
    st, hdrs, _ = store.call("HEAD", f"/v1/blobs/{layer['digest']}")
    assert st == 200 and int(hdrs["Content-Length"]) == layer["size"]


# --------------------------------------------------------------------------
# caches in a store: export from one daemon, import in a fresh one


share_base = lib.share_base


def _cache_solve(d, name, base, uniq, cache):
    files = {"Dockerfile": lib.containerfile(f"FROM {base}", "ARG NOTE=stamped", f'RUN echo "{uniq} $NOTE" > /uniq.txt',
                                             "COPY f /f", "RUN cat /proc/sys/kernel/random/uuid > /stamp"),
             "f": f"{uniq}\n"}
    request = {"frontend": "dockerfile.v0", "exporters": [{"type": "image", "attrs": {"name": name}}],
               "cache": cache}
    body, ctype = lib.multipart({"request": json.dumps(request).encode()}, {"context": lib.tar_context(files)})
    status, headers, it = d.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=300)
    try:
        return list(it)
    finally:
        it.close()


def cached_steps(lines):
    names = {}
    for v in lib.stream_vertexes(lines):
        if re.match(r"^\[\d+/\d+\] ", v.get("name", "")):
            names[v["name"]] = names.get(v["name"], False) or bool(v.get("cached"))
    return names


def test_cache_in_a_store_makes_a_fresh_daemon_reuse_every_step(daemon, spawn_daemon, store, tmp_path, uniq):
    img = f"localhost/storecache-{uniq}:latest"
    base = f"localhost/storecache-base-{uniq}:latest"
    d2 = spawn_daemon()
    share_base(daemon, d2, base, d2.tmpdir)
    attrs = {"endpoint": store.endpoint, "name": f"cache/app-{uniq}"}
    lines1 = _cache_solve(daemon, img, base, uniq, {"exports": [{"type": "store", "attrs": attrs}]})
    ok(lines1, daemon)
    stamp1 = daemon.image_file(img, "/stamp")
    st, _, body = store.call("GET", f"/v1/names/cache/app-{uniq}/tags")
    tags = json.loads(body)["tags"]
    assert st == 200 and "podsolve-arg-steps" in tags and len(tags) >= 4, tags

    assert not d2.image_exists(img)
    lines2 = _cache_solve(d2, img, base, uniq, {"imports": [{"type": "store", "attrs": attrs}]})
    ok(lines2, d2)
    steps = cached_steps(lines2)
    assert steps and all(c for n, c in steps.items() if "FROM" not in n), list(steps.items())
    assert d2.image_file(img, "/stamp") == stamp1
    assert d2.image_id(img) == daemon.image_id(img)


def test_cache_import_from_a_store_that_is_down_is_a_warning(daemon, tmp_path, uniq):
    img = f"localhost/storecache-down-{uniq}:latest"
    attrs = {"endpoint": f"unix://{tmp_path}/gone.sock", "name": "cache/gone"}
    lines = _cache_solve(daemon, img, BASE_IMAGE, uniq, {"imports": [{"type": "store", "attrs": attrs}]})
    ok(lines, daemon)
    warnings = [w for l in lines for w in (l.get("status") or {}).get("warnings") or []]
    text = " ".join(base64.b64decode(w.get("short") or "").decode() for w in warnings)
    assert "cache import from store" in text and "building without it" in text, lines[-8:]
    assert daemon.image_exists(img)


def test_two_daemons_exporting_one_cache_name_at_once_leave_a_consistent_cache(daemon, spawn_daemon, store,
                                                                               tmp_path, uniq):
    """Replicas A and B export to the same cache name at the same time (one
    project, two branches: a shared first step, then different ones).  Every
    tag in the store then names a whole image, and a third, empty replica C
    builds both branches from it.  The shared step (ARG NOTE) is one key
    that both wrote, each with its own image (buildah stamps every step
    with its creation time), and the last write won: C follows the winner's
    chain to the end, and rebuilds the loser's steps after the shared one
    (docs/scale-out.md, "Consistency")."""
    base = f"localhost/storecache-race-{uniq}:latest"
    a, b, c = spawn_daemon(), spawn_daemon(), spawn_daemon()
    for d in (a, b, c):
        share_base(daemon, d, base, d.tmpdir)
    attrs = {"endpoint": store.endpoint, "name": f"cache/shared-{uniq}"}
    results = {}

    def build(d, branch):
        results[branch] = _cache_solve(d, f"localhost/race-{branch}-{uniq}", base, f"{uniq}-{branch}",
                                       {"exports": [{"type": "store", "attrs": attrs}]})
    threads = [threading.Thread(target=build, args=(a, "a")), threading.Thread(target=build, args=(b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(lib.scaled(300))
    ok(results["a"], a)
    ok(results["b"], b)
    # every tag: a manifest whose config and layers are all in the store
    st, _, body = store.call("GET", f"/v1/names/cache/shared-{uniq}/tags")
    tags = json.loads(body)["tags"]
    assert len(tags) >= 6, tags
    for tag in tags:
        st, _, man = store.call("GET", f"/v1/names/cache/shared-{uniq}/manifests/{tag}")
        assert st == 200, tag
        doc = json.loads(man)
        for desc in [doc["config"]] + doc["layers"]:
            assert store.call("HEAD", f"/v1/blobs/{desc['digest']}")[0] == 200, (tag, desc)
    # C: the winner's branch entirely from the cache (the same image as the
    # replica's), the other one built, correctly, after the shared step
    whole = []
    for branch, src in (("a", a), ("b", b)):
        img = f"localhost/race-{branch}-{uniq}"
        lines = _cache_solve(c, img, base, f"{uniq}-{branch}", {"imports": [{"type": "store", "attrs": attrs}]})
        ok(lines, c)
        steps = cached_steps(lines)
        assert steps["[2/5] ARG NOTE=stamped"], (branch, list(steps.items()))
        assert c.image_file(img, "/uniq.txt") == f"{uniq}-{branch} stamped\n".encode()
        if all(v for n, v in steps.items() if "FROM" not in n):
            assert c.image_id(img) == src.image_id(img)
            whole.append(branch)
    assert len(whole) >= 1, "neither replica's chain survived in the store"
