"""The real BuildKit clients over `--buildkit-listen tcp://127.0.0.1:PORT`
with mutual TLS, configured as for buildkitd `--addr tcp://…
--tlscert --tlskey --tlscacert`: buildctl v0.32.2 with --tlscacert,
--tlscert, --tlskey, and buildx v0.36.1's remote driver with
`--driver-opt cacert=…,cert=…,key=…`.  Each test checks what the user
gets: the worker list, the image in containers-storage.  (The refusals and
the misbehaving peers are in endpoints/test_grpc_tls.py.)
"""

import functools
import re
import subprocess

import pytest

import podsolve_testlib as lib
from conftest import _start_daemon, _stop_daemon
from podsolve_testlib import BASE_IMAGE, containerfile

run = functools.partial(lib.run, timeout=180)
explain = lib.explain

CTX = {
    "Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}",
        "ARG WHO=nobody",
        'RUN echo "built over TLS by $WHO" > /who',
        "COPY data.txt /data.txt"),
    "data.txt": "context over TLS\n",
}


@pytest.fixture(scope="module")
def tls_bkd(pki):
    """A podsolved with --buildkit-listen tcp:// and mutual TLS (its own
    storage; module-wide); .addr is tcp://127.0.0.1:PORT."""
    port = lib.free_port()
    d = _start_daemon(["--buildkit-listen", f"tcp://127.0.0.1:{port}",
                       "--buildkit-tlscert", str(pki / "server.pem"), "--buildkit-tlskey", str(pki / "server-key.pem"),
                       "--buildkit-tlscacert", str(pki / "ca.pem")], prefix="podsolve-it-bktls-")
    d.addr = f"tcp://127.0.0.1:{port}"
    line = f"serving BuildKit's gRPC API on {d.addr}"
    assert lib.wait_for(lambda: line in d.log_tail(200000), 20), d.log_tail()
    yield d
    problem = _stop_daemon(d)
    assert problem is None, problem


def buildctl(clients, d, pki, *args, cwd=None, cert="client"):
    tls = ["--tlscacert", str(pki / "ca.pem")]
    if cert:
        tls += ["--tlscert", str(pki / f"{cert}.pem"), "--tlskey", str(pki / f"{cert}-key.pem")]
    return run([clients.buildctl, "--addr", d.addr, *tls, *args], clients.env(d), cwd=cwd)


def test_buildctl_debug_workers_over_mutual_tls(tls_bkd, go_clients, pki):
    """`buildctl --addr tcp://… --tlscacert --tlscert --tlskey debug
    workers` lists the one worker, as over unix://."""
    r = buildctl(go_clients, tls_bkd, pki, "debug", "workers")
    assert r.returncode == 0, explain(r, tls_bkd)
    rows = [line.split() for line in r.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 1 and rows[0][-1] == "linux/amd64", r.stdout


def test_buildctl_without_a_client_certificate_is_refused(tls_bkd, go_clients, pki):
    """The CA alone is not enough: buildctl fails with TLS's own reason
    ("tls: certificate required": the daemon lets the alert arrive before
    it closes) and the daemon goes on serving."""
    r = buildctl(go_clients, tls_bkd, pki, "debug", "workers", cert=None)
    assert r.returncode != 0, explain(r, tls_bkd)
    assert "tls: certificate required" in r.stderr, explain(r, tls_bkd)
    assert buildctl(go_clients, tls_bkd, pki, "debug", "workers").returncode == 0


def test_buildctl_dockerfile_build_over_tls_puts_the_image_in_storage(tls_bkd, go_clients, pki, tmp_path, uniq):
    """`buildctl build --frontend dockerfile.v0 --local context=. --local
    dockerfile=. --output type=image,name=…` over TLS: the context goes up
    over the session (Control.Session through TLS), the image is in the
    daemon's storage with the build arg and the copied file."""
    ctx = lib.make_context(tmp_path / "ctx", CTX)
    name = f"docker.io/library/bctl-tls-{uniq}:latest"
    r = buildctl(go_clients, tls_bkd, pki, "build", "--progress=plain", "--frontend", "dockerfile.v0",
                 "--local", "context=.", "--local", "dockerfile=.", "--opt", f"build-arg:WHO={uniq}",
                 "--output", f"type=image,name={name}", cwd=ctx)
    assert r.returncode == 0, explain(r, tls_bkd)
    assert tls_bkd.image_file(name, "/who") == f"built over TLS by {uniq}\n".encode()
    assert tls_bkd.image_file(name, "/data.txt") == b"context over TLS\n"


def test_buildx_remote_driver_over_mutual_tls(tls_bkd, go_clients, pki, tmp_path, uniq):
    """`docker buildx create --driver remote --driver-opt
    cacert=…,cert=…,key=… tcp://127.0.0.1:PORT`: inspect --bootstrap shows
    it running with podsolved's version, and `buildx build --builder NAME
    --output type=image,name=…` puts the image in storage."""
    env = go_clients.env(tls_bkd)
    builder = f"podsolve-tls-{uniq}"
    opts = f"cacert={pki / 'ca.pem'},cert={pki / 'client.pem'},key={pki / 'client-key.pem'}"
    r = run([go_clients.docker, "buildx", "create", "--name", builder, "--driver", "remote", "--driver-opt", opts,
             tls_bkd.addr], env)
    assert r.returncode == 0, explain(r, tls_bkd)
    try:
        r = run([go_clients.docker, "buildx", "inspect", "--bootstrap", builder], env)
        assert r.returncode == 0, explain(r, tls_bkd)
        assert re.search(r"^Status:\s+running$", r.stdout, re.M), r.stdout
        version = subprocess.run([lib.podsolved_path(), "--version"], capture_output=True,
                                 text=True).stdout.split()[-1]
        assert re.search(rf"^BuildKit version:\s+{re.escape(version)}$", r.stdout, re.M), r.stdout

        ctx = lib.make_context(tmp_path / "ctx", CTX)
        name = lib.image_ref(f"bx-tls-{uniq}")
        r = run([go_clients.docker, "buildx", "build", "--builder", builder, "--progress=plain",
                 "--build-arg", f"WHO=buildx-{uniq}", "--output", f"type=image,name={name}", "."], env, cwd=ctx)
        assert r.returncode == 0, explain(r, tls_bkd)
        assert tls_bkd.image_file(name, "/who") == f"built over TLS by buildx-{uniq}\n".encode()
    finally:
        run([go_clients.docker, "buildx", "rm", builder], env)
