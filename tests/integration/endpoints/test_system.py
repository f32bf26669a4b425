"""System endpoints a client calls before building: /_ping, /version, /info,
and what an unknown route answers.  Shapes follow Podman 4.3.1 and Docker
20.10 as captured on this machine (docs/anchors.md, captures L-P)."""

import json
import os
import platform
import re
import socket
import subprocess
import threading
import time

import pytest

import podsolve_testlib as lib

PING_PATHS = ["/_ping", "/v1.41/_ping", "/libpod/_ping", "/v4.3.1/libpod/_ping"]


def buildah_version():
    out = subprocess.run(["buildah", "--version"], capture_output=True, text=True, check=True).stdout
    return re.search(r"version (\S+)", out).group(1)


def go_arch():
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
            "s390x": "s390x"}.get(platform.machine(), platform.machine())


def assert_ping_headers(h):
    assert h.get("Api-Version") == "1.41"
    assert h.get("Libpod-Api-Version"), "Libpod-Api-Version missing or empty (podman-remote needs it)"
    assert (h.get("Server") or "").startswith("podsolve/"), h.get("Server")
    assert "Builder-Version" in h, "Builder-Version header missing"
    assert h.get("Cache-Control") == "no-cache"
    assert h.get("Pragma") == "no-cache"
    assert "Docker-Experimental" in h
    assert h.get("Libpod-Buildah-Version"), "Libpod-Buildah-Version missing or empty"


@pytest.mark.parametrize("path", PING_PATHS)
def test_get_ping_answers_ok_with_docker_and_libpod_headers(daemon, path):
    """docker, docker-py and podman-remote ping before anything else; each
    ping path answers 200 "OK" with the headers they read."""
    status, headers, body = daemon.request("GET", path)
    assert status == 200
    assert body == b"OK"
    assert_ping_headers(headers)


@pytest.mark.parametrize("path", PING_PATHS)
def test_head_ping_has_the_same_headers_and_an_empty_body(daemon, path):
    """The docker CLI sends HEAD /_ping (capture E): same headers, no body."""
    status, headers, body = daemon.request("HEAD", path)
    assert status == 200
    assert body == b""
    assert_ping_headers(headers)


def test_one_connection_serves_several_requests_with_keep_alive(daemon):
    """docker-py keeps connections alive (capture G): three requests on one
    connection all get complete answers."""
    conn = daemon.connection()
    try:
        for path in ("/_ping", "/version", "/_ping"):
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, (path, body)
        assert body == b"OK"
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/version", "/v1.41/version"])
def test_version_is_docker_shaped_and_names_podsolve_and_buildah(daemon, path):
    """`docker version` and docker-compose read /version: Docker's shape,
    with podsolve and the buildah it drives listed as components."""
    status, headers, body = daemon.request("GET", path)
    assert status == 200
    assert headers.get_content_type() == "application/json"
    v = json.loads(body)
    assert v["ApiVersion"] == "1.41"
    assert re.match(r"^1\.\d+$", v["MinAPIVersion"]), v["MinAPIVersion"]
    assert v["Version"]
    assert v["Os"] == "linux"
    assert v["Arch"] == go_arch()
    names = {c["Name"]: c for c in v["Components"]}
    assert "podsolve" in names, f"no podsolve component in {list(names)}"
    buildah = [c for n, c in names.items() if "buildah" in n.lower()]
    assert buildah, f"no component naming buildah in {list(names)}"
    assert buildah[0]["Version"] == buildah_version()


def test_info_reports_real_host_and_storage_values(daemon):
    """`docker info` shows real values: CPU count, memory, the storage
    driver and root podsolved was started with."""
    status, _, body = daemon.request("GET", "/info")
    assert status == 200
    info = json.loads(body)
    assert info["NCPU"] == os.cpu_count()
    with open("/proc/meminfo") as f:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+) kB", f.read()).group(1))
    assert info["MemTotal"] > 0
    assert abs(info["MemTotal"] - mem_kb * 1024) <= mem_kb * 1024 // 100, info["MemTotal"]
    assert info["OSType"] == "linux"
    assert info["Driver"] == "overlay"
    assert info["DockerRootDir"] == str(daemon.root)


def test_versioned_info_answers_the_same(daemon):
    status, _, body = daemon.request("GET", "/v1.41/info")
    assert status == 200
    assert json.loads(body)["Driver"] == "overlay"


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1.41/this/route/does/not/exist"),
    ("GET", "/no-such-endpoint"),
    ("POST", "/v4.3.1/libpod/nothing-here"),
])
def test_unknown_route_is_a_json_404_with_podman_error_fields(daemon, method, path):
    """An unknown route answers 404 with Podman's error body, so Docker
    clients (which read "message") and podman-remote (cause/response) both
    get something readable."""
    status, headers, body = daemon.request(method, path)
    assert status == 404
    err = json.loads(body)
    assert set(err) >= {"cause", "message", "response"}, err
    assert err["response"] == 404
    assert err["message"]


@pytest.mark.parametrize("method,path,allow", [
    ("TRACE", "/solve", "POST, GET"),
    ("DELETE", "/v1.41/solve/prune", "POST"),
    ("GET", "/solve/prune", "POST"),  # not GET /solve/{ref} of a job "prune": the literal path wins
    ("GET", "/v4.3.1/libpod/solve/prune", "POST"),
    ("PUT", "/libpod/solve/abc/cancel", "POST"),
    ("GET", "/v1.41/grpc", "POST"),
    ("POST", "/_ping", "GET, HEAD"),
])
def test_wrong_method_on_a_known_path_is_a_405_that_says_what_is_allowed(daemon, method, path, allow):
    """A known path asked with a method it has no route for answers 405 with
    Podman's error body and an Allow header listing the methods it does
    serve, each once (RFC 9110 §15.5.6: a 405 MUST carry Allow; schemathesis'
    unsupported_method check found it missing)."""
    status, headers, body = daemon.request(method, path)
    assert status == 405, (status, body)
    assert headers.get("Allow") == allow, dict(headers)
    err = json.loads(body)
    assert err["response"] == 405 and err["message"] == f"method {method} not allowed for {path}", err


def test_ping_answers_while_a_build_is_running(daemon, uniq):
    """A build in progress does not block the API: /_ping answers within a
    second while a RUN step sleeps."""
    ctx = {"Dockerfile": lib.containerfile(f"FROM {lib.BASE_IMAGE}", f"RUN sleep 3 && echo {uniq}")}
    result = {}

    def run_build():
        result["r"] = daemon.build(ctx, {"t": f"busy-{uniq}", "nocache": "1"})

    t = threading.Thread(target=run_build)
    t.start()
    try:
        # The RUN step's shell is sleeping.
        assert lib.wait_for(lambda: lib.running(f"sleep 3 && echo {uniq}"), 30), \
            f"the RUN step never started; log tail:\n{daemon.log_tail()}"
        t0 = time.monotonic()
        status, _, body = daemon.request("GET", "/_ping", timeout=5)
        elapsed = time.monotonic() - t0
        assert (status, body) == (200, b"OK")
        assert elapsed < lib.scaled(1.0), f"/_ping took {elapsed:.2f}s during a build"
    finally:
        t.join(lib.scaled(60))
    r = result["r"]
    assert r.status == 200 and r.error is None, r.describe()


def test_fifty_concurrent_clients_all_get_answers(daemon):
    """A burst of parallel connections (compose with many services, CI
    fan-out) is served, not dropped."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda i: daemon.request("GET", "/_ping" if i % 2 else "/version", timeout=20),
                                range(50)))
    assert [status for status, _, _ in results] == [200] * 50


def test_oversized_request_line_and_headers_are_refused_not_fatal(daemon, daemon_builds):
    status, _, _ = daemon.request("GET", "/_ping?" + "a" * 200_000)
    assert 400 <= status < 500
    status, _, _ = daemon.request("GET", "/_ping", headers={"X-Big": "b" * 200_000})
    assert 400 <= status < 500
    daemon_builds(daemon)


def test_garbage_on_the_socket_does_not_kill_the_daemon(daemon, daemon_builds):
    """A client writing junk instead of HTTP, or hanging up half way through
    a request, must leave the daemon serving."""
    for junk in (b"\x00\xff\x16\x03\x01 not http at all\r\n\r\n", b"GET /_ping HTTP/1.1\r\nHost: x\r\n",
                 b"POST /v1.41/build HTTP/1.1\r\nContent-Length: 100000\r\n\r\npartial"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(str(daemon.sock))
        s.sendall(junk)
        s.close()
    daemon_builds(daemon)


def test_system_df_counts_the_build_cache_and_docker_system_df_shows_it(daemon, uniq):
    """GET /system/df carries podsolve's build cache as BuildCache (each
    entry as POST /build/prune would count it) and its total as BuilderSize;
    `docker system df` (the docker 28 CLI) shows it on its Build Cache row."""
    import llbgen as llb
    from llb_solve import image as result_image, solve_ok
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(["sh", "-c", f"head -c 200000 /dev/urandom > /blob-{uniq}"], root=img)
    result_image(solve_ok(daemon, [img, run]))
    status, _, body = daemon.request("GET", "/v1.41/system/df")
    assert status == 200, body
    df = json.loads(body)
    cache = df["BuildCache"]
    assert cache and {"ID", "Type", "Description", "Size", "CreatedAt", "LastUsedAt", "InUse", "Shared"} <= set(cache[0])
    assert "llb.result" in {e["Type"] for e in cache}, cache
    assert df["BuilderSize"] == sum(e["Size"] for e in cache) >= 200000, (df["BuilderSize"], cache)
    r = subprocess.run(["/usr/local/bin/docker", "system", "df"], env=daemon.env(), capture_output=True, text=True,
                       timeout=lib.scaled(60))
    assert r.returncode == 0, r.stderr
    row = next(l for l in r.stdout.splitlines() if l.startswith("Build Cache"))
    assert int(row.split()[2]) == len(cache), r.stdout
