"""Multi-platform Dockerfile builds (issue #15 item 3), through the podsolve
CLI (POST /solve) and the docker 20.10 CLI in BuildKit mode (/build?version=2).

A build for several platforms whose stages need no emulation makes a
manifest list with one image per platform, each really for its platform
(buildah 1.28's layer cache alone would hand a cached linux/amd64 stage
FROM scratch to linux/arm64).  A build that would RUN foreign programs
without a qemu-user binfmt handler fails before anything runs, naming what
is missing; a base image in storage for another platform says so; and a
failed multi-platform build tags nothing.
"""

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, containerfile
from test_cli import explain, podsolve

PLATFORMS = "linux/amd64,linux/arm64"

SCRATCH = {
    "Dockerfile": containerfile("FROM scratch", "COPY hello.txt /hello.txt"),
    "hello.txt": "hello from every platform\n",
}

CROSS = {
    "Dockerfile": containerfile(
        f"FROM --platform=$BUILDPLATFORM {BASE_IMAGE} AS build",
        "ARG TARGETARCH",
        "RUN echo \"for $TARGETARCH\" > /out",
        "FROM scratch",
        "COPY --from=build /out /out"),
}


def host_platform():
    machine = os.uname().machine
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def foreign_platform():
    return "linux/arm64" if host_platform() != "linux/arm64" else "linux/amd64"


def qemu_registered(platform):
    names = {"linux/arm64": "qemu-aarch64", "linux/amd64": "qemu-x86_64"}
    return Path("/proc/sys/fs/binfmt_misc", names[platform]).exists()


def test_scratch_build_for_two_platforms_is_a_manifest_list_of_real_images(daemon, tmp_path, uniq):
    ctx = lib.make_context(tmp_path / "ctx", SCRATCH)
    # The host's image first, so buildah's cache holds a linux/amd64 stage
    # FROM scratch that it would otherwise reuse for linux/arm64.
    single = f"localhost/mp-single-{uniq}"
    r = podsolve(daemon, "build", "--progress", "plain", "-t", single, ctx)
    assert r.returncode == 0, explain(r, daemon)
    name = f"localhost/mp-{uniq}:1"
    r = podsolve(daemon, "build", "--progress", "plain", "--platform", PLATFORMS, "-t", name, ctx)
    assert r.returncode == 0, explain(r, daemon)
    assert "[linux/arm64 2/2] COPY hello.txt /hello.txt" in r.out + r.err, r.out + r.err
    assert "not consumed" not in r.out + r.err
    doc = json.loads(daemon.buildah("manifest", "inspect", name).stdout)
    plats = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in doc["manifests"])
    assert plats == ["linux/amd64", "linux/arm64"], doc
    # The whole list as an OCI layout: one index with both images.
    out = tmp_path / "mp.oci"
    r = podsolve(daemon, "build", "--progress", "plain", "--platform", PLATFORMS, "-o", f"type=oci,dest={out}", ctx)
    assert r.returncode == 0, explain(r, daemon)
    with tarfile.open(out) as tf:
        index = json.load(tf.extractfile("index.json"))
        inner = index["manifests"][0]
        assert inner["mediaType"] == "application/vnd.oci.image.index.v1+json", index
        blob = json.load(tf.extractfile("blobs/" + inner["digest"].replace(":", "/")))
        seen = {}
        for m in blob["manifests"]:
            man = json.load(tf.extractfile("blobs/" + m["digest"].replace(":", "/")))
            cfg = json.load(tf.extractfile("blobs/" + man["config"]["digest"].replace(":", "/")))
            seen[m["platform"]["architecture"]] = cfg["architecture"]
            # Its one layer holds the file.
            with tarfile.open(fileobj=tf.extractfile("blobs/" + man["layers"][0]["digest"].replace(":", "/"))) as layer:
                assert layer.extractfile("hello.txt").read() == SCRATCH["hello.txt"].encode()
        assert seen == {"amd64": "amd64", "arm64": "arm64"}, seen


def test_cross_compiling_stage_writes_one_directory_per_platform(daemon, tmp_path, uniq):
    ctx = lib.make_context(tmp_path / "ctx", CROSS)
    dest = tmp_path / "out"
    tar = tmp_path / "out.tar"
    name = f"localhost/mp-cross-{uniq}"
    r = podsolve(daemon, "build", "--progress", "plain", "--platform", PLATFORMS, "-t", name,
                 "-o", f"type=local,dest={dest}", "-o", f"type=tar,dest={tar}", ctx)
    assert r.returncode == 0, explain(r, daemon)
    # FROM --platform=$BUILDPLATFORM ran on the host for each target.
    assert (dest / "linux_amd64" / "out").read_text() == "for amd64\n"
    assert (dest / "linux_arm64" / "out").read_text() == "for arm64\n"
    with tarfile.open(tar) as tf:
        assert tf.extractfile("linux_arm64/out").read() == b"for arm64\n"
        assert tf.extractfile("linux_amd64/out").read() == b"for amd64\n"
    doc = json.loads(daemon.buildah("manifest", "inspect", name).stdout)
    assert sorted(m["platform"]["architecture"] for m in doc["manifests"]) == ["amd64", "arm64"]


def test_run_for_a_foreign_platform_without_qemu_fails_before_it_starts_and_tags_nothing(daemon, tmp_path, uniq):
    foreign = foreign_platform()
    if qemu_registered(foreign):
        pytest.skip(f"a qemu-user handler for {foreign} is registered: the RUN would run")
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", "RUN echo ran > /ran")})
    name = f"localhost/mp-run-{uniq}"
    # The name exists already: a failed build must leave it as it was.
    daemon.buildah("tag", BASE_IMAGE, name)
    before = daemon.image_id(name)
    r = podsolve(daemon, "build", "--progress", "plain", "--platform", f"{host_platform()},{foreign}", "-t", name, ctx)
    assert r.returncode != 0, explain(r, daemon)
    text = r.out + r.err
    assert f"Dockerfile:2: RUN in stage 0 runs {foreign} programs" in text, text
    assert "qemu-user" in text and "binfmt" in text, text
    # Before it starts: no step ran, not even the host platform's.
    assert "RUN echo ran" not in text, text
    assert daemon.image_id(name) == before


def test_failed_platform_leaves_no_tag_and_names_the_base_image_mismatch(daemon, tmp_path, uniq):
    """The host's platform builds, the other's base image is in storage for
    the host only (and cannot be pulled here): nothing is tagged, and the
    error says what storage has, not only what the registry said."""
    foreign = foreign_platform()
    ctx = lib.make_context(tmp_path / "ctx", {
        "Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY f /f"), "f": "x\n"})
    name = f"localhost/mp-half-{uniq}"
    r = podsolve(daemon, "build", "--progress", "plain", "--platform", f"{host_platform()},{foreign}", "-t", name, ctx)
    assert r.returncode != 0, explain(r, daemon)
    text = r.out + r.err
    assert f"FROM {BASE_IMAGE} for {foreign}: the image {BASE_IMAGE} in storage is {host_platform()} only" in text, text
    assert not daemon.image_exists(name)
    lists = daemon.buildah("images", "--format", "{{.Name}}").stdout
    assert "podsolve-platforms-" not in lists


def test_docker_exporter_refuses_several_platforms_before_building(daemon, tmp_path):
    ctx = lib.make_context(tmp_path / "ctx", SCRATCH)
    r = podsolve(daemon, "build", "--progress", "plain", "--platform", PLATFORMS,
                 "-o", f"type=docker,dest={tmp_path / 'd.tar'}", ctx)
    assert r.returncode != 0
    assert "type=docker cannot hold the 2 platforms" in r.err, explain(r, daemon)
    assert not (tmp_path / "d.tar").exists()


def test_docker_cli_buildkit_mode_builds_a_manifest_list(daemon, docker_cli, tmp_path, uniq):
    ctx = lib.make_context(tmp_path / "ctx", CROSS)
    name = f"localhost/mp-docker-{uniq}"
    env = daemon.env()
    env["DOCKER_HOST"] = f"unix://{daemon.sock}"
    env["DOCKER_BUILDKIT"] = "1"
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
    r = subprocess.run([docker_cli, "build", "--progress=plain", "--platform", PLATFORMS, "-t", name, "."],
                       cwd=ctx, env=env, capture_output=True, text=True, timeout=lib.scaled(240))
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{daemon.log_tail(3000)}"
    assert "[linux/arm64 stage-1 2/2] COPY --from=build /out /out" in r.stderr, r.stderr
    doc = json.loads(daemon.buildah("manifest", "inspect", name).stdout)
    assert sorted(m["platform"]["architecture"] for m in doc["manifests"]) == ["amd64", "arm64"]


def test_buildx_docker_driver_builds_a_manifest_list_over_grpc(daemon, go_clients, tmp_path, uniq):
    """docker buildx (docker driver: POST /grpc, the docker 28 CLI's way to
    build) with --platform for two: one list in podsolve's store, each entry
    an image really built for its platform, the progress named per platform."""
    ctx = lib.make_context(tmp_path / "ctx", CROSS)
    name = f"localhost/mp-buildx-{uniq}:1"
    r = subprocess.run([go_clients.docker, "buildx", "build", "--progress", "plain", "--platform", PLATFORMS,
                        "-t", name, str(ctx)], env=go_clients.env(daemon), capture_output=True, text=True,
                       timeout=lib.scaled(300))
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{daemon.log_tail(3000)}"
    assert "[linux/arm64 stage-1 2/2] COPY --from=build /out /out" in r.stderr, r.stderr
    doc = json.loads(daemon.buildah("manifest", "inspect", name).stdout)
    by_arch = {m["platform"]["architecture"]: m["digest"] for m in doc["manifests"]}
    assert sorted(by_arch) == ["amd64", "arm64"], doc
    for arch, digest in by_arch.items():
        cfg = json.loads(daemon.buildah("inspect", "--type", "image", f"{name.rsplit(':', 1)[0]}@{digest}").stdout)
        assert cfg["OCIv1"]["architecture"] == arch, cfg["OCIv1"]
        assert daemon.image_file(f"{name.rsplit(':', 1)[0]}@{digest}", "/out").decode() == f"for {arch}\n"
