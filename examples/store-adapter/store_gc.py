#!/usr/bin/python3
"""store_gc.py — garbage collection for any podsolve store, over the protocol
(api-docs/store-protocol.md): mark what the kept tags reach, delete the
rest that nobody read or wrote for --grace.

    store_gc.py --store unix:///run/podsolve-store.sock [--grace 24h] [--dry-run]

Tags are roots: every tag of every name is kept (delete a tag first to let
its image go; a build cache's steps are tags too).  A manifest reaches its
config, its layers and the manifests of an index.  --grace must
be longer than a build: a blob written a moment before its manifest is
never collected.
"""

import argparse
import calendar
import http.client
import json
import re
import socket
import sys
import time
import urllib.parse


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("store")
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


class Client:
    def __init__(self, endpoint, token=None):
        u = urllib.parse.urlsplit(endpoint)
        self.unix = u.path if u.scheme == "unix" else None
        self.netloc, self.scheme, self.base = u.netloc, u.scheme, "" if self.unix else u.path.rstrip("/")
        self.token = token

    def call(self, method, path, ok=(200,)):
        if self.unix:
            c = UnixHTTPConnection(self.unix)
        elif self.scheme == "https":
            c = http.client.HTTPSConnection(self.netloc)
        else:
            c = http.client.HTTPConnection(self.netloc)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        c.request(method, self.base + path, headers=headers)
        r = c.getresponse()
        body = r.read()
        c.close()
        if r.status not in ok:
            raise SystemExit(f"store_gc: {method} {path}: {r.status} {body[:300]!r}")
        return r, body


def duration(s):
    m = re.fullmatch(r"(\d+)([smhd])", s)
    if not m:
        raise argparse.ArgumentTypeError("a duration such as 90m, 24h, 7d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--token")
    ap.add_argument("--grace", type=duration, default=duration("24h"))
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    st = Client(a.store, a.token)
    _, caps = st.call("GET", "/v1/")
    if json.loads(caps).get("version") != 1 or "delete" not in json.loads(caps).get("features", []):
        sys.exit("store_gc: the store does not speak v1 with delete")

    keep_blobs, keep_manifests = set(), set()  # (name, digest) for manifests
    names = json.loads(st.call("GET", "/v1/names")[1])["names"]

    def mark(name, ref):
        r, body = st.call("GET", f"/v1/names/{name}/manifests/{ref}", ok=(200, 404))
        if r.status == 404:
            return
        digest = r.getheader("Store-Content-Digest")
        if (name, digest) in keep_manifests:
            return
        keep_manifests.add((name, digest))
        doc = json.loads(body)
        for d in [doc.get("config")] + list(doc.get("layers") or []):
            if d:
                keep_blobs.add(d["digest"])
        for d in doc.get("manifests") or []:
            mark(name, d["digest"])

    for name in names:
        for tag in json.loads(st.call("GET", f"/v1/names/{name}/tags")[1])["tags"]:
            mark(name, tag)

    now, after, freed, n = time.time(), "", 0, 0
    while True:
        page = json.loads(st.call("GET", f"/v1/blobs?limit=1000&after={after}")[1])
        for b in page["blobs"]:
            accessed = calendar.timegm(time.strptime(b["accessed"], "%Y-%m-%dT%H:%M:%SZ"))
            if b["digest"] in keep_blobs or now - accessed < a.grace:
                continue
            print(("would delete " if a.dry_run else "delete ") + f"{b['digest']} ({b['size']} bytes)")
            if not a.dry_run:
                st.call("DELETE", f"/v1/blobs/{b['digest']}", ok=(204, 404))
            freed += b["size"]
            n += 1
        if not page.get("next"):
            break
        after = page["next"]
    print(f"store_gc: {len(keep_manifests)} manifests and {len(keep_blobs)} blobs kept; "
          f"{n} blobs, {freed} bytes {'to free' if a.dry_run else 'freed'}")


if __name__ == "__main__":
    main()
