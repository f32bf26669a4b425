#!/usr/bin/python3
"""store_pull.py — copy NAME:TAG out of any podsolve store into an OCI image
layout directory, checking every digest, so standard tools take it from
there:

    store_pull.py --store unix:///run/podsolve-store.sock team/app:1 /tmp/app-layout
    skopeo copy oci:/tmp/app-layout containers-storage:localhost/app:1
"""

import argparse
import hashlib
import json
import os
import sys

from store_gc import Client


def fetch(st, path):
    r, body = st.call("GET", path)
    return r, body


def save_blob(st, layout, digest):
    dest = os.path.join(layout, "blobs", "sha256", digest[7:])
    if os.path.exists(dest):
        return
    r, body = fetch(st, f"/v1/blobs/{digest}")
    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        sys.exit(f"store_pull: blob {digest}: the bytes do not match the digest")
    with open(dest + ".tmp", "wb") as f:
        f.write(body)
    os.rename(dest + ".tmp", dest)


def save_manifest(st, layout, name, ref):
    r, body = fetch(st, f"/v1/names/{name}/manifests/{ref}")
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if r.getheader("Store-Content-Digest") not in (None, digest) or (ref.startswith("sha256:") and ref != digest):
        sys.exit(f"store_pull: manifest {name}:{ref}: the bytes do not match the digest")
    doc = json.loads(body)
    for d in doc.get("manifests") or []:
        save_manifest(st, layout, name, d["digest"])
    for d in [doc.get("config")] + list(doc.get("layers") or []):
        if d:
            save_blob(st, layout, d["digest"])
    with open(os.path.join(layout, "blobs", "sha256", digest[7:]), "wb") as f:
        f.write(body)
    return {"mediaType": r.getheader("Content-Type"), "digest": digest, "size": len(body)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--token")
    ap.add_argument("ref", help="NAME[:TAG]")
    ap.add_argument("layout", help="the OCI layout directory to write")
    a = ap.parse_args()
    name, _, tag = a.ref.partition(":")
    st = Client(a.store, a.token)
    os.makedirs(os.path.join(a.layout, "blobs", "sha256"), exist_ok=True)
    top = save_manifest(st, a.layout, name, tag or "latest")
    top["annotations"] = {"org.opencontainers.image.ref.name": tag or "latest"}
    with open(os.path.join(a.layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(a.layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [top]}, f)
    print(f"{a.ref} -> {a.layout} ({top['digest']})")


if __name__ == "__main__":
    main()
