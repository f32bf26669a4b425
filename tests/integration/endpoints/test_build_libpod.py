"""POST /v4.3.1/libpod/build, the endpoint podman-remote uses (capture K):
Containerfile auto-detection, localhost/ tags, no aux line, outputformat and
layers, remote= contexts, .containerignore."""

import json

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, HEX64, LIBPOD_BUILD, containerfile

OCI = "application/vnd.oci.image.manifest.v1+json"
DOCKER = "application/vnd.docker.distribution.manifest.v2+json"


def local_tag(name):
    """Where the libpod endpoint stores `t=name`."""
    return f"localhost/{name}:latest"


def assert_ok(r):
    assert r.status == 200, r.describe()
    assert r.error is None, r.describe()


def test_libpod_build_prefers_Containerfile_and_ends_with_the_bare_id(daemon, uniq):
    """With both files and no dockerfile=, libpod reads Containerfile; the
    stream has no aux record and its last line is the 64-hex ID; the tag
    is stored under localhost/."""
    name = f"lp-{uniq}"
    ctx = {"Containerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo from-containerfile > /which"),
           "Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo from-dockerfile > /which")}
    r = daemon.build(ctx, {"t": name}, endpoint=LIBPOD_BUILD)
    assert_ok(r)
    assert r.streams[0] == f"STEP 1/2: FROM {BASE_IMAGE}\n"
    assert r.aux_ids == [], "libpod streams carry no aux record"
    image_id = daemon.image_id(local_tag(name))
    assert r.events[-1] == {"stream": image_id + "\n"}
    assert f"Successfully tagged {local_tag(name)}\n" in r.streams
    assert daemon.image_file(local_tag(name), "/which") == b"from-containerfile\n"
    assert not daemon.image_exists(f"docker.io/library/{name}:latest")


def test_libpod_build_falls_back_to_Dockerfile(daemon, uniq):
    name = f"lpdf-{uniq}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo from-dockerfile > /which")}
    assert_ok(daemon.build(ctx, {"t": name}, endpoint=LIBPOD_BUILD))
    assert daemon.image_file(local_tag(name), "/which") == b"from-dockerfile\n"


def test_libpod_dockerfile_param_accepts_a_json_array(daemon, uniq):
    """podman-remote sends dockerfile=["Containerfile"] (a JSON list)."""
    name = f"lparr-{uniq}"
    ctx = {"build/Special.cf": containerfile(f"FROM {BASE_IMAGE}", "RUN echo special > /which")}
    r = daemon.build(ctx, {"t": name, "dockerfile": json.dumps(["build/Special.cf"])}, endpoint=LIBPOD_BUILD)
    assert_ok(r)
    assert daemon.image_file(local_tag(name), "/which") == b"special\n"


@pytest.mark.parametrize("fmt", [OCI, DOCKER])
def test_outputformat_selects_the_stored_manifest_type(daemon, uniq, fmt):
    name = f"lpfmt-{uniq}"
    ctx = {"Containerfile": containerfile(f"FROM {BASE_IMAGE}", "LABEL fmt=test")}
    assert_ok(daemon.build(ctx, {"t": name, "outputformat": fmt}, endpoint=LIBPOD_BUILD))
    assert daemon.image_manifest_type(local_tag(name)) == fmt


def test_layers_1_reuses_cached_steps_on_rebuild(daemon, uniq):
    ctx = {"Containerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN echo layers-{uniq} > /l.txt")}
    params = {"t": f"lplay-{uniq}", "layers": "1", "outputformat": OCI}
    first = daemon.build(ctx, params, endpoint=LIBPOD_BUILD)
    assert_ok(first)
    second = daemon.build(ctx, params, endpoint=LIBPOD_BUILD)
    assert_ok(second)
    assert any(s.startswith("--> Using cache ") for s in second.streams), second.describe()
    assert second.final_id == first.final_id


def test_layers_0_never_uses_the_cache(daemon, uniq):
    """libpod defaults to layers=false: nothing is reused, even on an
    identical rebuild (buildah without --layers)."""
    ctx = {"Containerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN echo nolayers-{uniq} > /l.txt")}
    for _ in range(2):
        r = daemon.build(ctx, {"t": f"lpnol-{uniq}", "layers": "0"}, endpoint=LIBPOD_BUILD)
        assert_ok(r)
        assert "Using cache" not in r.text, r.describe()
    assert daemon.image_file(local_tag(f"lpnol-{uniq}"), "/l.txt") == f"nolayers-{uniq}\n".encode()


def test_podman_remote_query_string_is_understood(daemon, uniq):
    """The exact parameter set podman-remote 4.3.1 sends (capture K), with
    a gzip-compressed chunked body: the build succeeds and is tagged."""
    name = f"lpremote-{uniq}"
    idmap = {"HostUIDMapping": True, "HostGIDMapping": True, "UIDMap": [], "GIDMap": [], "AutoUserNs": False,
             "AutoUserNsOpts": {"Size": 0, "InitialSize": 0, "PasswdFile": "", "GroupFile": "",
                                "AdditionalUIDMappings": None, "AdditionalGIDMappings": None}}
    params = [("dockerfile", '["Containerfile"]'), ("forcerm", "1"), ("identitylabel", "1"),
              ("idmappingoptions", json.dumps(idmap, separators=(",", ":"))), ("isolation", "1"),
              ("jobs", "1"), ("layers", "1"), ("networkmode", "0"),
              ("nsoptions", '[{"Name":"user","Host":true,"Path":""}]'), ("omithistory", "0"),
              ("output", name), ("outputformat", OCI), ("platform", "/"), ("pullpolicy", "missing"),
              ("rm", "1"), ("seccomp", "/usr/share/containers/seccomp.json"), ("shmsize", "67108864"),
              ("t", name)]
    ctx = {"Containerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo hello > /hello.txt",
                                          "COPY file.txt /file.txt", 'CMD ["cat", "/file.txt"]'),
           "file.txt": "remote file\n"}
    body = lib.tar_context(ctx, "gz")
    r = daemon.build(body=body, params=params, endpoint=LIBPOD_BUILD,
                     headers={"Content-Type": None}, chunked=True)   # podman-remote sends none
    assert_ok(r)
    assert daemon.image_file(local_tag(name), "/hello.txt") == b"hello\n"
    assert daemon.image_file(local_tag(name), "/file.txt") == b"remote file\n"
    assert HEX64.match(r.streams[-1].strip())


def test_ulimits_as_podman_strings_on_libpod(daemon, uniq):
    name = f"lpul-{uniq}"
    ctx = {"Containerfile": containerfile(f"FROM {BASE_IMAGE}",
                                          'RUN echo "$(ulimit -n) $(ulimit -Hn)" > /ulimit.txt')}
    r = daemon.build(ctx, {"t": name, "ulimits": json.dumps(["nofile=600:700"])}, endpoint=LIBPOD_BUILD)
    assert_ok(r)
    assert daemon.image_file(local_tag(name), "/ulimit.txt") == b"600 700\n"


def test_containerignore_is_honoured_on_libpod(daemon, uniq):
    name = f"lpign-{uniq}"
    ctx = {"Containerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY . /ctx"),
           ".containerignore": "*.tmp\n", "keep.txt": "k\n", "junk.tmp": "j\n"}
    assert_ok(daemon.build(ctx, {"t": name}, endpoint=LIBPOD_BUILD))
    assert daemon.image_paths(local_tag(name), "/ctx/keep.txt", "/ctx/junk.tmp") == \
        {"/ctx/keep.txt": True, "/ctx/junk.tmp": False}


REMOTE_CTX = {"Containerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY payload.txt /payload.txt"),
              "payload.txt": "libpod remote context\n"}


def test_libpod_remote_http_tarball_context(daemon, ctx_server, uniq):
    url = ctx_server.add_tarball(f"libpod-{uniq}.tar.gz", REMOTE_CTX)
    name = f"lpremtar-{uniq}"
    assert_ok(daemon.build(body=b"", params={"t": name, "remote": url}, endpoint=LIBPOD_BUILD))
    assert daemon.image_file(local_tag(name), "/payload.txt") == b"libpod remote context\n"


def test_libpod_remote_git_repository_context(daemon, ctx_server, uniq):
    url = ctx_server.add_git_repo(f"libpod-{uniq}.git", REMOTE_CTX)
    name = f"lpremgit-{uniq}"
    assert_ok(daemon.build(body=b"", params={"t": name, "remote": url}, endpoint=LIBPOD_BUILD))
    assert daemon.image_file(local_tag(name), "/payload.txt") == b"libpod remote context\n"
