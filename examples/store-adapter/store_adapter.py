#!/usr/bin/python3
"""store_adapter.py — the podsolve store protocol v1 (api-docs/store-protocol.md)
on top of a directory, with nothing but Python's standard library.

    store_adapter.py --root /srv/store --listen unix:///run/podsolve-store.sock
    store_adapter.py --root /srv/store --listen tcp://0.0.0.0:8443 \
        --tls-cert cert.pem --tls-key key.pem [--tls-client-ca ca.pem] [--token-file F]

The directory can be local disk or a shared mount (NFS, CephFS): every
write goes to a temporary file first and is renamed into place, and tags
change under an flock, so several adapters on several hosts may share one
directory.  Layout:

    blobs/sha256/<hex>                      the bytes
    uploads/<id>                            resumable uploads in progress
    names/<name>/manifests/sha256/<hex>     a manifest; <hex>.type its media type
    names/<name>/tags/<tag>                 the digest the tag points at
"""

import argparse
import fcntl
import hashlib
import http.server
import json
import os
import re
import secrets
import socket
import socketserver
import ssl
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime, timezone

VERSION = 1
CHUNK = 8 << 20
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
NAME = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
MEDIA_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


class StoreError(Exception):
    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


class Store:
    """The directory.  Every method raises StoreError for the client's mistakes."""

    def __init__(self, root):
        self.root = root
        for d in ("blobs/sha256", "uploads", "names", "tmp"):
            os.makedirs(os.path.join(root, d), exist_ok=True)

    # ---- helpers ------------------------------------------------------------

    def _write(self, path, data_or_file, want_digest=None):
        """Write atomically; with want_digest, only bytes that hash to it."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.join(self.root, "tmp"))
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                chunks = [data_or_file] if isinstance(data_or_file, bytes) else data_or_file
                for chunk in chunks:
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            got = "sha256:" + h.hexdigest()
            if want_digest and got != want_digest:
                raise StoreError(400, "digest_mismatch", f"the bytes hash to {got}, not {want_digest}")
            os.rename(tmp, path)
            return got
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def blob_path(self, digest):
        if not DIGEST.match(digest):
            raise StoreError(400, "bad_request", f"not a sha256 digest: {digest!r}")
        return os.path.join(self.root, "blobs", "sha256", digest[7:])

    def name_dir(self, name):
        if not NAME.match(name) or len(name) > 255 or ".." in name:
            raise StoreError(400, "bad_request", f"not a store name: {name!r}")
        return os.path.join(self.root, "names", name)

    # ---- blobs --------------------------------------------------------------

    def blob_stat(self, digest):
        p = self.blob_path(digest)
        if not os.path.exists(p):
            raise StoreError(404, "not_found", f"blob {digest} not found")
        return p, os.path.getsize(p)

    def blob_touch(self, digest):
        os.utime(self.blob_path(digest))

    def blob_put(self, digest, chunks):
        p = self.blob_path(digest)
        existed = os.path.exists(p)
        if existed:  # read the body anyway (keep-alive), keep the old file
            for _ in chunks:
                pass
            self.blob_touch(digest)
            return False
        self._write(p, chunks, want_digest=digest)
        return True

    def blobs(self, after, limit):
        names = sorted(n for n in os.listdir(os.path.join(self.root, "blobs", "sha256")) if n > after)
        page = names[:limit]
        out = []
        for n in page:
            st = os.stat(os.path.join(self.root, "blobs", "sha256", n))
            out.append({"digest": "sha256:" + n, "size": st.st_size,
                        "accessed": rfc3339(max(st.st_mtime, st.st_atime))})
        return {"blobs": out, "next": page[-1] if len(names) > limit else None}

    # ---- uploads ------------------------------------------------------------

    def upload_path(self, uid):
        if not re.match(r"^[0-9a-f]{32}$", uid):
            raise StoreError(404, "not_found", f"no upload {uid}")
        p = os.path.join(self.root, "uploads", uid)
        if not os.path.exists(p):
            raise StoreError(404, "not_found", f"no upload {uid}")
        return p

    def upload_start(self):
        uid = secrets.token_hex(16)
        open(os.path.join(self.root, "uploads", uid), "wb").close()
        return uid

    def upload_append(self, uid, start, chunks):
        p = self.upload_path(uid)
        with open(p, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            size = f.seek(0, os.SEEK_END)
            if start != size:
                raise StoreError(416, "bad_request", f"the upload has {size} bytes; a chunk must start there",
                                 {"Range": f"bytes=0-{size - 1}" if size else "bytes=0--1"})
            for chunk in chunks:
                f.write(chunk)
            return f.tell()

    def upload_finish(self, uid, digest):
        p = self.upload_path(uid)

        def read():
            with open(p, "rb") as f:
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        return
                    yield b
        dest = self.blob_path(digest)
        try:
            if not os.path.exists(dest):
                self._write(dest, read(), want_digest=digest)
        finally:
            os.unlink(p)

    # ---- manifests and tags -------------------------------------------------

    def _manifest_file(self, name, digest):
        return os.path.join(self.name_dir(name), "manifests", "sha256", digest[7:])

    def resolve(self, name, ref):
        """A reference (tag or digest) -> digest."""
        if DIGEST.match(ref):
            if not os.path.exists(self._manifest_file(name, ref)):
                raise StoreError(404, "not_found", f"manifest {name}@{ref} not found")
            return ref
        if not TAG.match(ref):
            raise StoreError(400, "bad_request", f"not a tag: {ref!r}")
        try:
            with open(os.path.join(self.name_dir(name), "tags", ref)) as f:
                return f.read().strip()
        except FileNotFoundError:
            raise StoreError(404, "not_found", f"{name}:{ref} not found") from None

    def manifest_get(self, name, ref):
        digest = self.resolve(name, ref)
        p = self._manifest_file(name, digest)
        with open(p, "rb") as f:
            body = f.read()
        with open(p + ".type") as f:
            mtype = f.read().strip()
        return digest, mtype, body

    def _check_refs(self, name, mtype, body):
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise StoreError(400, "bad_request", f"the manifest is not JSON: {e}") from None
        if doc.get("mediaType") and doc["mediaType"] != mtype:
            raise StoreError(400, "bad_request", f"Content-Type {mtype} but the manifest says {doc['mediaType']}")
        blobs = [d for d in [doc.get("config")] + list(doc.get("layers") or []) if d]
        for d in blobs:
            if not os.path.exists(self.blob_path(d.get("digest", ""))):
                raise StoreError(400, "missing_blob", f"blob {d.get('digest')} is not in the store")
        for d in doc.get("manifests") or []:
            if not os.path.exists(self._manifest_file(name, d.get("digest", ""))):
                raise StoreError(400, "missing_blob", f"manifest {name}@{d.get('digest')} is not in the store")

    def manifest_put(self, name, ref, mtype, body, if_match=None, if_none_match=None):
        if mtype not in MEDIA_TYPES:
            raise StoreError(415, "unsupported", f"media type {mtype!r} is not stored here")
        self._check_refs(name, mtype, body)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if DIGEST.match(ref) and ref != digest:
            raise StoreError(400, "digest_mismatch", f"the manifest hashes to {digest}, not {ref}")
        p = self._manifest_file(name, digest)
        if not os.path.exists(p):
            self._write(p + ".type", mtype.encode())
            self._write(p, body)
        if DIGEST.match(ref):
            return digest
        tags = os.path.join(self.name_dir(name), "tags")
        os.makedirs(tags, exist_ok=True)
        with open(os.path.join(self.name_dir(name), ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(os.path.join(tags, ref)) as f:
                    current = f.read().strip()
            except FileNotFoundError:
                current = None
            if if_none_match == "*" and current is not None:
                raise StoreError(412, "conflict", f"{name}:{ref} exists (at {current})")
            if if_match is not None and if_match.strip('"') != current:
                raise StoreError(412, "conflict", f"{name}:{ref} is at {current}, not {if_match}")
            self._write(os.path.join(tags, ref), digest.encode())
        return digest

    def tags(self, name):
        d = os.path.join(self.name_dir(name), "tags")
        if not os.path.isdir(d):
            raise StoreError(404, "not_found", f"no name {name}")
        return {"name": name, "tags": sorted(os.listdir(d))}

    def names(self):
        top = os.path.join(self.root, "names")
        out = []
        for dirpath, dirnames, _ in os.walk(top):
            if "tags" in dirnames or "manifests" in dirnames:
                out.append(os.path.relpath(dirpath, top))
                dirnames[:] = [d for d in dirnames if d not in ("tags", "manifests")]
        return {"names": sorted(out)}

    def manifest_delete(self, name, ref):
        if DIGEST.match(ref):
            p = self._manifest_file(name, self.resolve(name, ref))
            os.unlink(p)
            os.unlink(p + ".type")
        else:
            self.resolve(name, ref)
            os.unlink(os.path.join(self.name_dir(name), "tags", ref))


def rfc3339(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store = None
    token = None

    def log_message(self, fmt, *args):
        sys.stderr.write("store: " + (fmt % args) + "\n")

    # ---- plumbing -------------------------------------------------------------

    def _body_chunks(self):
        """The request body, streamed (Content-Length or chunked)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return
                left = size
                while left:
                    b = self.rfile.read(min(left, 1 << 20))
                    if not b:
                        raise StoreError(400, "bad_request", "the body ended early")
                    left -= len(b)
                    yield b
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left:
            b = self.rfile.read(min(left, 1 << 20))
            if not b:
                raise StoreError(400, "bad_request", "the body ended early")
            left -= len(b)
            yield b

    def _send(self, status, body=b"", ctype="application/json", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body or status not in (204, 304):
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, doc, headers=None):
        self._send(status, json.dumps(doc).encode() + b"\n", headers=headers)

    def _route(self):
        u = urllib.parse.urlsplit(self.path)
        return u.path, dict(urllib.parse.parse_qsl(u.query))

    def _dispatch(self):
        try:
            if self.token and self.headers.get("Authorization") != f"Bearer {self.token}":
                raise StoreError(401, "unauthorized", "a bearer token is needed")
            path, query = self._route()
            getattr(self, "do_" + self.command + "_", self._unknown)(path, query)
        except StoreError as e:
            if self.command in ("PUT", "PATCH", "POST"):
                self.close_connection = True  # the body may be unread
            self._json(e.status, {"error": e.code, "message": str(e)}, headers=e.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _dispatch

    def _unknown(self, path, query):
        raise StoreError(405, "unsupported", f"{self.command} {path} is not part of the protocol")

    # ---- the protocol ---------------------------------------------------------

    def do_GET_(self, path, query):
        if path == "/v1/":
            return self._json(200, {"protocol": "podsolve-store", "version": VERSION,
                                    "features": ["resumable-uploads", "list", "delete", "if-match"],
                                    "max_blob_bytes": 0, "upload_chunk_bytes": CHUNK})
        m = re.match(r"^/v1/blobs/(.+)$", path)
        if m:
            return self._get_blob(m.group(1))
        if path == "/v1/blobs":
            return self._json(200, self.store.blobs(query.get("after", ""), int(query.get("limit", 1000))))
        if path == "/v1/names":
            return self._json(200, self.store.names())
        m = re.match(r"^/v1/names/(.+)/manifests/([^/]+)$", path)
        if m:
            digest, mtype, body = self.store.manifest_get(m.group(1), m.group(2))
            return self._send(200, body, mtype, {"Store-Content-Digest": digest, "ETag": f'"{digest}"'})
        m = re.match(r"^/v1/names/(.+)/tags$", path)
        if m:
            return self._json(200, self.store.tags(m.group(1)))
        m = re.match(r"^/v1/uploads/([^/]+)$", path)
        if m:
            size = os.path.getsize(self.store.upload_path(m.group(1)))
            return self._send(204, headers={"Range": f"bytes=0-{size - 1}", "Upload-Offset": str(size)})
        raise StoreError(404, "not_found", f"no such path {path}")

    do_HEAD_ = do_GET_

    def _get_blob(self, digest):
        p, size = self.store.blob_stat(digest)
        self.store.blob_touch(digest)
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        status = 200
        if rng:
            m = re.match(r"^bytes=(\d+)-(\d*)$", rng)
            if not m or int(m.group(1)) >= size:
                raise StoreError(416, "bad_request", f"range {rng!r} not satisfiable (size {size})",
                                 {"Content-Range": f"bytes */{size}"})
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Store-Content-Digest", digest)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(p, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left:
                b = f.read(min(left, 1 << 20))
                if not b:
                    break
                self.wfile.write(b)
                left -= len(b)

    def do_PUT_(self, path, query):
        m = re.match(r"^/v1/blobs/(.+)$", path)
        if m:
            created = self.store.blob_put(m.group(1), self._body_chunks())
            return self._send(201 if created else 200, headers={"Store-Content-Digest": m.group(1)})
        m = re.match(r"^/v1/names/(.+)/manifests/([^/]+)$", path)
        if m:
            body = b"".join(self._body_chunks())
            if len(body) > (4 << 20):
                raise StoreError(413, "too_large", "a manifest is at most 4 MiB")
            mtype = self.headers.get("Content-Type", "").split(";")[0].strip()
            digest = self.store.manifest_put(m.group(1), m.group(2), mtype, body,
                                             self.headers.get("If-Match"), self.headers.get("If-None-Match"))
            return self._send(201, headers={"Store-Content-Digest": digest,
                                            "Location": f"/v1/names/{m.group(1)}/manifests/{digest}"})
        m = re.match(r"^/v1/uploads/([^/]+)$", path)
        if m:
            digest = query.get("digest", "")
            tail = b"".join(self._body_chunks())
            if tail:
                size = os.path.getsize(self.store.upload_path(m.group(1)))
                self.store.upload_append(m.group(1), size, [tail])
            self.store.upload_finish(m.group(1), digest)
            return self._send(201, headers={"Location": f"/v1/blobs/{digest}", "Store-Content-Digest": digest})
        raise StoreError(404, "not_found", f"no such path {path}")

    def do_POST_(self, path, query):
        if path == "/v1/uploads":
            uid = self.store.upload_start()
            return self._send(202, headers={"Location": f"/v1/uploads/{uid}", "Upload-Offset": "0"})
        raise StoreError(404, "not_found", f"no such path {path}")

    def do_PATCH_(self, path, query):
        m = re.match(r"^/v1/uploads/([^/]+)$", path)
        if not m:
            raise StoreError(404, "not_found", f"no such path {path}")
        cr = re.match(r"^bytes (\d+)-(\d+)/(\*|\d+)$", self.headers.get("Content-Range", ""))
        if not cr:
            raise StoreError(400, "bad_request", "a chunk needs Content-Range: bytes START-END/*")
        size = self.store.upload_append(m.group(1), int(cr.group(1)), self._body_chunks())
        self._send(202, headers={"Location": f"/v1/uploads/{m.group(1)}", "Range": f"bytes=0-{size - 1}",
                                 "Upload-Offset": str(size)})

    def do_DELETE_(self, path, query):
        m = re.match(r"^/v1/blobs/(.+)$", path)
        if m:
            p, _ = self.store.blob_stat(m.group(1))
            os.unlink(p)
            return self._send(204)
        m = re.match(r"^/v1/names/(.+)/manifests/([^/]+)$", path)
        if m:
            self.store.manifest_delete(m.group(1), m.group(2))
            return self._send(204)
        m = re.match(r"^/v1/uploads/([^/]+)$", path)
        if m:
            os.unlink(self.store.upload_path(m.group(1)))
            return self._send(204)
        raise StoreError(404, "not_found", f"no such path {path}")


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)


class TCPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="the directory the store keeps")
    ap.add_argument("--listen", required=True, help="unix:///path.sock or tcp://HOST:PORT")
    ap.add_argument("--tls-cert"), ap.add_argument("--tls-key")
    ap.add_argument("--tls-client-ca", help="require client certificates signed by this CA (mTLS)")
    ap.add_argument("--token-file", help="require Authorization: Bearer <the file's first line>")
    a = ap.parse_args()
    Handler.store = Store(a.root)
    if a.token_file:
        with open(a.token_file) as f:
            Handler.token = f.readline().strip()
    if a.listen.startswith("unix://"):
        path = a.listen[len("unix://"):]
        if os.path.exists(path):
            os.unlink(path)
        old = os.umask(0o077)
        srv = UnixServer(path, Handler)
        os.umask(old)
    elif a.listen.startswith("tcp://"):
        host, _, port = a.listen[len("tcp://"):].rpartition(":")
        srv = TCPServer((host.strip("[]"), int(port)), Handler)
        if a.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(a.tls_cert, a.tls_key)
            if a.tls_client_ca:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(a.tls_client_ca)
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        elif host not in ("127.0.0.1", "::1", "[::1]", "localhost"):
            sys.exit("store_adapter: plain tcp:// only on loopback; give --tls-cert/--tls-key")
    else:
        sys.exit("store_adapter: --listen unix:///PATH or tcp://HOST:PORT")
    print(f"store_adapter: serving {a.root} on {a.listen}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
