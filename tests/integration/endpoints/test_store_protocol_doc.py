"""The store protocol's documentation stays true (api-docs/store-protocol.md):
every ```sh example runs, in order, with bash against the reference adapter
(examples/store-adapter/store_adapter.py) on a unix socket, and what the
narrative promises holds: the capabilities answer, digests are checked,
a manifest naming a missing blob is refused, If-Match is a compare and
swap, a resumable upload refuses a chunk at the wrong offset, and
store_gc.py keeps what tags reach and deletes the rest.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import time

import pytest

import podsolve_testlib as lib

DOC = lib.REPO_ROOT / "api-docs" / "store-protocol.md"
GC = lib.REPO_ROOT / "examples" / "store-adapter" / "store_gc.py"


def call(store, method, path, body=None, headers=None):
    status, hdrs, data = store.call(method, path, body, headers)
    return Response(status, hdrs), data


class Response:
    def __init__(self, status, headers):
        self.status, self.headers = status, headers

    def getheader(self, name):
        return self.headers.get(name)


@pytest.fixture
def store(tmp_path):
    s = lib.StoreAdapter(tmp_path)
    yield s
    s.stop()


def test_every_example_of_the_document_runs(store, tmp_path):
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 5
    script = "set -euo pipefail\n" + "\n".join(f"echo '### block {i}'\n{b}" for i, b in enumerate(blocks))
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=lib.scaled(60),
                       env=dict(os.environ, STORE_SOCK=str(store.sock)))
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    out = r.stdout
    caps = json.loads(out.split("### block 0\n")[1].split("### block 1")[0])
    assert caps["protocol"] == "podsolve-store" and caps["version"] == 1
    blobs = out.split("### block 1\n")[1].split("### block 2")[0]
    assert blobs.startswith("201\n") and "Content-Length: 12" in blobs and "hello store\nhello" in blobs
    manifests = out.split("### block 3\n")[1].split("### block 4")[0]
    assert "201 Created" in manifests and '"tags": ["1.0"]' in manifests
    assert '"names": ["demo/app"]' in out


def test_digests_references_and_compare_and_swap(store):
    body = b"layer bytes\n"
    d = "sha256:" + hashlib.sha256(body).hexdigest()
    wrong = "sha256:" + "0" * 64
    r, data = call(store, "PUT", f"/v1/blobs/{wrong}", body)
    assert r.status == 400 and json.loads(data)["error"] == "digest_mismatch"
    assert call(store, "HEAD", f"/v1/blobs/{wrong}")[0].status == 404
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d,
                                 "size": len(body)}, "layers": []}).encode()
    mt = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    r, data = call(store, "PUT", "/v1/names/a/manifests/t", man, mt)
    assert r.status == 400 and json.loads(data)["error"] == "missing_blob", data
    assert call(store, "GET", "/v1/names/a/manifests/t")[0].status == 404
    assert call(store, "PUT", f"/v1/blobs/{d}", body)[0].status == 201
    assert call(store, "PUT", f"/v1/blobs/{d}", body)[0].status == 200
    r, _ = call(store, "PUT", "/v1/names/a/manifests/t", man, dict(mt, **{"If-None-Match": "*"}))
    assert r.status == 201
    first = r.getheader("Store-Content-Digest")
    r, _ = call(store, "PUT", "/v1/names/a/manifests/t", man, dict(mt, **{"If-None-Match": "*"}))
    assert r.status == 412
    man2 = man.replace(b'"layers": []', b'"layers": [], "annotations": {"v": "2"}')
    r, _ = call(store, "PUT", "/v1/names/a/manifests/t", man2, dict(mt, **{"If-Match": '"sha256:' + "1" * 64 + '"'}))
    assert r.status == 412
    r, _ = call(store, "PUT", "/v1/names/a/manifests/t", man2, dict(mt, **{"If-Match": f'"{first}"'}))
    assert r.status == 201
    r, data = call(store, "GET", "/v1/names/a/manifests/t")
    assert data == man2 and r.getheader("Content-Type") == mt["Content-Type"]
    # the first version is still there by digest
    assert call(store, "GET", f"/v1/names/a/manifests/{first}")[1] == man


def test_resumable_upload_refuses_a_chunk_at_the_wrong_offset(store):
    r, _ = call(store, "POST", "/v1/uploads")
    loc = r.getheader("Location")
    assert call(store, "PATCH", loc, b"abc", {"Content-Range": "bytes 0-2/*"})[0].status == 202
    r, _ = call(store, "PATCH", loc, b"xyz", {"Content-Range": "bytes 5-7/*"})
    assert r.status == 416 and r.getheader("Range") == "bytes=0-2"
    d = "sha256:" + hashlib.sha256(b"abcdef").hexdigest()
    assert call(store, "PUT", f"{loc}?digest={d}", b"def")[0].status == 201
    assert call(store, "GET", f"/v1/blobs/{d}")[1] == b"abcdef"


def test_gc_keeps_what_tags_reach(store, tmp_path):
    kept, dropped = b"kept\n", b"dropped\n"
    dk = "sha256:" + hashlib.sha256(kept).hexdigest()
    dd = "sha256:" + hashlib.sha256(dropped).hexdigest()
    call(store, "PUT", f"/v1/blobs/{dk}", kept)
    call(store, "PUT", f"/v1/blobs/{dd}", dropped)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dk,
                                 "size": len(kept)}, "layers": []}).encode()
    assert call(store, "PUT", "/v1/names/keep/me/manifests/1", man,
                {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})[0].status == 201
    # age both blobs past the grace period
    old = time.time() - 7200
    for d in (dk, dd):
        p = tmp_path / "root" / "blobs" / "sha256" / d[7:]
        os.utime(p, (old, old))
    r = subprocess.run([sys.executable, str(GC), "--store", store.endpoint, "--grace", "1h"],
                       capture_output=True, text=True, timeout=lib.scaled(60))
    assert r.returncode == 0, r.stderr
    assert f"delete {dd}" in r.stdout and dk not in r.stdout, r.stdout
    assert call(store, "HEAD", f"/v1/blobs/{dd}")[0].status == 404
    assert call(store, "HEAD", f"/v1/blobs/{dk}")[0].status == 200
