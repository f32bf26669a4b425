"""Real clients against podsolved: the Docker 20.10 CLI (legacy builder),
docker-compose 1.29 (docker-py), podman-remote 4.3.1 and curl.  Each test
runs the client the way a user would and checks the image it produced."""

import functools
import json
import os
from pathlib import Path

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, containerfile

CTX4 = {
    "Containerfile": containerfile(
        f"FROM {BASE_IMAGE}",
        "RUN echo hello > /hello.txt",
        "COPY file.txt /file.txt",
        'CMD ["cat", "/file.txt"]'),
    "file.txt": "client file\n",
}


run = functools.partial(lib.run, timeout=240)
explain = lib.explain


def cli_env(daemon, docker_cli):
    env = daemon.env()
    env["DOCKER_BUILDKIT"] = "0"
    env["PATH"] = str(Path(docker_cli).parent) + os.pathsep + env.get("PATH", "")
    return env


def test_docker_cli_legacy_build_creates_the_image(daemon, docker_cli, tmp_path, uniq):
    """`DOCKER_BUILDKIT=0 docker build -t NAME -f Containerfile --iidfile F .`
    succeeds, prints Podman-style steps, writes the aux ID to the iidfile,
    and the image has the RUN output and the copied file."""
    ctx = lib.make_context(tmp_path / "ctx", CTX4)
    name = f"cli-{uniq}"
    iid = tmp_path / "iid"
    r = run([docker_cli, "build", "-t", name, "-f", "Containerfile", "--iidfile", str(iid), "."],
            cli_env(daemon, docker_cli), cwd=ctx)
    assert r.returncode == 0, explain(r, daemon)
    assert "STEP 1/4: FROM localhost/busybox:latest" in r.output
    assert f"Successfully tagged {name}" in r.output
    image = f"docker.io/library/{name}:latest"
    assert iid.read_text().strip() == "sha256:" + daemon.image_id(image)
    assert daemon.image_file(image, "/hello.txt") == b"hello\n"
    assert daemon.image_file(image, "/file.txt") == b"client file\n"


def test_docker_cli_with_dockerfile_outside_context_and_dockerignore(daemon, docker_cli, tmp_path, uniq):
    """`docker build -f ../other/Dockerfile ctx`: the CLI ships the file as
    .dockerfile.<hex>; .dockerignore is applied (by the CLI and the daemon)."""
    ctx = lib.make_context(tmp_path / "ctx", {"keep.txt": "keep\n", "skip.txt": "skip\n",
                                               ".dockerignore": "skip.txt\n"})
    other = lib.make_context(tmp_path / "other", {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}",
                                                                              "COPY . /ctx")})
    name = f"clif-{uniq}"
    r = run([docker_cli, "build", "-t", name, "-f", str(other / "Dockerfile"), str(ctx)],
            cli_env(daemon, docker_cli))
    assert r.returncode == 0, explain(r, daemon)
    image = f"docker.io/library/{name}:latest"
    assert daemon.image_paths(image, "/ctx/keep.txt", "/ctx/skip.txt") == {"/ctx/keep.txt": True,
                                                                           "/ctx/skip.txt": False}


def test_docker_cli_failing_RUN_exits_with_the_RUN_exit_code(daemon, docker_cli, tmp_path, uniq):
    """A RUN that exits 3 makes `docker build` exit 3 (from errorDetail.code)
    and shows the RUN's own output."""
    ctx = lib.make_context(tmp_path / "ctx", {"Containerfile": containerfile(
        f"FROM {BASE_IMAGE}", "RUN echo about-to-fail && exit 3")})
    r = run([docker_cli, "build", "-t", f"clifail-{uniq}", "-f", "Containerfile", "."],
            cli_env(daemon, docker_cli), cwd=ctx)
    assert r.returncode == 3, explain(r, daemon)
    assert "about-to-fail" in r.output
    assert not daemon.image_exists(f"docker.io/library/clifail-{uniq}:latest")
    assert daemon.working_containers() == []


def test_docker_cli_version_talks_to_the_daemon(daemon, docker_cli):
    """`docker version` shows the server's API version (1.41)."""
    r = run([docker_cli, "version", "--format", "{{.Server.APIVersion}}"], cli_env(daemon, docker_cli))
    assert r.returncode == 0, explain(r, daemon)
    assert r.stdout.strip() == "1.41"


def test_docker_compose_v1_build_creates_the_service_image(daemon, docker_cli, tmp_path, uniq):
    """`COMPOSE_DOCKER_CLI_BUILD=0 docker-compose build` (pure docker-py,
    capture G/J): compose finds "Successfully built" and the image named in
    docker-compose.yml exists with the right content."""
    name = f"composeapp-{uniq}"
    files = dict(CTX4)
    files["docker-compose.yml"] = (
        'version: "3"\n'
        "services:\n"
        "  app:\n"
        "    build:\n"
        "      context: .\n"
        "      dockerfile: Containerfile\n"
        f"    image: {name}:latest\n")
    ctx = lib.make_context(tmp_path / "compose", files)
    env = cli_env(daemon, docker_cli)
    env["COMPOSE_DOCKER_CLI_BUILD"] = "0"
    r = run(["docker-compose", "-p", f"proj{uniq}", "build"], env, cwd=ctx)
    assert r.returncode == 0, explain(r, daemon)
    assert "Successfully built" in r.output
    image = f"docker.io/library/{name}:latest"
    assert daemon.image_file(image, "/file.txt") == b"client file\n"
    assert daemon.image_file(image, "/hello.txt") == b"hello\n"


def test_podman_remote_build_creates_a_localhost_image(daemon, tmp_path, uniq):
    """`podman --remote --url unix://SOCK build -t NAME -f Containerfile ctx`
    pings /libpod/_ping, posts to /v4.3.1/libpod/build, and the image is
    stored as localhost/NAME."""
    ctx = lib.make_context(tmp_path / "ctx", CTX4)
    name = f"remote4-{uniq}"
    r = run(["podman", "--remote", "--url", f"unix://{daemon.sock}", "build", "-t", name,
             "-f", str(ctx / "Containerfile"), str(ctx)], daemon.env())
    assert r.returncode == 0, explain(r, daemon)
    image = f"localhost/{name}:latest"
    assert daemon.image_file(image, "/file.txt") == b"client file\n"
    assert daemon.image_id(image) in r.stdout


def test_curl_posting_a_tar_gets_the_compat_stream_and_an_image(daemon, tmp_path, uniq):
    """The README's curl example: the last lines are the aux ID, "Successfully
    built" and "Successfully tagged", and the image exists."""
    tar = tmp_path / "ctx.tar"
    tar.write_bytes(lib.tar_context(CTX4))
    name = f"curl-{uniq}"
    r = run(["curl", "-sS", "--fail-with-body", "--unix-socket", str(daemon.sock), "--data-binary", f"@{tar}",
             "-H", "Content-Type: application/x-tar",
             f"http://d/v1.41/build?t={name}&dockerfile=Containerfile"], daemon.env())
    assert r.returncode == 0, explain(r, daemon)
    events = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    image = f"docker.io/library/{name}:latest"
    image_id = daemon.image_id(image)
    assert events[-3:] == [{"aux": {"ID": "sha256:" + image_id}},
                           {"stream": f"Successfully built {image_id[:12]}\n"},
                           {"stream": f"Successfully tagged {name}\n"}]
    assert daemon.image_file(image, "/file.txt") == b"client file\n"


def test_docker_cli_quiet_build_prints_only_the_image_id(daemon, docker_cli, tmp_path, uniq):
    """`docker build -q` prints nothing but the new image's ID."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"RUN echo quiet-{uniq} > /q.txt")})
    name = f"cliq-{uniq}"
    r = run([docker_cli, "build", "-q", "-t", name, "."], cli_env(daemon, docker_cli), cwd=ctx)
    assert r.returncode == 0, explain(r, daemon)
    image_id = daemon.image_id(f"docker.io/library/{name}:latest")
    assert r.stdout.strip().removeprefix("sha256:") == image_id, explain(r, daemon)


def test_curl_with_a_context_over_1_MiB_uses_expect_100_continue(daemon, tmp_path, uniq):
    """curl sends `Expect: 100-continue` for bodies over 1 MiB; the upload
    must proceed and the big file must land in the image intact."""
    blob = os.urandom(1536 * 1024)
    files = {"Containerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY blob.bin /blob.bin"), "blob.bin": blob}
    tar = tmp_path / "ctx.tar"
    tar.write_bytes(lib.tar_context(files))
    name = f"curlbig-{uniq}"
    r = run(["curl", "-sS", "-v", "--fail-with-body", "--unix-socket", str(daemon.sock), "--data-binary",
             f"@{tar}", "-H", "Content-Type: application/x-tar",
             f"http://d/v1.41/build?t={name}&dockerfile=Containerfile"], daemon.env())
    assert r.returncode == 0, explain(r, daemon)
    assert "Expect: 100-continue" in r.stderr
    assert daemon.image_file(f"docker.io/library/{name}:latest", "/blob.bin") == blob
