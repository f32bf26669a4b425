"""The gateway frontend images (conftest's `frontend_images`): what a
`# syntax=` line or `frontend: gateway.v0` with `source=` makes podsolved
run.  These tests check the images themselves, in the daemon's storage, and
that our example frontend, run by hand, says what it is and exits instead
of hanging.  The builds through them are tested where the gateway is."""

import hashlib
import os
import re
import subprocess
import time

import podsolve_testlib as lib

# The labels of the release stage of BuildKit v0.32.2's
# frontend/dockerfile/cmd/dockerfile-frontend/Dockerfile, byte for byte.
DOCKERFILE_FRONTEND_LABELS = {
    "moby.buildkit.frontend.network.none": "true",
    "moby.buildkit.frontend.caps": "moby.buildkit.frontend.inputs,moby.buildkit.frontend.subrequests,"
                                   "moby.buildkit.frontend.contexts,moby.buildkit.frontend.gitquerystring",
}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def no_buildkit_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("BUILDKIT_")}


def test_dockerfile_frontend_image_is_shaped_like_docker_dockerfile_1(daemon, frontend_images):
    img = daemon.image_inspect(frontend_images.dockerfile)
    config = img["OCIv1"]["config"]
    assert config["Entrypoint"] == ["/bin/dockerfile-frontend"], config
    assert not config.get("Cmd"), config
    assert config.get("Labels") == DOCKERFILE_FRONTEND_LABELS, config
    assert daemon.image_manifest_type(frontend_images.dockerfile) == OCI_MANIFEST
    # :1, :1.N and :1.N.M (N from BuildKit's frontend/dockerfile/version), one image
    tags = frontend_images.dockerfile_tags
    assert lib.DOCKERFILE_FRONTEND_IMAGE in tags, tags
    assert any(re.fullmatch(r"docker\.io/docker/dockerfile:1\.\d+", t) for t in tags), tags
    assert any(re.fullmatch(r"docker\.io/docker/dockerfile:1\.\d+\.\d+", t) for t in tags), tags
    assert {daemon.image_id(t) for t in tags} == {img["FromImageID"]}
    # the binary inside is the one get-go-clients built
    inside = daemon.image_file(frontend_images.dockerfile, "/bin/dockerfile-frontend")
    assert hashlib.sha256(inside).hexdigest() == sha256_file(frontend_images.dockerfile_binary)


def test_example_frontend_image_runs_the_example_with_no_network(daemon, frontend_images):
    config = daemon.image_inspect(frontend_images.example)["OCIv1"]["config"]
    assert config["Entrypoint"] == ["/bin/podsolve-example-frontend"], config
    assert not config.get("Cmd"), config
    labels = config.get("Labels") or {}
    assert labels.get("moby.buildkit.frontend.network.none") == "true", labels
    assert daemon.image_manifest_type(frontend_images.example) == OCI_MANIFEST
    inside = daemon.image_file(frontend_images.example, "/bin/podsolve-example-frontend")
    assert hashlib.sha256(inside).hexdigest() == sha256_file(frontend_images.example_binary)
    # the version label is the hash of the sources the binary was built from
    version = subprocess.run([frontend_images.example_binary, "-version"], capture_output=True, text=True,
                             timeout=lib.scaled(10)).stdout.split()
    assert version == ["podsolve-example-frontend", labels.get("org.opencontainers.image.version")], version


def test_example_frontend_run_by_hand_exits_at_once_saying_it_needs_a_builder(frontend_images):
    """No BUILDKIT_* environment, stdin /dev/null: exit status 2 with a
    message naming the variables, nothing on stdout (where the bridge would
    be), well before gRPC's 15 s ping timeout."""
    start = time.monotonic()
    r = subprocess.run([frontend_images.example_binary], stdin=subprocess.DEVNULL, capture_output=True,
                       env=no_buildkit_env(), timeout=lib.scaled(10))
    elapsed = time.monotonic() - start
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, (r.returncode, err)
    assert "not started by a BuildKit gateway" in err and "BUILDKIT_SESSION_ID" in err, err
    assert "gateway.v0" in err and "syntax=" in err, err
    assert r.stdout == b""
    assert elapsed < lib.scaled(5), elapsed


def test_example_frontend_whose_builder_closes_stdin_exits_with_an_error(frontend_images):
    """With the gateway's environment but a pipe that is already at EOF
    (a builder that went away): an error naming the bridge, exit status 1,
    no hang."""
    env = no_buildkit_env()
    env.update(BUILDKIT_SESSION_ID="gone", BUILDKIT_WORKERS="[]", BUILDKIT_EXPORTEDPRODUCT="podsolve-test")
    start = time.monotonic()
    r = subprocess.run([frontend_images.example_binary], input=b"", capture_output=True, env=env,
                       timeout=lib.scaled(30))
    elapsed = time.monotonic() - start
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1, (r.returncode, err)
    assert "failed to initialize client from environment" in err, err
    assert elapsed < lib.scaled(20), elapsed
