"""Native S3 (issue #17 item 3): `type=s3` exporters and caches with
BuildKit's attribute names, against a real S3 server (MinIO, built by
scripts/get-go-clients --only minio).

An image export lands as an OCI image layout under the prefix: downloaded,
skopeo reads it into a fresh storage and the image runs.  A cache exported
by one daemon makes a fresh daemon (credentials from its environment) reuse
every step.  S3 down, or wrong credentials, give clear errors (warnings for
a cache import); the secret appears nowhere.  A 100 MiB layer goes up as a
multipart upload.
"""

import base64
import http.client
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE

sys.path.insert(0, str(Path(__file__).parent))
from test_store_export import _cache_solve, cached_steps, error_of, ok, solve  # noqa: E402

REGION = "us-east-1"
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class MinIO:
    """A MinIO server on loopback with one root user; requests by curl
    --aws-sigv4 (the test's own S3 client, independent of podsolved's)."""

    def __init__(self, tmp):
        r = subprocess.run([str(lib.GET_GO_CLIENTS), "--only", "minio"], capture_output=True, text=True,
                           timeout=3600)
        paths = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
        if r.returncode != 0 or not os.access(paths.get("minio", ""), os.X_OK):
            pytest.skip(f"MinIO is missing: run scripts/get-go-clients --only minio\n{r.stderr[-2000:]}")
        self.user = "podsolve-test"
        self.password = "s3cret-" + os.urandom(12).hex()
        self.port = lib.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tmp)
        (self.dir / "data").mkdir(parents=True)
        env = dict(os.environ, MINIO_ROOT_USER=self.user, MINIO_ROOT_PASSWORD=self.password)
        self.log = open(self.dir / "minio.log", "wb")
        self.proc = subprocess.Popen([paths["minio"], "server", "--address", f"127.0.0.1:{self.port}",
                                      "--console-address", f"127.0.0.1:{lib.free_port()}", "--quiet",
                                      str(self.dir / "data")], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + lib.scaled(60)
        while time.monotonic() < deadline:
            try:
                if self.call("GET", "/minio/health/live", sign=False)[0] == 200:
                    break
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.3)
        else:
            self.stop()
            raise RuntimeError("MinIO did not start: " + (self.dir / "minio.log").read_text(errors="replace"))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def call(self, method, path, data=None, sign=True, out=None):
        """-> (status, headers (lower-case), body bytes)"""
        argv = ["curl", "-sS", "-X", method, "-D", "-", f"{self.url}{path}"]
        if method == "HEAD":
            argv[2:4] = ["-I"]
        if sign:
            argv += ["--aws-sigv4", f"aws:amz:{REGION}:s3", "--user", f"{self.user}:{self.password}"]
        if data is not None:
            argv += ["--data-binary", "@-"]
        if out:
            argv += ["-o", str(out)]
        r = subprocess.run(argv, input=data, capture_output=True, timeout=lib.scaled(120), check=True)
        head, _, body = r.stdout.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        return status, headers, body

    def make_bucket(self, name):
        assert self.call("PUT", f"/{name}")[0] == 200

    def keys(self, bucket, prefix=""):
        """Every key under prefix -> size."""
        out, token = {}, None
        while True:
            # sorted and escaped: curl 7.88 signs the query as written
            q = (f"continuation-token={urllib.parse.quote(token, safe='')}&" if token else "") + \
                f"list-type=2&prefix={urllib.parse.quote(prefix, safe='')}"
            st, _, body = self.call("GET", f"/{bucket}?{q}")
            assert st == 200, body
            root = ET.fromstring(body)
            for c in root.iter(f"{S3_NS}Contents"):
                out[c.find(f"{S3_NS}Key").text] = int(c.find(f"{S3_NS}Size").text)
            if root.findtext(f"{S3_NS}IsTruncated") != "true":
                return out
            token = root.findtext(f"{S3_NS}NextContinuationToken")

    def download(self, bucket, prefix, dest):
        for key in self.keys(bucket, prefix):
            path = Path(dest) / key[len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            st, _, _ = self.call("GET", f"/{bucket}/{urllib.parse.quote(key)}", out=path)
            assert st == 200, key


@pytest.fixture(scope="module")
def minio(tmp_path_factory):
    m = MinIO(tmp_path_factory.mktemp("minio"))
    m.make_bucket("podsolve")
    yield m
    m.stop()


def s3_attrs(m, **extra):
    a = {"bucket": "podsolve", "region": REGION, "endpoint_url": m.url,
         "access_key_id": m.user, "secret_access_key": m.password}
    a.update(extra)
    return a


def copy_layout_into_fresh_storage(layout, ref, tmp_path):
    root, run = tmp_path / "fresh-root", tmp_path / "fresh-run"
    name = "localhost/from-s3:1"
    r = subprocess.run(["skopeo", "copy", f"oci:{layout}:{ref}", f"containers-storage:[overlay@{root}+{run}]{name}"],
                       capture_output=True, text=True, timeout=lib.scaled(300))
    assert r.returncode == 0, r.stderr
    return ["buildah", "--root", str(root), "--runroot", str(run), "--storage-driver", "overlay"], name


def run_in(buildah, name, *argv):
    ctr = subprocess.run(buildah + ["from", "--pull=never", "--quiet", name], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        out = subprocess.run(buildah + ["run", "--isolation", "chroot", ctr, "--"] + list(argv),
                             capture_output=True, text=True, timeout=lib.scaled(120))
        assert out.returncode == 0, out.stderr
        return out.stdout
    finally:
        subprocess.run(buildah + ["rm", ctr], capture_output=True)


def test_image_exported_to_s3_is_an_oci_layout_skopeo_reads(daemon, minio, tmp_path, uniq):
    prefix = f"images-{uniq}/"
    status, lines = solve(daemon, [{"type": "s3", "attrs": s3_attrs(
        minio, prefix=prefix, name=f"team/app:{uniq},team/app:latest")}],
        [f"FROM {BASE_IMAGE}", "RUN echo built > /built.txt", "COPY app.txt /app.txt"],
        extra={"app.txt": f"app {uniq}\n"})
    assert status == 200
    res = ok(lines, daemon)
    keys = minio.keys("podsolve", prefix)
    assert f"{prefix}oci-layout" in keys and f"{prefix}index.json" in keys, keys
    assert all(re.fullmatch(re.escape(prefix) + r"(oci-layout|index\.json|blobs/sha256/[0-9a-f]{64})", k)
               for k in keys), keys
    index = json.loads(minio.call("GET", f"/podsolve/{prefix}index.json")[2])
    refs = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]}
    assert refs == {f"team/app:{uniq}": res["exporterResponse"]["containerimage.digest"],
                    "team/app:latest": res["exporterResponse"]["containerimage.digest"]}, refs

    layout = tmp_path / "layout"
    minio.download("podsolve", prefix, layout)
    buildah, name = copy_layout_into_fresh_storage(layout, f"team/app:{uniq}", tmp_path)
    assert run_in(buildah, name, "cat", "/app.txt", "/built.txt") == f"app {uniq}\nbuilt\n"

    # Exported again: no blob goes up twice, and index.json keeps one entry per NAME:TAG.
    status, lines = solve(daemon, [{"type": "s3", "attrs": s3_attrs(minio, prefix=prefix, name=f"team/app:{uniq}")}],
                          [f"FROM {BASE_IMAGE}", "RUN echo built > /built.txt", "COPY app.txt /app.txt"],
                          extra={"app.txt": f"app {uniq}\n"})
    ok(lines, daemon)
    pushed = [s for l in lines for s in (l.get("status") or {}).get("statuses") or [] if s.get("id") == "pushing blobs"]
    assert pushed and pushed[-1]["current"] == 0, pushed
    index = json.loads(minio.call("GET", f"/podsolve/{prefix}index.json")[2])
    assert len(index["manifests"]) == 2


def test_podsolve_build_output_type_s3(daemon, minio, tmp_path, uniq):
    prefix = f"cli-{uniq}/"
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": lib.containerfile(
        f"FROM {BASE_IMAGE}", f"RUN echo {uniq} > /id")})
    env = daemon.env()
    env["PODSOLVE_HOST"] = f"unix://{daemon.sock}"
    spec = ",".join(f"{k}={v}" for k, v in s3_attrs(minio, prefix=prefix, name=f"cli/app:{uniq}").items())
    r = subprocess.run([str(lib.REPO_ROOT / "client" / "podsolve"), "build", "--progress", "plain",
                        "--output", f"type=s3,{spec}", str(ctx)],
                       env=env, capture_output=True, text=True, timeout=lib.scaled(240))
    assert r.returncode == 0, r.stdout + r.stderr
    assert minio.password not in r.stdout + r.stderr
    layout = tmp_path / "layout"
    minio.download("podsolve", prefix, layout)
    buildah, name = copy_layout_into_fresh_storage(layout, f"cli/app:{uniq}", tmp_path)
    assert run_in(buildah, name, "cat", "/id") == f"{uniq}\n"


def test_cache_in_s3_makes_a_fresh_daemon_reuse_every_step(daemon, minio, tmp_path, uniq):
    img = f"localhost/s3cache-{uniq}:latest"
    base = f"localhost/s3cache-base-{uniq}:latest"
    prefix = f"cache-{uniq}/"
    export = s3_attrs(minio, prefix=prefix, name=f"cache/app-{uniq}")
    # Daemon B has empty storage and takes its credentials from its environment.
    env = {"AWS_ACCESS_KEY_ID": minio.user, "AWS_SECRET_ACCESS_KEY": minio.password}
    with lib.private_daemon("podsolve-it-s3b-", start_env=env) as d2:
        lib.share_base(daemon, d2, base, d2.tmpdir)
        lines1 = _cache_solve(daemon, img, base, uniq, {"exports": [{"type": "s3", "attrs": export}]})
        ok(lines1, daemon)
        stamp1 = daemon.image_file(img, "/stamp")
        keys = minio.keys("podsolve", prefix)
        assert f"{prefix}manifests/cache/app-{uniq}/podsolve-arg-steps" in keys, keys
        assert any(k.startswith(f"{prefix}blobs/sha256:") for k in keys), keys
        steps_written = [k for k in keys if re.fullmatch(re.escape(f"{prefix}manifests/cache/app-{uniq}/") + r"[0-9a-f]{64}", k)]
        assert len(steps_written) >= 3, keys

        assert not d2.image_exists(img)
        imp = {k: v for k, v in export.items() if k not in ("access_key_id", "secret_access_key")}
        lines2 = _cache_solve(d2, img, base, uniq, {"imports": [{"type": "s3", "attrs": imp}]})
        ok(lines2, d2)
        steps = cached_steps(lines2)
        assert steps and all(c for n, c in steps.items() if "FROM" not in n), list(steps.items())
        assert d2.image_file(img, "/stamp") == stamp1
        assert d2.image_id(img) == daemon.image_id(img)
        assert minio.password not in Path(d2.log_path).read_text(errors="replace")


def warnings_text(lines):
    warnings = [w for l in lines for w in (l.get("status") or {}).get("warnings") or []]
    return " ".join(base64.b64decode(w.get("short") or "").decode() for w in warnings)


def test_s3_down_is_an_export_error_and_a_cache_import_warning(daemon, minio, uniq):
    gone = f"http://127.0.0.1:{lib.free_port()}"
    status, lines = solve(daemon, [{"type": "s3", "attrs": s3_attrs(minio, endpoint_url=gone, name="x:1")}],
                          ["FROM scratch", "COPY f /f"], extra={"f": "x\n"})
    msg = error_of(lines)
    assert "s3 bucket podsolve" in msg and "127.0.0.1" in msg, msg
    img = f"localhost/s3-down-{uniq}:latest"
    lines = _cache_solve(daemon, img, BASE_IMAGE, uniq,
                         {"imports": [{"type": "s3", "attrs": s3_attrs(minio, endpoint_url=gone, name="c")}]})
    ok(lines, daemon)
    text = warnings_text(lines)
    assert "cache import from s3://podsolve/" in text and "building without it" in text, text
    lib.assert_daemon_builds(daemon)


class FailOnePut(http.server.BaseHTTPRequestHandler):
    """A loopback proxy in front of the real MinIO: every request goes
    through unchanged (the Host header too, so SigV4 still verifies),
    except the `fail_at`-th PUT of a blob, answered 500 InternalError as S3
    answers it.  Records what it forwarded."""

    protocol_version = "HTTP/1.1"
    upstream = None       # MinIO's "127.0.0.1:PORT"
    fail_at = 2
    lock = threading.Lock()
    blob_puts = []        # (key, status) of every blob PUT, in order
    index_puts = 0

    def log_message(self, *a):
        pass

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        cls = type(self)
        is_blob_put = self.command == "PUT" and "/blobs/sha256/" in self.path and "uploadId" not in self.path
        with cls.lock:
            if self.command == "PUT" and self.path.split("?")[0].endswith("/index.json"):
                cls.index_puts += 1
            fail = is_blob_put and sum(1 for _ in cls.blob_puts) + 1 == cls.fail_at
            if is_blob_put:
                cls.blob_puts.append((self.path, 500 if fail else None))
        if fail:
            msg = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>'
                   b'We encountered an internal error, please try again.</Message></Error>')
            self.send_response(500)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        conn = http.client.HTTPConnection(cls.upstream, timeout=lib.scaled(60))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "connection")}
        conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None,
                     headers=headers)
        r = conn.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward


def test_s3_export_failing_half_way_keeps_the_previous_index_and_tag(daemon, minio, uniq):
    """The same NAME:TAG exported twice to one prefix; the second time S3
    fails one blob PUT after another blob went up (a loopback proxy in front
    of the real MinIO answers 500 InternalError): the solve fails naming the
    key and S3's error, index.json is byte for byte what the first export
    wrote (the tag still names the first image), and the daemon builds on."""
    prefix = f"half-{uniq}/"
    attrs = s3_attrs(minio, prefix=prefix, name="team/half:1")
    status, lines = solve(daemon, [{"type": "s3", "attrs": attrs}], ["FROM scratch", "COPY f /f", "COPY g /g"],
                          extra={"f": f"first {uniq}\n", "g": f"g first {uniq}\n"})
    first = ok(lines, daemon)["exporterResponse"]["containerimage.digest"]
    st, _, index_before = minio.call("GET", f"/podsolve/{prefix}index.json")
    assert st == 200
    blobs_before = {k for k in minio.keys("podsolve", prefix) if "/blobs/" in k}

    FailOnePut.upstream = minio.url.split("://", 1)[1]
    FailOnePut.blob_puts, FailOnePut.index_puts, FailOnePut.fail_at = [], 0, 2
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FailOnePut)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        proxied = dict(attrs, endpoint_url=f"http://127.0.0.1:{srv.server_address[1]}")
        status, lines = solve(daemon, [{"type": "s3", "attrs": proxied}], ["FROM scratch", "COPY f /f", "COPY g /g"],
                              extra={"f": f"second {uniq}\n", "g": f"g second {uniq}\n"})
    finally:
        srv.shutdown()
    msg = error_of(lines)
    failed = [k for k, st in FailOnePut.blob_puts if st == 500]
    assert len(failed) == 1, FailOnePut.blob_puts
    assert "s3 bucket podsolve" in msg and "500" in msg and "InternalError" in msg, msg
    assert urllib.parse.unquote(failed[0]).split("/podsolve/", 1)[1] in urllib.parse.unquote(msg), (msg, failed)
    # Half-way: a blob of the second image went up before the failure ...
    went_up = {k for k in minio.keys("podsolve", prefix) if "/blobs/" in k} - blobs_before
    assert went_up, FailOnePut.blob_puts
    # ... and the tag was never touched.
    assert FailOnePut.index_puts == 0
    st, _, index_after = minio.call("GET", f"/podsolve/{prefix}index.json")
    assert st == 200 and index_after == index_before
    index = json.loads(index_after)
    refs = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]}
    assert refs == {"team/half:1": first}, refs
    lib.assert_daemon_builds(daemon)


def test_wrong_credentials_name_the_bucket_and_no_secret_is_ever_shown(daemon, minio, uniq):
    wrong = "wrong-" + os.urandom(8).hex()
    prefix = f"creds-{uniq}/"
    status, lines_bad = solve(daemon, [{"type": "s3", "attrs": s3_attrs(
        minio, prefix=prefix, secret_access_key=wrong, name="x:1")}], ["FROM scratch", "COPY f /f"],
        extra={"f": "x\n"})
    msg = error_of(lines_bad)
    assert "s3 bucket podsolve" in msg and "403" in msg and "SignatureDoesNotMatch" in msg, msg
    assert not minio.keys("podsolve", prefix), "nothing is written with wrong credentials"
    status, lines = solve(daemon, [{"type": "s3", "attrs": s3_attrs(minio, prefix=prefix, name="x:1")}],
                          ["FROM scratch", "COPY f /f"], extra={"f": "x\n"})
    ok(lines, daemon)
    everything = json.dumps(lines) + json.dumps(lines_bad)
    log = Path(daemon.log_path).read_text(errors="replace")
    for secret in (wrong, minio.password):
        assert secret not in everything
        assert secret not in log
        r = subprocess.run(["grep", "-rl", "--binary-files=text", secret, str(daemon.state)], capture_output=True,
                           text=True)
        assert r.stdout == "", f"secret found in state: {r.stdout}"


def test_bad_s3_attrs_are_refused_before_the_build(daemon):
    for typ, attrs, want in (("s3", {"name": "x:1"}, "attrs.bucket"),
                             ("s3", {"bucket": "b"}, "attrs.name"),
                             ("s3", {"bucket": "b", "name": "x", "blobs_prefix": "b/"}, "unknown attr \\\"blobs_prefix"),
                             ("s3", {"bucket": "b", "name": "x", "upload_parallelism": "0"}, "upload_parallelism"),
                             ("s3", {"bucket": "b", "name": "x", "colour": "red"}, "unknown attr")):
        body, ctype = lib.multipart({"request": json.dumps({
            "frontend": "dockerfile.v0", "exporters": [{"type": typ, "attrs": attrs}]}).encode()},
            {"context": lib.tar_context({"Dockerfile": "FROM scratch\n"})})
        status, _, data = daemon.request("POST", "/solve", body, {"Content-Type": ctype})
        text = data.decode()
        assert status == 400 and want in text, (attrs, status, text)


def test_a_100_mib_layer_goes_up_in_a_multipart_upload(daemon, minio, uniq):
    prefix = f"big-{uniq}/"
    big = os.urandom(100 << 20)
    status, lines = solve(daemon, [{"type": "s3", "attrs": s3_attrs(minio, prefix=prefix, name="big:1")}],
                          ["FROM scratch", "COPY big.bin /big.bin"], extra={"big.bin": big})
    ok(lines, daemon)
    index = json.loads(minio.call("GET", f"/podsolve/{prefix}index.json")[2])
    man_digest = index["manifests"][0]["digest"]
    man = json.loads(minio.call("GET", f"/podsolve/{prefix}blobs/sha256/{man_digest[7:]}")[2])
    layer = man["layers"][0]
    assert layer["size"] > (64 << 20)
    st, hdrs, _ = minio.call("HEAD", f"/podsolve/{prefix}blobs/sha256/{layer['digest'][7:]}")
    # S3's ETag of an object assembled from N parts ends in "-N".
    assert st == 200 and int(hdrs["content-length"]) == layer["size"]
    assert re.search(r"-\d+\"?$", hdrs["etag"]), hdrs
    log = Path(daemon.log_path).read_text(errors="replace")
    assert f"multipart upload of {prefix}blobs/sha256/{layer['digest'][7:]}" in log


def test_touch_refresh_copies_old_blobs_onto_themselves(daemon, minio, uniq):
    """As BuildKit's touch_refresh: an export that finds a blob already there
    and older than touch_refresh refreshes its Last-Modified, so a lifecycle
    rule expiring by age keeps what builds still use."""
    prefix = f"touch-{uniq}/"
    lines = ["FROM scratch", "COPY f /f"]
    status, out = solve(daemon, [{"type": "s3", "attrs": s3_attrs(minio, prefix=prefix, name="t:1")}], lines,
                        extra={"f": f"{uniq}\n"})
    ok(out, daemon)
    blobs = sorted(k for k in minio.keys("podsolve", prefix) if "/blobs/" in k)
    before = {k: minio.call("HEAD", f"/podsolve/{k}")[1]["last-modified"] for k in blobs}
    time.sleep(2.2)
    status, out = solve(daemon, [{"type": "s3", "attrs": s3_attrs(minio, prefix=prefix, name="t:1",
                                                                   touch_refresh="1s")}], lines,
                        extra={"f": f"{uniq}\n"})
    ok(out, daemon)
    after = {k: minio.call("HEAD", f"/podsolve/{k}")[1]["last-modified"] for k in blobs}
    # the layer and the config touched; the manifest is written again anyway
    assert len(blobs) == 3 and all(before[k] != after[k] for k in blobs), (before, after)
    assert "touched" in Path(daemon.log_path).read_text(errors="replace")


def test_buildx_output_and_cache_to_type_s3(daemon, go_clients, minio, tmp_path, uniq):
    """`docker buildx build --output type=s3,... --cache-to type=s3,...`:
    buildx sends both as BuildKit does, over /grpc's Control.Solve."""
    prefix = f"buildx-{uniq}/"
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": lib.containerfile(
        f"FROM {BASE_IMAGE}", f"RUN echo {uniq} > /id")})
    common = ",".join(f"{k}={v}" for k, v in s3_attrs(minio).items())
    r = lib.run([go_clients.docker, "buildx", "build", "--progress", "plain",
                 "--output", f"type=s3,{common},prefix={prefix}img/,name=buildx/app:{uniq}",
                 "--cache-to", f"type=s3,{common},prefix={prefix}cache/,name=app", "."],
                go_clients.env(daemon), cwd=ctx, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    keys = minio.keys("podsolve", prefix)
    assert f"{prefix}img/index.json" in keys, keys
    assert any(k.startswith(f"{prefix}cache/manifests/app/") for k in keys), (keys, r.stderr[-2000:])
    assert any(k.startswith(f"{prefix}cache/blobs/sha256:") for k in keys), keys
    assert minio.password not in r.stdout + r.stderr
    layout = tmp_path / "layout"
    minio.download("podsolve", f"{prefix}img/", layout)
    buildah, name = copy_layout_into_fresh_storage(layout, f"buildx/app:{uniq}", tmp_path)
    assert run_in(buildah, name, "cat", "/id") == f"{uniq}\n"
