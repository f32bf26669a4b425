"""Replicas as one buildx builder (issue #17): two podsolved, each with its
own storage and state directory and a --buildkit-listen socket, joined by
`docker buildx create --name X --driver remote unix://A` and `docker buildx
create --append --name X --driver remote unix://B` (buildx v0.36.1), and
sharing work through one cache in a registry (Debian's docker-registry on
127.0.0.1).

What buildx does with the nodes (build/resolver/driver.go of buildx): for
each platform asked for it picks the first node whose configured platforms
(`create --platform`) match it strictly, and the first node when none does
or when no platform is asked for.  So nodes with different --platform split
a multi-platform build between them (each pushes its image by digest, and
buildx merges the list from their containerimage.descriptor responses);
nodes of the same platform do not share the load: every build goes to the
first.  What replicas share is the cache: B's first build of what A built
and exported reuses every step.
"""

import functools
import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, containerfile
from test_buildx import cache_round_trip_context, plain_steps, step_of

run = functools.partial(lib.run, timeout=300)
explain = lib.explain
image_ref = lib.image_ref

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


@pytest.fixture(scope="module")
def registry():
    with lib.running_registry() as r:
        yield r


@pytest.fixture
def replicas(spawn_daemon):
    """Two replicas, each with --buildkit-listen unix://<private dir>/bk.sock
    -> [(daemon, socket address)]."""
    sockdir = Path(tempfile.mkdtemp(prefix="podsolve-mn-"))
    try:
        out = []
        for name in ("a", "b"):
            addr = f"unix://{sockdir}/{name}.sock"
            out.append((spawn_daemon("--buildkit-listen", addr), addr))
        yield out
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def docker(clients, daemon, *args, timeout=300):
    return run([clients.docker, *args], clients.env(daemon), timeout=timeout)


def make_builder(clients, daemon, name, nodes):
    """`docker buildx create --name NAME --driver remote [--platform P] ADDR`,
    then `--append` for every further (addr, platform)."""
    for i, (addr, platform) in enumerate(nodes):
        args = ["buildx", "create", "--name", name, "--driver", "remote"]
        if i:
            args.append("--append")
        if platform:
            args += ["--platform", platform]
        r = docker(clients, daemon, *args, addr)
        assert r.returncode == 0, explain(r, daemon)


def buildx(clients, daemon, ctx, *args):
    return run([clients.docker, "buildx", "build", "--progress=plain", *args, "."], clients.env(daemon), cwd=ctx,
               timeout=300)


def solves_in(daemon):
    """How many solves the replica's log shows (Control.Solve on its socket)."""
    return len(re.findall(r"Control\.Solve answered", daemon.log_path.read_text(errors="replace")))


def registry_json(registry, repo, ref):
    status, headers, body = registry.manifest(repo, ref)
    assert status == 200, (repo, ref, status, body)
    return json.loads(body), headers


def layer_files(registry, repo, manifest):
    """{path: bytes} of the files in the manifest's layers (from the registry)."""
    import io
    import tarfile
    out = {}
    for layer in manifest["layers"]:
        status, _, blob = registry.get(f"/v2/{repo}/blobs/{layer['digest']}")
        assert status == 200, layer
        with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
            for m in tf.getmembers():
                if m.isfile():
                    out[m.name.lstrip("./")] = tf.extractfile(m).read()
    return out


def test_two_replicas_split_a_two_platform_build_and_buildx_merges_the_list(replicas, go_clients, registry,
                                                                           tmp_path, uniq):
    """Node A configured for linux/amd64, node B (--append) for linux/arm64:
    `buildx build --platform linux/amd64,linux/arm64 --push` sends each
    platform to its replica (each builds and pushes its image by digest:
    the one in A's storage is amd64, B's arm64; besides the base image the
    build stage ran on, neither has an image of the other's platform),
    and the tag in the registry is a list of both, each image with the file
    its replica wrote (no RUN for the foreign platform: the RUN stage runs on
    $BUILDPLATFORM)."""
    (a, addr_a), (b, addr_b) = replicas
    builder = f"podsolve-mn-{uniq}"
    make_builder(go_clients, a, builder, [(addr_a, "linux/amd64"), (addr_b, "linux/arm64")])
    try:
        r = docker(go_clients, a, "buildx", "inspect", "--bootstrap", builder)
        assert r.returncode == 0, explain(r, a)
        assert len(re.findall(r"^Status:\s+running$", r.stdout, re.M)) == 2, r.stdout

        ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
            f"FROM --platform=$BUILDPLATFORM {BASE_IMAGE} AS build",
            "ARG TARGETARCH",
            f'RUN echo "for $TARGETARCH {uniq}" > /out',
            "FROM scratch",
            "COPY --from=build /out /out")})
        repo = f"bx/mn-{uniq}"
        name = f"{registry.host}/{repo}:v1"
        r = buildx(go_clients, a, ctx, "--builder", builder, "--platform", "linux/amd64,linux/arm64",
                   "--push", "-t", name)
        assert r.returncode == 0, explain(r, a) + "\n--- replica B ---\n" + b.log_tail()
        assert f"merging manifest list {name}" in r.stderr, r.stderr

        # The list in the registry: one image per platform, each with its file.
        index, _ = registry_json(registry, repo, "v1")
        assert index["mediaType"] in (OCI_INDEX, DOCKER_LIST), index
        by_arch = {m["platform"]["architecture"]: m for m in index["manifests"]}
        assert sorted(by_arch) == ["amd64", "arm64"], index
        for arch, desc in by_arch.items():
            manifest, _ = registry_json(registry, repo, desc["digest"])
            assert layer_files(registry, repo, manifest)["out"] == f"for {arch} {uniq}\n".encode()

        # The nodes pushed by digest: buildx asked for the repository
        # without a tag, and podsolve's images went up under the tag
        # podsolve-by-digest (buildah needs one), never :latest.
        status, _, body = registry.get(f"/v2/{repo}/tags/list")
        assert status == 200 and sorted(json.loads(body)["tags"]) == ["podsolve-by-digest", "v1"], body

        # Each replica did its own part, and only that: the image it pushed
        # by digest is in its storage (the repository's name), for its platform.
        pushed = f"{registry.host}/{repo}"
        for d, arch, other in ((a, "amd64", "arm64"), (b, "arm64", "amd64")):
            ref = f"{pushed}:latest"
            assert d.image_exists(ref), (arch, d.buildah("images").stdout)
            assert d.image_inspect(ref)["OCIv1"]["architecture"] == arch
            assert d.image_file(ref, "/out") == f"for {arch} {uniq}\n".encode()
            base = d.image_id(BASE_IMAGE)
            archs = {d.image_inspect(i)["OCIv1"].get("architecture")
                     for i in d.buildah("images", "-q", "--no-trunc").stdout.split()
                     if i.removeprefix("sha256:") != base.removeprefix("sha256:")}
            assert archs == {arch}, (arch, archs)
    finally:
        docker(go_clients, a, "buildx", "rm", builder)


def test_nodes_of_one_platform_send_every_build_to_the_first(replicas, go_clients, tmp_path, uniq):
    """Two nodes without --platform (both linux/amd64): buildx resolves every
    build to the first node that matches, so both builds land on replica A
    and replica B builds nothing (appending a replica adds no load
    balancing; a load balancer in front of the replicas does, see
    docs/scale-out.md)."""
    (a, addr_a), (b, addr_b) = replicas
    builder = f"podsolve-same-{uniq}"
    make_builder(go_clients, a, builder, [(addr_a, None), (addr_b, None)])
    try:
        b_before = solves_in(b)
        for i in range(2):
            ctx = lib.make_context(tmp_path / f"ctx{i}", {"Dockerfile": containerfile(
                f"FROM {BASE_IMAGE}", f"RUN echo {i}-{uniq} > /n")})
            name = image_ref(f"same-{i}-{uniq}")
            r = buildx(go_clients, a, ctx, "--builder", builder, "--output", f"type=image,name={name}")
            assert r.returncode == 0, explain(r, a)
            assert a.image_file(name, "/n") == f"{i}-{uniq}\n".encode()
            assert not b.image_exists(name)
        assert solves_in(b) == b_before
    finally:
        docker(go_clients, a, "buildx", "rm", builder)


def test_replica_b_reuses_every_step_replica_a_exported_to_the_shared_cache(replicas, go_clients, registry,
                                                                          tmp_path, uniq):
    """Replica A builds with --cache-to/--cache-from type=registry on the
    shared registry; replica B, with empty storage, builds the same project
    with the same flags: every step shows CACHED in buildx's plain progress,
    the RUN writing a random value did not run again, and B's image has A's
    layers (same diff IDs) and A's image ID."""
    (a, addr_a), (b, addr_b) = replicas
    base = f"{registry.host}/bx/mn-base-{uniq}:1"
    a.buildah("push", "--tls-verify=false", BASE_IMAGE, f"docker://{base}")
    ctx = cache_round_trip_context(tmp_path / "ctx", base, uniq)
    cache = f"{registry.host}/bx/mn-cache-{uniq}"
    cache_args = ["--cache-from", f"type=registry,ref={cache}", "--cache-to", f"type=registry,ref={cache},mode=max"]
    name = image_ref(f"mn-shared-{uniq}")
    builders = [f"podsolve-a-{uniq}", f"podsolve-b-{uniq}"]
    make_builder(go_clients, a, builders[0], [(addr_a, None)])
    make_builder(go_clients, a, builders[1], [(addr_b, None)])
    try:
        r = buildx(go_clients, a, ctx, "--builder", builders[0], "--output", f"type=image,name={name}", *cache_args)
        assert r.returncode == 0, explain(r, a)
        assert "CACHED" not in step_of(plain_steps(r.stderr), "RUN cat /a.txt /greeting"), r.stderr
        stamp = a.image_file(name, "/stamp")

        assert not b.image_exists(base) and not b.image_exists(name)
        r = buildx(go_clients, a, ctx, "--builder", builders[1], "--output", f"type=image,name={name}", *cache_args)
        assert r.returncode == 0, explain(r, b)
        steps = plain_steps(r.stderr)
        for title in ('RUN echo "$GREETING', "COPY a.txt /a.txt", "RUN cat /a.txt /greeting"):
            assert "CACHED" in step_of(steps, title), r.stderr
        assert b.image_file(name, "/stamp") == stamp
        layers = [d.image_inspect(name)["OCIv1"]["rootfs"]["diff_ids"] for d in (a, b)]
        assert layers[0] == layers[1], layers
        assert b.image_id(name) == a.image_id(name)
    finally:
        for builder in builders:
            docker(go_clients, a, "buildx", "rm", builder)
