"""http(s):// and git:// sources in an LLB definition sent to POST /solve:
the file or the checkout lands in the vertex's image as BuildKit puts it
there (name, mode, owner, .git or not, subdir), a source is cached by what
it holds now (an unchanged download or commit is a cache hit, a changed one
re-runs it and everything after it), and a bad checksum, a missing file or
a missing ref is an error event naming the op.  The servers are local: a
python http.server and `git daemon`, both on 127.0.0.1."""

import hashlib
import http.server
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

import podsolve_testlib as lib

import llbgen as llb  # noqa: E402
from llb_solve import image as _image, solve, vertexes as _vertexes  # noqa: E402


# ---- the servers -------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers from server.routes: path -> (status, headers, body)."""

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        self.server.requests.append(path)
        status, headers, body = self.server.routes.get(path, (404, {}, b"no such file\n"))
        if status == 200 and (("ETag" in headers and self.headers.get("If-None-Match") == headers["ETag"])
                              or ("Last-Modified" in headers
                                  and self.headers.get("If-Modified-Since") == headers["Last-Modified"])):
            status, body = 304, b""
        self.server.answers.append((path, status))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if callable(body):  # a body that writes itself (see stall)
            return body(self)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class WebServer:
    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}
        self.httpd.requests = []
        self.httpd.answers = []  # (path, status)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, path, body, status=200, headers=None):
        self.httpd.routes[path] = (status, headers or {}, body)
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stall(self, path, released):
        """Serve 4 KiB of a 1 MiB body, then nothing until `released` is set."""
        def write(handler):
            handler.send_header("Content-Length", str(1 << 20))
            handler.end_headers()
            handler.wfile.write(b"x" * 4096)
            handler.wfile.flush()
            released.wait(lib.scaled(120))
        return self.serve(path, write)

    def redirect(self, path, to):
        return self.serve(path, b"", 302, {"Location": to})

    def answers_for(self, path):
        return [st for p, st in self.httpd.answers if p == path]

    def requests_for(self, path):
        return [p for p in self.httpd.requests if p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def web():
    srv = WebServer()
    yield srv
    srv.close()


_free_port = lib.free_port


GitServer = lib.GitServer


@pytest.fixture(scope="module")
def gitd(tmp_path_factory):
    srv = GitServer(tmp_path_factory.mktemp("git-daemon"))
    yield srv
    srv.close()


# ---- solving -------------------------------------------------------------------


def _solve(daemon, ops, names=None):
    """POST /solve with a definition -> [events] (the request itself must be accepted)."""
    status, events = solve(daemon, ops, names)
    assert status == 200, events
    return events


def _cached(events, op):
    return _vertexes(events)[op.ref][-1].get("cached") is True


def _error(events):
    errs = [e["error"] for e in events if "error" in e]
    assert len(errs) == 1 and not any("result" in e for e in events), events[-5:]
    return errs[0]


def _listing(daemon, image):
    """{path: (type, mode, uid, gid, content or link target)} of everything in the image."""
    ctr = daemon.buildah("from", "--pull=never", "--quiet", image).stdout.strip()
    try:
        mnt = Path(daemon.buildah("mount", ctr).stdout.strip())
        out = {}
        for dirpath, dirs, files in os.walk(mnt):
            for n in dirs + files:
                p = Path(dirpath) / n
                st = p.lstat()
                rel = "/" + str(p.relative_to(mnt))
                kind = "l" if p.is_symlink() else "d" if p.is_dir() else "f"
                data = os.readlink(p) if kind == "l" else p.read_bytes() if kind == "f" else None
                out[rel] = (kind, st.st_mode & 0o7777, st.st_uid, st.st_gid, data, st.st_mtime)
        return out
    finally:
        daemon.buildah("umount", ctr, check=False)
        daemon.buildah("rm", ctr, check=False)


def _no_temp_files_left(daemon):
    tmp = daemon.state / "llb-tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


def _cancel_while(daemon, ops, ref, started):
    """Start a solve, wait until started(event) holds, cancel it: the
    stream's last line is the error and the job says cancelled."""
    req = {"ref": ref, "definition": llb.definition_json(ops), "exporters": []}
    body, ctype = lib.multipart({"request": json.dumps(req).encode()}, {})
    status, _, it = daemon.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=120)
    assert status == 200
    lines = []
    try:
        for obj in it:
            lines.append(obj)
            if started(obj):
                break
        else:
            pytest.fail(f"the solve ended before it could be cancelled: {lines[-5:]}")
        cstatus, _, cbody = daemon.request("POST", f"/solve/{ref}/cancel", timeout=60)
        assert cstatus == 200 and json.loads(cbody).get("state") == "cancelled", cbody
        lines.extend(it)
    finally:
        it.close()
    assert "error" in lines[-1], lines[-5:]


def _sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- http ------------------------------------------------------------------------


def test_http_file_lands_with_the_given_name_mode_owner_and_content(daemon, web, uniq):
    body = f"config {uniq}\n".encode()
    url = web.serve(f"/{uniq}/conf.txt", body, headers={"Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"})
    src = llb.http_source(url, checksum=_sha256(body), filename="app.conf", perm=0o640, uid=1000, gid=1001)
    events = _solve(daemon, [src])
    files = _listing(daemon, _image(events))
    assert set(files) == {"/app.conf"}, files
    kind, mode, uid, gid, data, mtime = files["/app.conf"]
    assert (kind, mode, uid, gid, data) == ("f", 0o640, 1000, 1001, body)
    assert mtime == 1445412480  # Last-Modified, as BuildKit sets it
    assert len(web.requests_for(f"/{uniq}/conf.txt")) == 1
    _no_temp_files_left(daemon)
    # pinned by checksum and cached: the identity is known without a request
    again = _solve(daemon, [src])
    assert _cached(again, src)
    assert _image(again) == _image(events)
    assert len(web.requests_for(f"/{uniq}/conf.txt")) == 1


def test_http_defaults_name_from_url_mode_0600_root_owner(daemon, web, uniq):
    body = os.urandom(200000)  # more than one write callback's worth
    url = web.serve(f"/{uniq}/dir/my%20tool.bin", body)
    src = llb.http_source(url + "?version=2")
    events = _solve(daemon, [src])
    files = _listing(daemon, _image(events))
    assert set(files) == {"/my tool.bin"}, files
    assert files["/my tool.bin"][:5] == ("f", 0o600, 0, 0, body)
    assert files["/my tool.bin"][5] == 0  # no Last-Modified: the epoch
    progress = [s for e in events for s in e.get("status", {}).get("statuses", []) if s.get("vertex") == src.ref]
    assert progress and progress[-1]["current"] == len(body) and progress[-1].get("completed"), progress


def test_http_redirect_is_followed_and_content_disposition_names_the_file(daemon, web, uniq):
    body = f"report {uniq}\n".encode()
    target = web.serve(f"/{uniq}/blob/7f3a", body,
                       headers={"Content-Disposition": 'attachment; filename="report.csv"'})
    hop = web.redirect(f"/{uniq}/hop", target)
    url = web.redirect(f"/{uniq}/latest", hop)
    events = _solve(daemon, [llb.http_source(url)])
    files = _listing(daemon, _image(events))
    assert set(files) == {"/report.csv"} and files["/report.csv"][4] == body, files
    # without the header the file is named from the URL that was asked for
    plain = web.serve(f"/{uniq}/blob/8e1b", body)
    url2 = web.redirect(f"/{uniq}/stable", plain)
    files = _listing(daemon, _image(_solve(daemon, [llb.http_source(url2)])))
    assert set(files) == {"/stable"}, files


def test_http_wrong_checksum_is_an_error_event_naming_the_op(daemon, web, uniq):
    before = daemon.working_containers()
    url = web.serve(f"/{uniq}/pinned.txt", b"what the server has\n")
    src = llb.http_source(url, checksum=_sha256(b"what the client expected\n"))
    err = _error(_solve(daemon, [src], names={src: "ADD pinned.txt"}))
    assert err["vertex"] == src.ref
    assert "ADD pinned.txt" in err["message"] and "digest mismatch" in err["message"], err
    assert url in err["message"] and _sha256(b"what the server has\n") in err["message"], err
    assert daemon.working_containers() == before


def test_http_404_is_an_error_naming_the_url_and_status(daemon, web, uniq):
    url = web.serve(f"/{uniq}/exists", b"x").replace("/exists", "/missing.tar")
    src = llb.http_source(url)
    err = _error(_solve(daemon, [src]))
    assert err["vertex"] == src.ref
    assert url in err["message"] and "HTTP status 404" in err["message"], err


def test_http_source_is_cached_while_unchanged_and_reruns_with_downstream_when_it_changes(daemon, web, uniq):
    path = f"/{uniq}/data.txt"
    url = web.serve(path, b"one\n")
    src = llb.http_source(url)
    down = llb.file([llb.mkfile("/stamp", uniq.encode())], inputs=[src], base=0)
    first = _solve(daemon, [src, down])
    assert not _cached(first, src) and not _cached(first, down)
    second = _solve(daemon, [src, down])
    assert _cached(second, src) and _cached(second, down)
    assert _image(second) == _image(first)
    web.serve(path, b"two\n")
    third = _solve(daemon, [src, down])
    assert not _cached(third, src) and not _cached(third, down)
    files = _listing(daemon, _image(third))
    assert files["/data.txt"][4] == b"two\n" and files["/stamp"][4] == uniq.encode()


@pytest.mark.parametrize("validator", ["ETag", "Last-Modified"])
def test_http_source_is_revalidated_not_downloaded_again_while_the_server_says_unchanged(daemon, web, uniq,
                                                                                          validator):
    """Without a checksum the server is asked whether the file changed
    (If-None-Match / If-Modified-Since, as BuildKit): a 304 keeps the
    source and everything downstream cached; new content is fetched and
    re-runs them; with the results pruned, a 304 still builds the file."""
    path = f"/{uniq}/{validator}/tool.sh"
    value = {"ETag": f'"{uniq}-1"', "Last-Modified": "Sat, 21 Nov 2026 07:00:00 GMT"}[validator]
    url = web.serve(path, b"#!/bin/sh\necho one\n", headers={validator: value,
                                                              "Content-Disposition": 'attachment; filename="named.sh"'})
    src = llb.http_source(url, perm=0o755)
    down = llb.file([llb.mkfile("/stamp", uniq.encode())], inputs=[src], base=0)
    first = _solve(daemon, [src, down])
    assert web.answers_for(path) == [200]
    second = _solve(daemon, [src, down])
    assert web.answers_for(path) == [200, 304]  # asked, not downloaded
    assert _cached(second, src) and _cached(second, down)
    assert _image(second) == _image(first)

    new_value = {"ETag": f'"{uniq}-2"', "Last-Modified": "Sat, 21 Nov 2026 08:00:00 GMT"}[validator]
    web.serve(path, b"#!/bin/sh\necho two\n", headers={validator: new_value,
                                                       "Content-Disposition": 'attachment; filename="named.sh"'})
    third = _solve(daemon, [src, down])
    assert web.answers_for(path) == [200, 304, 200]
    assert not _cached(third, src) and not _cached(third, down)
    files = _listing(daemon, _image(third))
    assert files["/named.sh"][4] == b"#!/bin/sh\necho two\n" and files["/named.sh"][1] == 0o755

    # no cached result left: the 304 names the content, which is then fetched
    st, _, body = daemon.request("POST", "/v1.41/build/prune?all=true&filters=" +
                                 urllib.parse.quote(json.dumps({"type": ["llb.result"]})))
    assert st == 200, body
    fourth = _solve(daemon, [src, down])
    assert web.answers_for(path) == [200, 304, 200, 304, 200]
    files = _listing(daemon, _image(fourth))
    assert files["/named.sh"][4] == b"#!/bin/sh\necho two\n" and files["/stamp"][4] == uniq.encode()


def test_http_source_without_validators_is_downloaded_each_time_and_no_cache_skips_revalidation(daemon, web,
                                                                                               uniq):
    path = f"/{uniq}/plain.txt"
    url = web.serve(path, b"plain\n")
    src = llb.http_source(url)
    _image(_solve(daemon, [src]))
    _image(_solve(daemon, [src]))
    assert web.answers_for(path) == [200, 200]
    tagged = web.serve(path, b"plain\n", headers={"ETag": f'"{uniq}"'})
    assert tagged == url
    _image(_solve(daemon, [src]))
    status, events = solve(daemon, [src], attrs={"no-cache": ""})
    assert status == 200
    _image(events)
    assert web.answers_for(path) == [200, 200, 200, 200]  # no-cache: a plain GET
    _image(_solve(daemon, [src]))
    assert web.answers_for(path)[-1] == 304


# ---- git ---------------------------------------------------------------------------


def test_git_source_at_a_branch_a_tag_and_a_commit(daemon, gitd, uniq):
    name = f"repo-{uniq}"
    remote = gitd.repo(name, {"README": "first\n", "bin/run.sh": ("#!/bin/sh\necho hi\n", 0o755)})
    first = gitd.git(name, "rev-parse", "HEAD")
    gitd.commit(name, {"README": "second\n"}, "second")
    gitd.git(name, "tag", "-a", "v1", "-m", "release 1")
    gitd.commit(name, {"README": "third\n"}, "third")

    for ref, readme in (("main", b"third\n"), ("v1", b"second\n"), (first, b"first\n"), ("", b"third\n")):
        src = llb.git_source(remote, ref)
        files = _listing(daemon, _image(_solve(daemon, [src])))
        assert files["/README"][4] == readme, (ref, files)
        assert not any(p == "/.git" or p.startswith("/.git/") for p in files), ref
    assert files["/bin/run.sh"][1] == 0o755  # the executable bit survives

    # a subdirectory becomes the root
    sub = llb.git_source(remote, "main", subdir="bin")
    files = _listing(daemon, _image(_solve(daemon, [sub])))
    assert set(files) == {"/run.sh"}, files
    _no_temp_files_left(daemon)


def test_git_keep_git_dir_keeps_the_repository_at_the_commit(daemon, gitd, uniq):
    name = f"keep-{uniq}"
    remote = gitd.repo(name, {"a.txt": "a\n"})
    head = gitd.git(name, "rev-parse", "HEAD")
    image = _image(_solve(daemon, [llb.git_source(remote, "main", keep_git_dir=True)]))
    files = _listing(daemon, image)
    assert files["/a.txt"][4] == b"a\n"
    assert files["/.git/HEAD"][4].decode().strip() == head  # detached at the commit
    assert files["/.git/refs/heads/main"][4].decode().strip() == head
    assert f"url = {remote}" in files["/.git/config"][4].decode()
    assert "/.git/FETCH_HEAD" not in files
    # without keepgitdir the same ref has no .git
    files = _listing(daemon, _image(_solve(daemon, [llb.git_source(remote, "main")])))
    assert "/.git" not in files and files["/a.txt"][4] == b"a\n"


def test_git_branch_moving_reruns_the_source_and_downstream(daemon, gitd, uniq):
    name = f"moving-{uniq}"
    remote = gitd.repo(name, {"v": "1\n"})
    src = llb.git_source(remote, "main")
    down = llb.file([llb.mkfile("/stamp", uniq.encode())], inputs=[src], base=0)
    first = _solve(daemon, [src, down])
    again = _solve(daemon, [src, down])
    assert _cached(again, src) and _cached(again, down) and _image(again) == _image(first)
    gitd.commit(name, {"v": "2\n"}, "bump")
    moved = _solve(daemon, [src, down])
    assert not _cached(moved, src) and not _cached(moved, down)
    files = _listing(daemon, _image(moved))
    assert files["/v"][4] == b"2\n" and files["/stamp"][4] == uniq.encode()


def test_git_bad_ref_and_bad_remote_are_errors_naming_the_op(daemon, gitd, uniq):
    before = daemon.working_containers()
    remote = gitd.repo(f"refs-{uniq}", {"f": "x"})
    src = llb.git_source(remote, "no-such-branch")
    err = _error(_solve(daemon, [src]))
    assert err["vertex"] == src.ref
    assert 'no ref "no-such-branch"' in err["message"] and remote in err["message"], err
    gone = llb.git_source(f"git://127.0.0.1:{gitd.port}/not-a-repo-{uniq}", "main")
    err = _error(_solve(daemon, [gone]))
    assert err["vertex"] == gone.ref and "not-a-repo" in err["message"], err
    assert daemon.working_containers() == before


def test_bad_attrs_and_ssh_remotes_are_refused_before_anything_runs(daemon, uniq):
    cases = [
        (llb.source("https://127.0.0.1/x", {"http.checksum": "md5:abc"}), 400, "http.checksum"),
        (llb.source("https://127.0.0.1/x", {"http.perm": "rwx"}), 400, "http.perm"),
        (llb.source("git://github.com/x/y.git#main", {"git.fullurl": "ssh://git@github.com/x/y.git"}), 501, "ssh"),
    ]
    for op, want, needle in cases:
        req = {"definition": llb.definition_json([op])}
        st, _, body = daemon.request("POST", "/solve", json.dumps(req).encode(), {"Content-Type": "application/json"})
        assert st == want, body
        msg = json.loads(body)["message"]
        assert op.ref in msg and needle in msg, msg


def test_cancel_stops_a_stalled_download_and_a_hanging_git_server(daemon, web, uniq):
    released = threading.Event()
    try:
        url = web.stall(f"/{uniq}/big.iso", released)
        src = llb.http_source(url)

        def downloading(obj):
            return any(st.get("vertex") == src.ref and st.get("current", 0) > 0
                       for st in obj.get("status", {}).get("statuses", []))
        _cancel_while(daemon, [src], f"llb-cancel-http-{uniq}", downloading)
        # the download stopped while the server still stalls: its temp dir is gone
        lib.wait_for(lambda: not any((daemon.state / "llb-tmp").iterdir()), 15, step=0.2)
        _no_temp_files_left(daemon)
    finally:
        released.set()

    # a git:// server that accepts and never answers
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(4)
        accepted = []
        t = threading.Thread(target=lambda: accepted.append(lsock.accept()), daemon=True)
        t.start()
        gsrc = llb.git_source(f"git://127.0.0.1:{lsock.getsockname()[1]}/r", "main")

        def resolving(obj):
            if not any(v["digest"] == gsrc.ref and v.get("started") for v in obj.get("status", {}).get("vertexes", [])):
                return False
            t.join(lib.scaled(30))  # git ls-remote has connected
            return bool(accepted)
        _cancel_while(daemon, [gsrc], f"llb-cancel-git-{uniq}", resolving)
        # git was killed: its end of the connection closes
        conn = accepted[0][0]
        conn.settimeout(15)
        try:
            while conn.recv(4096):
                pass
        finally:
            conn.close()
    _no_temp_files_left(daemon)
    assert daemon.working_containers() == []
