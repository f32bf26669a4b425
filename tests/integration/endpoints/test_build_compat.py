"""POST /build and /v1.41/build, the Docker-compatible build: what docker
CLI (legacy builder), docker-py/compose and curl send, and the Podman-compat
JSONMessage stream they get back (captures E, I, J in wire-capture.txt).

Every test checks what ended up in storage (files inside the image, labels,
tags), not just the HTTP status."""

import json
import os
import random

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, containerfile

FOUR_STEP = {
    "Containerfile": containerfile(
        f"FROM {BASE_IMAGE}",
        "RUN echo hello > /hello.txt",
        "COPY file.txt /file.txt",
        'CMD ["cat", "/file.txt"]'),
    "file.txt": "file content\n",
}


def lib_tag(name):
    """Where Podman's compat API stores `t=name`."""
    return f"docker.io/library/{name}:latest"


def assert_ok(r):
    assert r.status == 200, r.describe()
    assert r.error is None, r.describe()


# --------------------------------------------------------------------------
# The stream and the stored image


def test_compat_build_streams_podman_lines_and_stores_the_image(daemon, uniq):
    """`POST /v1.41/build?t=NAME&dockerfile=Containerfile` with a 4-step
    context streams STEP lines, then the bare ID, aux ID, "Successfully
    built", "Successfully tagged NAME"; the image is docker.io/library/NAME
    with the RUN output, the COPYed file and the CMD."""
    name = f"compat4-{uniq}"
    r = daemon.build(FOUR_STEP, {"t": name, "dockerfile": "Containerfile"})
    assert_ok(r)
    assert r.headers.get_content_type() == "application/json"

    # Podman's framing: one JSON object per line, each with one known key.
    lines = [l for l in r.raw.split(b"\n") if l.strip()]
    assert len(lines) == len(r.events), "each JSON object must sit on its own line"
    for ev in r.events:
        assert len(ev) == 1 and next(iter(ev)) in ("stream", "aux"), ev

    s = r.streams
    assert s[0] == f"STEP 1/4: FROM {BASE_IMAGE}\n"
    assert "STEP 2/4: RUN echo hello > /hello.txt\n" in s
    assert "STEP 3/4: COPY file.txt /file.txt\n" in s
    assert 'STEP 4/4: CMD ["cat", "/file.txt"]\n' in s
    assert f"Successfully tagged {lib_tag(name)}\n" in s

    image_id = daemon.image_id(lib_tag(name))
    assert r.events[-4:] == [
        {"stream": image_id + "\n"},
        {"aux": {"ID": "sha256:" + image_id}},
        {"stream": f"Successfully built {image_id[:12]}\n"},
        {"stream": f"Successfully tagged {name}\n"},
    ]

    assert daemon.image_file(lib_tag(name), "/hello.txt") == b"hello\n"
    assert daemon.image_file(lib_tag(name), "/file.txt") == b"file content\n"
    assert daemon.image_inspect(lib_tag(name))["OCIv1"]["config"]["Cmd"] == ["cat", "/file.txt"]
    assert daemon.working_containers() == []


def test_unversioned_build_path_works_like_v1_41(daemon, uniq):
    """docker-py without a pinned version may POST /build."""
    name = f"unversioned-{uniq}"
    r = daemon.build(FOUR_STEP, {"t": name, "dockerfile": "Containerfile"}, endpoint="/build")
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/file.txt") == b"file content\n"


def test_compat_build_stores_docker_v2s2_manifests(daemon, uniq):
    """Podman's compat endpoint always writes Docker-format images (what a
    docker client expects from `docker push` later)."""
    name = f"fmt-{uniq}"
    assert_ok(daemon.build(FOUR_STEP, {"t": name, "dockerfile": "Containerfile"}))
    assert daemon.image_manifest_type(lib_tag(name)) == "application/vnd.docker.distribution.manifest.v2+json"


def test_compat_defaults_to_Dockerfile_when_both_files_exist(daemon, uniq):
    """Without dockerfile=, compat reads `Dockerfile` (Docker's default)."""
    name = f"defdf-{uniq}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo from-dockerfile > /which"),
           "Containerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo from-containerfile > /which")}
    assert_ok(daemon.build(ctx, {"t": name}))
    assert daemon.image_file(lib_tag(name), "/which") == b"from-dockerfile\n"


def test_compat_falls_back_to_Containerfile_when_there_is_no_Dockerfile(daemon, uniq):
    name = f"defcf-{uniq}"
    ctx = {"Containerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo from-containerfile > /which")}
    assert_ok(daemon.build(ctx, {"t": name}))
    assert daemon.image_file(lib_tag(name), "/which") == b"from-containerfile\n"


def test_dockerfile_from_outside_the_context_sent_as_dot_dockerfile(daemon, uniq):
    """`docker build -f ../elsewhere/Dockerfile ctx` puts the file into the
    tar as .dockerfile.<hex> and names it in dockerfile=."""
    name = f"dotdf-{uniq}"
    hidden = ".dockerfile." + os.urandom(10).hex()
    ctx = {hidden: containerfile(f"FROM {BASE_IMAGE}", "COPY data.txt /data.txt"),
           "data.txt": "outside-dockerfile\n"}
    assert_ok(daemon.build(ctx, {"t": name, "dockerfile": hidden}))
    assert daemon.image_file(lib_tag(name), "/data.txt") == b"outside-dockerfile\n"


def unpadded_tar(entries):
    """A tar of `entries` [(name, content)] in that order, whose last entry's
    data stops short of its 512-byte padding and has no end-of-archive
    blocks: exactly what the 20.10 CLI sends for `docker build -f <outside>
    ctx` (its ReplaceFileTarWrapper appends the .dockerfile.<hex> entry
    without closing the tar writer).  Go's archive/tar, used by dockerd and
    Podman, reads it fine."""
    import io
    import tarfile
    raw = lib.tar_entries([(name, "file", content) for name, content in entries])
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        last = tf.getmembers()[-1]
    return raw[:last.offset_data + last.size]


def test_tar_without_final_padding_as_the_docker_cli_sends_it(daemon, uniq):
    """The exact tar shape of `docker build -f ../Dockerfile ctx` (20.10):
    the last member (.dockerfile.<hex>, 42 bytes) is not padded and there
    are no trailing zero blocks.  The build must work."""
    name = f"unpadded-{uniq}"
    hidden = ".dockerfile.b193a05a169c1d9cee55"
    body = unpadded_tar([(".dockerignore", "skip.txt\n\n" + hidden + "\n"), ("keep.txt", "keep\n"),
                         (hidden, containerfile(f"FROM {BASE_IMAGE}", "COPY . /ctx"))])
    assert len(body) % 512 == 42
    r = daemon.build(body=body, params={"t": name, "dockerfile": hidden}, chunked=True)
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/ctx/keep.txt") == b"keep\n"


def test_repeated_t_creates_every_tag_on_the_same_image(daemon, uniq):
    """`docker build -t a -t b:v2`: both names point at the built image and
    the stream ends with one "Successfully tagged" per t as sent."""
    a, b = f"multi-a-{uniq}", f"multi-b-{uniq}:v2"
    r = daemon.build(FOUR_STEP, [("t", a), ("t", b), ("dockerfile", "Containerfile")])
    assert_ok(r)
    id_a = daemon.image_id(lib_tag(a))
    id_b = daemon.image_id(f"docker.io/library/{b}")
    assert id_a == id_b
    assert r.streams[-2:] == [f"Successfully tagged {a}\n", f"Successfully tagged {b}\n"]


# --------------------------------------------------------------------------
# Query parameters, each with an observable outcome


def test_buildargs_value_reaches_the_RUN_step(daemon, uniq):
    name = f"args-{uniq}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "ARG GREETING=unset", "ARG OTHER",
                                       'RUN echo "$GREETING/$OTHER" > /arg.txt')}
    r = daemon.build(ctx, {"t": name, "buildargs": json.dumps({"GREETING": "hello arg", "OTHER": "x=y"})})
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/arg.txt") == b"hello arg/x=y\n"


def test_labels_json_object_lands_in_the_image_config(daemon, uniq):
    name = f"labels-{uniq}"
    labels = {"org.example.team": "builders", "org.example.note": "spaces and = signs"}
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "LABEL from.file=yes")}
    assert_ok(daemon.build(ctx, {"t": name, "labels": json.dumps(labels)}))
    got = daemon.image_labels(lib_tag(name))
    for k, v in labels.items():
        assert got.get(k) == v, got
    assert got.get("from.file") == "yes"


def test_target_builds_only_up_to_the_named_stage(daemon, uniq):
    name = f"target-{uniq}"
    ctx = {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE} AS first", "RUN echo first > /first.txt",
        f"FROM {BASE_IMAGE} AS second", "RUN echo second > /second.txt")}
    r = daemon.build(ctx, {"t": name, "target": "first"})
    assert_ok(r)
    present = daemon.image_paths(lib_tag(name), "/first.txt", "/second.txt")
    assert present == {"/first.txt": True, "/second.txt": False}
    assert "echo second" not in r.text


def test_rebuild_uses_the_layer_cache_and_gives_the_same_image_id(daemon, uniq):
    """Compat defaults to layers=true: a second identical build prints
    "--> Using cache" for the RUN step and yields the same ID."""
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN echo cache-{uniq} > /c.txt")}
    first = daemon.build(ctx, {"t": f"cache-{uniq}"})
    assert_ok(first)
    assert "Using cache" not in first.text
    second = daemon.build(ctx, {"t": f"cache-{uniq}"})
    assert_ok(second)
    assert any(s.startswith("--> Using cache ") for s in second.streams), second.describe()
    assert second.aux_ids == first.aux_ids
    assert second.final_id == first.final_id == daemon.image_id(lib_tag(f"cache-{uniq}"))


def test_nocache_rebuild_runs_every_step_again(daemon, uniq):
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN echo nc-{uniq} > /c.txt")}
    assert_ok(daemon.build(ctx, {"t": f"nc-{uniq}"}))
    r = daemon.build(ctx, {"t": f"nc-{uniq}", "nocache": "1"})
    assert_ok(r)
    assert "Using cache" not in r.text, r.describe()
    assert daemon.image_file(lib_tag(f"nc-{uniq}"), "/c.txt") == f"nc-{uniq}\n".encode()


@pytest.mark.parametrize("value,expect_cache", [
    ("1", False), ("true", False), ("True", False),
    ("0", True), ("false", True), ("False", True),
])
def test_booleans_accept_docker_and_python_spellings(daemon, uniq, value, expect_cache):
    """docker sends 1/0, docker-py sends True/False: nocache=<value> decides
    whether the warm cache is used."""
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo bool-warm > /b.txt")}
    assert_ok(daemon.build(ctx, {"t": "bool-warm"}))
    r = daemon.build(ctx, {"t": f"bool-{uniq}", "nocache": value})
    assert_ok(r)
    assert ("Using cache" in r.text) == expect_cache, r.describe()
    assert daemon.image_file(lib_tag(f"bool-{uniq}"), "/b.txt") == b"bool-warm\n"


def test_quiet_build_streams_only_the_image_id(daemon, uniq):
    """q=1 hides the step output; the client still learns the ID."""
    name = f"quiet-{uniq}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN echo quiet-{uniq} > /q.txt")}
    r = daemon.build(ctx, {"t": name, "q": "1"})
    assert_ok(r)
    image_id = daemon.image_id(lib_tag(name))
    assert "STEP" not in r.text and f"quiet-{uniq}" not in r.text, r.describe()
    assert r.streams, "q=1 must still stream the image ID"
    for s in r.streams:
        assert s.strip().removeprefix("sha256:") == image_id, r.describe()


def test_extrahosts_as_repeated_plain_values_like_docker_sends(daemon, uniq):
    """Docker sends extrahosts=host:ip once per --add-host (Podman 400s on
    that, containers/podman#17292); both entries must reach /etc/hosts."""
    name = f"hosts-{uniq}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN cat /etc/hosts > /hosts.txt")}
    r = daemon.build(ctx, [("t", name), ("nocache", "1"), ("extrahosts", "myhost:10.1.2.3"),
                           ("extrahosts", "other.example:10.9.8.7")])
    assert_ok(r)
    hosts = daemon.image_file(lib_tag(name), "/hosts.txt").decode()
    assert any(l.split() == ["10.1.2.3", "myhost"] for l in hosts.splitlines()), hosts
    assert any(l.split() == ["10.9.8.7", "other.example"] for l in hosts.splitlines()), hosts


def test_extrahosts_as_json_array_like_podman_sends(daemon, uniq):
    name = f"hostsj-{uniq}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN cat /etc/hosts > /hosts.txt")}
    r = daemon.build(ctx, {"t": name, "nocache": "1", "extrahosts": json.dumps(["jsonhost:10.4.5.6"])})
    assert_ok(r)
    hosts = daemon.image_file(lib_tag(name), "/hosts.txt").decode()
    assert any(l.split() == ["10.4.5.6", "jsonhost"] for l in hosts.splitlines()), hosts


def host_interfaces():
    with open("/proc/net/dev") as f:
        return sorted(l.split(":")[0].strip() for l in f.readlines()[2:])


NETDEV = containerfile(f"FROM {BASE_IMAGE}",
                       "RUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort > /ifaces.txt")


def test_networkmode_none_leaves_only_loopback_in_RUN(daemon, uniq):
    """`docker build --network none`: RUN sees no interface but lo."""
    name = f"netnone-{uniq}"
    r = daemon.build({"Dockerfile": NETDEV}, {"t": name, "nocache": "1", "networkmode": "none"})
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/ifaces.txt").decode().split() == ["lo"]


def test_networkmode_host_shows_the_host_interfaces_in_RUN(daemon, uniq):
    """`docker build --network host`: RUN shares the host's interfaces."""
    name = f"nethost-{uniq}"
    before = set(host_interfaces())
    r = daemon.build({"Dockerfile": NETDEV}, {"t": name, "nocache": "1", "networkmode": "host"})
    after = set(host_interfaces())
    assert_ok(r)
    seen = set(daemon.image_file(lib_tag(name), "/ifaces.txt").decode().split())
    # other users' containers may add/remove veths meanwhile: compare with
    # what was there for the whole build and what was there at some point
    assert before & after <= seen <= before | after, (seen, before, after)
    assert seen != {"lo"}


def test_ulimits_as_docker_json_objects_apply_to_RUN(daemon, uniq):
    """`docker build --ulimit nofile=513:777` sends Docker's JSON objects
    (Podman 400s on those); RUN sees soft 513 and hard 777."""
    name = f"ulimit-{uniq}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}",
                                       'RUN echo "$(ulimit -n) $(ulimit -Hn)" > /ulimit.txt')}
    r = daemon.build(ctx, {"t": name, "nocache": "1",
                           "ulimits": json.dumps([{"Name": "nofile", "Hard": 777, "Soft": 513}])})
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/ulimit.txt") == b"513 777\n"


def test_ulimits_null_as_the_docker_cli_sends_is_accepted(daemon, uniq):
    """The 20.10 CLI always sends ulimits=null, cachefrom=[] and friends."""
    name = f"cliq-{uniq}"
    params = ("buildargs=%7B%7D&cachefrom=%5B%5D&cgroupparent=&cpuperiod=0&cpuquota=0&cpusetcpus="
              "&cpusetmems=&cpushares=0&dockerfile=Containerfile&labels=%7B%7D&memory=0&memswap=0"
              f"&networkmode=default&rm=1&shmsize=0&t={name}&target=&ulimits=null&version=1")
    r = daemon.build(FOUR_STEP, params, headers={"X-Registry-Config": "e30="}, chunked=True)
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/hello.txt") == b"hello\n"


def test_shmsize_sets_the_size_of_dev_shm_in_RUN(daemon, uniq):
    name = f"shm-{uniq}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN grep ' /dev/shm ' /proc/mounts > /shm.txt")}
    r = daemon.build(ctx, {"t": name, "nocache": "1", "shmsize": str(32 * 1024 * 1024)})
    assert_ok(r)
    line = daemon.image_file(lib_tag(name), "/shm.txt").decode()
    assert "size=32768k" in line, line


def test_dockerignore_keeps_ignored_files_out_of_the_image(daemon, uniq):
    """`COPY . /ctx` copies the context minus what .dockerignore excludes."""
    name = f"ignore-{uniq}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY . /ctx"),
           ".dockerignore": "secret.txt\n*/*.log\n!dir/keep.log\n",
           "kept.txt": "kept\n", "secret.txt": "do not ship\n",
           "dir/ignored.log": "noise\n", "dir/keep.log": "wanted\n", "dir/data.txt": "data\n"}
    assert_ok(daemon.build(ctx, {"t": name}))
    present = daemon.image_paths(lib_tag(name), "/ctx/kept.txt", "/ctx/secret.txt", "/ctx/dir/ignored.log",
                                 "/ctx/dir/keep.log", "/ctx/dir/data.txt")
    assert present == {"/ctx/kept.txt": True, "/ctx/secret.txt": False, "/ctx/dir/ignored.log": False,
                       "/ctx/dir/keep.log": True, "/ctx/dir/data.txt": True}


def test_file_modes_and_nested_dirs_survive_the_context_upload(daemon, uniq):
    name = f"modes-{uniq}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY . /ctx",
                                       "RUN /ctx/bin/tool.sh > /tool-out.txt"),
           "bin/tool.sh": ("#!/bin/sh\necho tool ran\n", 0o755),
           "deep/a/b/c/leaf.txt": "leaf\n"}
    assert_ok(daemon.build(ctx, {"t": name}))
    assert daemon.image_file(lib_tag(name), "/tool-out.txt") == b"tool ran\n"
    assert daemon.image_file(lib_tag(name), "/ctx/deep/a/b/c/leaf.txt") == b"leaf\n"


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_compressed_context_body_is_detected_from_its_bytes(daemon, uniq, compression):
    """docker-py and podman-remote may gzip the context; the daemon sniffs
    the compression from the bytes (no Content-Encoding needed)."""
    name = f"comp-{compression}-{uniq}"
    body = lib.tar_context(FOUR_STEP, compression)
    r = daemon.build(body=body, params={"t": name, "dockerfile": "Containerfile"})
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/file.txt") == b"file content\n"


@pytest.mark.parametrize("headers", [
    {"Content-Type": "application/tar", "X-Registry-Config": "e30="},             # docker-py / compose
    {"Content-Type": "application/x-tar", "X-Registry-Config": "bnVsbA=="},      # CLI sends base64("null")
    {"Content-Type": "application/x-tar", "Content-Encoding": "gzip"},           # docker-py gzip=True
])
def test_client_header_variants_are_accepted(daemon, uniq, headers):
    name = f"hdr-{uniq}"
    gz = headers.get("Content-Encoding") == "gzip"
    body = lib.tar_context(FOUR_STEP, "gz" if gz else None)
    params = "t=" + name + "&q=False&nocache=False&rm=True&forcerm=False&pull=False&dockerfile=Containerfile"
    r = daemon.build(body=body, params=params, headers=headers)
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/hello.txt") == b"hello\n"


def test_chunked_request_body_like_the_docker_cli(daemon, uniq):
    """The docker CLI streams the context with Transfer-Encoding: chunked."""
    name = f"chunked-{uniq}"
    ctx = dict(FOUR_STEP)
    ctx["blob.bin"] = random.Random(7).randbytes(300_000)
    r = daemon.build(ctx, {"t": name, "dockerfile": "Containerfile"}, chunked=True)
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/file.txt") == b"file content\n"


# --------------------------------------------------------------------------
# remote= contexts (Docker honours these on /build; Podman ignores them)

REMOTE_CTX = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY payload.txt /payload.txt"),
              "payload.txt": "came from a remote context\n"}


def test_remote_http_tarball_context(daemon, ctx_server, uniq):
    """`docker build http://host/ctx.tar.gz`: the daemon downloads the
    tarball and builds from it; the (empty) body is not used."""
    url = ctx_server.add_tarball(f"compat-{uniq}.tar.gz", REMOTE_CTX)
    name = f"remtar-{uniq}"
    r = daemon.build(body=b"", params={"t": name, "remote": url})
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/payload.txt") == b"came from a remote context\n"
    assert any(req.startswith(f"GET /compat-{uniq}.tar.gz") for req in ctx_server.requests)


def test_remote_git_repository_context(daemon, ctx_server, uniq):
    """`docker build http://host/repo.git`: the daemon clones the repo."""
    url = ctx_server.add_git_repo(f"compat-{uniq}.git", REMOTE_CTX)
    name = f"remgit-{uniq}"
    r = daemon.build(body=b"", params={"t": name, "remote": url})
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/payload.txt") == b"came from a remote context\n"


def test_remote_plain_dockerfile_url(daemon, ctx_server, uniq):
    """`docker build http://host/Dockerfile`: a remote text file is the
    Dockerfile of an otherwise empty context."""
    path = f"plain-{uniq}/Dockerfile"
    (lib.Path(ctx_server.root) / f"plain-{uniq}").mkdir()
    (lib.Path(ctx_server.root) / path).write_text(
        containerfile(f"FROM {BASE_IMAGE}", f"RUN echo plain-{uniq} > /plain.txt"))
    name = f"remdf-{uniq}"
    r = daemon.build(body=b"", params={"t": name, "remote": ctx_server.url(path)})
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/plain.txt") == f"plain-{uniq}\n".encode()


# --------------------------------------------------------------------------
# Stream fidelity and HTTP behaviour under real use


def test_RUN_output_with_unicode_quotes_and_backslashes_arrives_intact(daemon, uniq):
    """What RUN prints (stdout and stderr) reaches the client byte for byte,
    correctly JSON-escaped."""
    text = 'héllo → "quoted" \\back\\slash\ttab ✓'
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY say.txt /say.txt",
                                       "RUN cat /say.txt && echo on-stderr-" + uniq + " >&2"),
           "say.txt": text + "\n"}
    r = daemon.build(ctx, {"t": f"utf8-{uniq}", "nocache": "1"})
    assert_ok(r)
    assert text + "\n" in r.text, r.describe()
    assert f"on-stderr-{uniq}\n" in r.text, r.describe()


def test_large_RUN_output_arrives_complete_and_in_order(daemon, uniq):
    """30000 lines of RUN output (≈170 KB) all reach the client, in order."""
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN echo start-{uniq} && seq 1 30000")}
    r = daemon.build(ctx, {"t": f"bigout-{uniq}", "nocache": "1"})
    assert_ok(r)
    text = r.text
    start = text.index(f"start-{uniq}\n") + len(f"start-{uniq}\n")
    numbers = text[start:].split("\n")[:30000]
    assert numbers == [str(i) for i in range(1, 30001)]


def test_two_builds_in_parallel_both_complete_with_their_own_content(daemon, uniq):
    import threading
    results = {}

    def build(which):
        ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN sleep 1 && echo {which}-{uniq} > /who")}
        results[which] = daemon.build(ctx, {"t": f"par-{which}-{uniq}", "nocache": "1"})

    threads = [threading.Thread(target=build, args=(w,)) for w in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(lib.scaled(120))
    for which in ("left", "right"):
        assert_ok(results[which])
        assert daemon.image_file(lib_tag(f"par-{which}-{uniq}"), "/who") == f"{which}-{uniq}\n".encode()


def test_connection_is_reusable_after_a_build_stream(daemon, uniq):
    """docker-py keeps its connection: after a complete build stream the
    same connection answers the next request."""
    conn = daemon.connection()
    try:
        conn.request("POST", lib.with_query(lib.COMPAT_BUILD, {"t": f"reuse-{uniq}", "dockerfile": "Containerfile"}),
                     body=lib.tar_context(FOUR_STEP), headers={"Content-Type": "application/x-tar"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        assert b'"aux"' in body
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"OK")
    finally:
        conn.close()


@pytest.mark.parametrize("cache_from,warned", [
    # what `docker build --cache-from` sends in BuildKit mode (was: "invalid repo")
    ("type=registry,ref=127.0.0.1:1/nowhere/cache", False),
    # a plain image ref with a tag (was: "repository must contain neither a tag nor digest")
    (BASE_IMAGE, False),
    # caches buildah cannot import: a warning, and the build goes on
    ("type=local,src=/tmp/cache-on-the-client", True),
    ("type=gha", True),
])
def test_cachefrom_in_every_form_docker_sends_builds(daemon, uniq, cache_from, warned):
    name = f"cachefrom-{uniq}"
    r = daemon.build({"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN echo {uniq} > /cf")},
                     {"t": name, "cachefrom": json.dumps([cache_from])})
    assert_ok(r)
    assert daemon.image_file(lib_tag(name), "/cf") == f"{uniq}\n".encode()
    warnings = [s for s in r.streams if s.startswith("WARNING:") and "--cache-from" in s]
    assert bool(warnings) == warned, r.streams
    if warned:
        assert cache_from in warnings[0] and "building without it" in warnings[0], warnings
