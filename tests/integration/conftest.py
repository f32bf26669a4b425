"""pytest fixtures: one real podsolved per session, real buildah storage,
real clients.  See podsolve_testlib.py for the helpers and tests/README.md
for where a test goes and how to run one.

Environment:
  PODSOLVED          daemon binary (default: <repo>/server/podsolved)
  PODSOLVE_KEEP_TMP  1 = keep /var/tmp/podsolve-it-* after the run (debugging)
  PODSOLVE_IT_SANDBOX_NETWORK  bridge|host: the shared daemon's
                     --sandbox-network (host: LLB execs run as one `runc run`)
  PODSOLVE_TEST_SLOW a float (default 1) multiplying every timeout and
                     wall-clock bound, for loaded machines
  PODSOLVE_DOCKER_CLI_DIR  where scripts/get-docker-cli unpacks docker.io
                     (default /var/cache/podsolve-test/docker-20.10)
  PODSOLVE_DOCKER_CLI_MODERN  the docker 28 CLI buildx and compose plug into
                     (default /usr/local/bin/docker)
"""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

# Test files live in subfolders (endpoints/, clients/, llb/, hardening/); the
# helper modules next to this file (podsolve_testlib, llb_solve) import from all
# of them, and podsolve_testlib puts tests/fixtures/ on the path too.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import podman_stack  # noqa: E402
import podsolve_testlib as lib  # noqa: E402


_start_daemon = lib.start_private_daemon


def _stop_daemon(d):
    """SIGTERM, expect exit status 0 within 20 s, then wipe storage.

    Returns an error message, or None when the daemon stopped cleanly."""
    status, timeout_msg = d.stop(timeout=20)
    problem = None
    if timeout_msg:
        problem = timeout_msg
    elif status != 0:
        problem = f"podsolved exited with status {status} after SIGTERM (want 0)"
    if problem:
        problem += f"\n--- log tail ({d.log_path}):\n{d.log_tail()}"
    d.cleanup_storage()
    return problem


@pytest.fixture(scope="session")
def daemon():
    """The shared podsolved: unix socket, overlay storage with localhost/busybox;
    it allows security.insecure (RUN --security=insecure; /build builds are
    granted it).  Tests of a daemon without it use spawn_daemon."""
    extra = ["--allow-insecure-entitlement", "security.insecure"]
    # PODSOLVE_IT_SANDBOX_NETWORK=host: the shared daemon runs LLB execs
    # without a network of their own, i.e. as one `runc run` each
    # (solver/llb/runc_exec.h) rather than through `buildah run`.
    if os.environ.get("PODSOLVE_IT_SANDBOX_NETWORK"):
        extra += ["--sandbox-network", os.environ["PODSOLVE_IT_SANDBOX_NETWORK"]]
    try:
        d = _start_daemon(extra)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield d
    problem = _stop_daemon(d)
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.fixture
def spawn_daemon():
    """Factory for extra podsolved instances with their own storage and flags,
    e.g. spawn_daemon("--max-context-bytes", "1048576").  Each one is stopped
    (and must exit 0) when the test ends, unless the test stopped it itself."""
    started = []

    def spawn(*extra_args):
        try:
            d = _start_daemon(extra_args, prefix="podsolve-it-extra-")
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)
        started.append(d)
        return d

    yield spawn
    problems = [p for p in (_stop_daemon(d) for d in started) if p]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def daemon_still_alive(request):
    """After every test: the shared daemon is still running.  Bad input,
    killed clients and failing builds must never take the daemon down."""
    yield
    if "daemon" not in request.fixturenames:
        return
    d = request.getfixturevalue("daemon")
    if not d.alive():
        pytest.fail(f"podsolved died during this test (exit status {d.proc.returncode}); "
                    f"log tail:\n{d.log_tail()}", pytrace=False)


@pytest.fixture(scope="session")
def docker_cli():
    """Path of the Docker 20.10 CLI (Debian's docker.io, unpacked, not installed)."""
    dest = Path(os.environ.get("PODSOLVE_DOCKER_CLI_DIR", str(lib.DOCKER_CLI_CACHE)))
    r = subprocess.run([str(lib.GET_DOCKER_CLI), str(dest)], capture_output=True, text=True)
    binary = dest / "usr" / "bin" / "docker"
    if r.returncode != 0 or not binary.exists():
        pytest.fail(f"cannot obtain the docker 20.10 CLI with {lib.GET_DOCKER_CLI}:\n{r.stdout}\n{r.stderr}",
                    pytrace=False)
    ver = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
    assert "20.10." in ver, ver
    return str(binary)


@pytest.fixture(scope="session")
def go_clients(tmp_path_factory):
    """lib.GoClients: docker 28 + buildx/compose plugins in a private
    DOCKER_CONFIG, and buildctl (scripts/get-go-clients; skips, saying why,
    only when the binaries are missing)."""
    clients, reason = lib.go_clients(tmp_path_factory.mktemp("go-clients") / "docker-config")
    if clients is None:
        pytest.skip(reason)
    return clients


@pytest.fixture(scope="session")
def frontend_images(daemon):
    """lib.FrontendImages: BuildKit's Dockerfile frontend as
    docker.io/docker/dockerfile:1 (:1.N, :1.N.M) and examples/gateway-frontend
    as localhost/podsolve-example-frontend:latest, in the shared daemon's
    storage (tests/fixtures/make-*-frontend; binaries from
    scripts/get-go-clients).  Skips, saying why, only when Go is missing
    and the binaries are not cached.  For another daemon's storage call
    lib.make_frontend_images(d)."""
    try:
        images, reason = lib.make_frontend_images(daemon)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    if images is None:
        pytest.skip(reason)
    return images


@pytest.fixture
def own_stack():
    """Factory for a private Podman service + podsolved --upstream on one
    storage (podman_stack.py): own_stack(spawn=False, extra_args=()).  Each
    is stopped (podsolved must exit 0) and wiped when the test ends."""
    started = []

    def make(**kw):
        try:
            s = podman_stack.start_stack(**kw)
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)
        started.append(s)
        return s

    yield make
    problems = [p for p in (podman_stack.stop_stack(s) for s in started) if p]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def ctx_server(tmp_path_factory):
    """A 127.0.0.1 HTTP server for remote= contexts (tarballs, git repos)."""
    srv = lib.ContextServer(tmp_path_factory.mktemp("ctx-server"))
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A test CA with server and client certificates (lib.make_pki): the
    TLS tests of --listen tcp:// and --buildkit-listen tcp://."""
    return lib.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def uniq():
    """A short random suffix so image names never collide between tests."""
    return secrets.token_hex(4)


@pytest.fixture
def ssh_agent(uniq):
    """lib.SshAgent: a real ssh-agent holding one key with comment
    "podsolve-test-<uniq>", stopped after the test."""
    agent = lib.SshAgent(f"podsolve-test-{uniq}")
    yield agent
    agent.stop()


@pytest.fixture
def daemon_builds():
    """Function handle: daemon_builds(daemon) asserts a good build still works."""
    return lib.assert_daemon_builds
