"""docker buildx (v0.36.1, a plugin of the docker 28 CLI) against podsolved
through the `docker` driver, the default builder of the default context:
with only DOCKER_HOST set, buildx opens `POST /grpc` (h2c) and `POST
/session` and drives the build over BuildKit's Control and LLBBridge
services (issue #13).  Each test runs buildx the way a user would and checks
what the user gets: the image in containers-storage, the files it wrote, its
output and exit status.
"""

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import time
import tarfile
import tempfile
from pathlib import Path

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, containerfile

run = functools.partial(lib.run, timeout=180)
explain = lib.explain
image_ref = lib.image_ref

# "#5 CACHED" / "#5 [2/3] RUN ..." lines of --progress=plain
PLAIN_STEP = re.compile(r"^#(\d+) (.*)$", re.M)

MULTISTAGE = {
    "Dockerfile": containerfile(
        f"FROM {BASE_IMAGE} AS base",
        "ARG GREETING=hello",
        'RUN echo "$GREETING" > /greeting',
        "FROM base AS final",
        "LABEL stage=final",
        "ENV APP_MODE=prod",
        "WORKDIR /app",
        "COPY a.txt /app/a.txt",
        'RUN cat /app/a.txt /greeting > /app/both',
        'CMD ["cat", "/app/both"]',
        # Never built with --target final: it would fail.
        "FROM final AS broken",
        "RUN echo broken > /broken && exit 7"),
    "a.txt": "file from the context\n",
}


def buildx(clients, daemon, ctx, *args, timeout=180):
    """`docker buildx build ARGS .` in ctx -> CompletedProcess."""
    return run([clients.docker, "buildx", "build", *args, "."], clients.env(daemon), cwd=ctx, timeout=timeout)


def docker(clients, daemon, *args, timeout=120):
    return run([clients.docker, *args], clients.env(daemon), timeout=timeout)


def plain_steps(output):
    """{step number: [lines]} of --progress=plain output."""
    steps = {}
    for num, text in PLAIN_STEP.findall(output):
        steps.setdefault(int(num), []).append(text)
    return steps


def step_of(steps, needle):
    """The lines of the one step whose title contains needle."""
    found = [lines for lines in steps.values() if lines and needle in lines[0]]
    assert len(found) == 1, f"{len(found)} steps titled like {needle!r}: {steps}"
    return found[0]


def rawjson_vertexes(output):
    """{digest: merged vertex} from --progress=rawjson lines (SolveStatus JSON)."""
    out = {}
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            status = json.loads(line)
        except ValueError:
            continue
        for v in status.get("vertexes") or []:
            out.setdefault(v["digest"], {}).update(v)
    return out


def test_buildx_ls_and_inspect_show_the_docker_builder_with_podsolves_version(daemon, go_clients):
    """`docker buildx ls` and `inspect` list the default builder (docker
    driver) running, with podsolved's version as the BuildKit version
    (Control.Info) and the worker's platform and labels (ListWorkers)."""
    version = subprocess.run([lib.podsolved_path(), "--version"], capture_output=True,
                             text=True).stdout.split()[-1]
    r = docker(go_clients, daemon, "buildx", "ls")
    assert r.returncode == 0, explain(r, daemon)
    rows = [l.split() for l in r.stdout.splitlines()]
    node = [row for row in rows if "running" in row]
    assert node, r.stdout
    assert version in node[0] and "linux/amd64" in " ".join(node[0]), r.stdout
    assert any(row[:2] == ["default*", "docker"] for row in rows), r.stdout

    r = docker(go_clients, daemon, "buildx", "inspect")
    assert r.returncode == 0, explain(r, daemon)
    assert re.search(r"^Driver:\s+docker$", r.stdout, re.M), r.stdout
    assert re.search(r"^Status:\s+running$", r.stdout, re.M), r.stdout
    assert re.search(rf"^BuildKit version:\s+{re.escape(version)}$", r.stdout, re.M), r.stdout
    assert re.search(r"^Platforms:\s+linux/amd64", r.stdout, re.M), r.stdout
    assert "org.mobyproject.buildkit.worker.snapshotter" in r.stdout, r.stdout


def test_buildx_multistage_target_build_args_labels_iidfile_metadata(daemon, go_clients, tmp_path, uniq):
    """`docker buildx build --load --target final --build-arg --label
    --iidfile --metadata-file -t NAME`: the image is in storage under NAME
    with the target stage's files (not the later stage's), the build arg,
    the Dockerfile's and the command line's labels and config; the iidfile
    and metadata name the image's manifest digest in storage (buildx asks for
    the image digest: the worker has a snapshotter label, as Docker with the
    containerd store)."""
    ctx = lib.make_context(tmp_path / "ctx", MULTISTAGE)
    name = f"bx-multi-{uniq}"
    iid, meta = tmp_path / "iid", tmp_path / "meta.json"
    r = buildx(go_clients, daemon, ctx, "--progress=plain", "--load", "-t", name, "--target", "final",
               "--build-arg", "GREETING=from-build-arg", "--label", f"run={uniq}",
               "--iidfile", str(iid), "--metadata-file", str(meta))
    assert r.returncode == 0, explain(r, daemon)
    image = image_ref(name)
    assert daemon.image_exists(image), explain(r, daemon)
    assert daemon.image_file(image, "/greeting") == b"from-build-arg\n"
    assert daemon.image_file(image, "/app/both") == b"file from the context\nfrom-build-arg\n"
    assert daemon.image_paths(image, "/broken") == {"/broken": False}
    labels = daemon.image_labels(image)
    assert labels.get("stage") == "final" and labels.get("run") == uniq, labels
    config = daemon.image_inspect(image)["OCIv1"]["config"]
    assert "APP_MODE=prod" in config.get("Env", []), config
    assert config.get("WorkingDir") == "/app", config
    assert config.get("Cmd") == ["cat", "/app/both"], config

    digest = daemon.image_inspect(image)["FromImageDigest"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), digest
    assert iid.read_text().strip() == digest
    md = json.loads(meta.read_text())
    assert md.get("containerimage.digest") == digest, md
    assert md.get("image.name") == image, md
    assert md.get("buildx.build.ref"), md


def test_buildx_rebuild_shows_cached_steps(daemon, go_clients, tmp_path, uniq):
    """Building the same context twice: the second --progress=plain run
    shows the FROM, RUN and COPY steps as CACHED (no RUN output), and
    --progress=rawjson marks those vertexes cached; the image stays the same."""
    files = dict(MULTISTAGE)
    files["a.txt"] = f"cache test {uniq}\n"
    ctx = lib.make_context(tmp_path / "ctx", files)
    name = f"bx-cache-{uniq}"
    args = ["--load", "-t", name, "--target", "final", "--build-arg", f"GREETING={uniq}"]
    r1 = buildx(go_clients, daemon, ctx, "--progress=plain", *args)
    assert r1.returncode == 0, explain(r1, daemon)
    first = plain_steps(r1.stderr)
    assert "CACHED" not in step_of(first, 'RUN echo "$GREETING" > /greeting'), r1.stderr
    id1 = daemon.image_id(image_ref(name))

    r2 = buildx(go_clients, daemon, ctx, "--progress=plain", *args)
    assert r2.returncode == 0, explain(r2, daemon)
    second = plain_steps(r2.stderr)
    for title in ('RUN echo "$GREETING" > /greeting', "COPY a.txt /app/a.txt",
                  "RUN cat /app/a.txt /greeting > /app/both"):
        assert "CACHED" in step_of(second, title), r2.stderr
    assert daemon.image_id(image_ref(name)) == id1

    r3 = buildx(go_clients, daemon, ctx, "--progress=rawjson", *args)
    assert r3.returncode == 0, explain(r3, daemon)
    vertexes = rawjson_vertexes(r3.stderr)
    runs = [v for v in vertexes.values() if "RUN " in v.get("name", "")]
    assert len(runs) == 2, vertexes
    assert all(v.get("cached") is True and v.get("completed") for v in runs), runs
    assert daemon.image_id(image_ref(name)) == id1


def test_buildx_builds_a_context_inside_a_git_checkout(daemon, go_clients, tmp_path, uniq):
    """Inside a git checkout buildx adds vcs:source, vcs:revision and
    vcs:localdir:* to the frontend attrs (provenance bookkeeping): the build
    works as anywhere else and the image has the file."""
    ctx = lib.make_context(tmp_path / "repo" / "app", {
        "Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY hello.txt /hello.txt"),
        "hello.txt": f"from git {uniq}\n"})
    repo = tmp_path / "repo"
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "one"],
                ["git", "remote", "add", "origin", "https://example.invalid/app.git"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    name = f"bx-git-{uniq}"
    r = buildx(go_clients, daemon, ctx, "--progress=plain", "--load", "-t", name)
    assert r.returncode == 0, explain(r, daemon)
    assert daemon.image_file(image_ref(name), "/hello.txt") == f"from git {uniq}\n".encode()


def test_buildx_failing_run_exits_non_zero_with_the_runs_output(daemon, go_clients, tmp_path, uniq):
    """A RUN that fails: buildx exits non-zero, shows what the RUN printed
    and the error; no image, no working container is left behind."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}",
        f"RUN echo about-to-fail-{uniq} && exit 3")})
    before = len(daemon.working_containers())
    name = f"bx-fail-{uniq}"
    r = buildx(go_clients, daemon, ctx, "--progress=plain", "--load", "-t", name)
    assert r.returncode != 0, explain(r, daemon)
    assert f"about-to-fail-{uniq}" in r.stderr, explain(r, daemon)
    assert re.search(r"^ERROR: .*exit (status|code):? 3", r.stderr, re.M), explain(r, daemon)
    assert not daemon.image_exists(image_ref(name))
    assert lib.wait_for(lambda: len(daemon.working_containers()) <= before, 10), daemon.working_containers()


def test_buildx_output_local_and_tar(daemon, go_clients, tmp_path, uniq):
    """`--output type=local,dest=DIR` writes the target stage's filesystem
    into DIR on the client; `--output type=tar,dest=FILE` writes it as a tar
    (both come back over the session's FileSend)."""
    ctx = lib.make_context(tmp_path / "ctx", MULTISTAGE)
    dest = tmp_path / "out"
    r = buildx(go_clients, daemon, ctx, "--progress=plain", "--target", "base",
               "--build-arg", f"GREETING=local-{uniq}", "--output", f"type=local,dest={dest}")
    assert r.returncode == 0, explain(r, daemon)
    assert (dest / "greeting").read_text() == f"local-{uniq}\n"
    assert (dest / "bin" / "busybox").exists() or (dest / "bin" / "sh").exists(), sorted(dest.iterdir())
    assert not (dest / "app").exists()

    tar = tmp_path / "out.tar"
    r = buildx(go_clients, daemon, ctx, "--progress=plain", "--target", "final",
               "--build-arg", f"GREETING=tar-{uniq}", "--output", f"type=tar,dest={tar}")
    assert r.returncode == 0, explain(r, daemon)
    with tarfile.open(tar) as tf:
        names = {n.lstrip("./") for n in tf.getnames()}
        assert {"greeting", "app/a.txt", "app/both"} <= names, sorted(names)[:50]
        assert tf.extractfile(tf.getmember(next(n for n in tf.getnames() if n.lstrip("./") == "app/both"))) \
            .read() == f"file from the context\ntar-{uniq}\n".encode()


def test_buildx_du_and_prune(spawn_daemon, go_clients, tmp_path, uniq):
    """`docker buildx du` lists the build cache a build left (DiskUsage);
    `docker buildx prune -af` empties it (Prune), and du then shows 0B; a
    rebuild after the prune runs the RUN again."""
    d = spawn_daemon()
    ctx = lib.make_context(tmp_path / "ctx", MULTISTAGE)
    args = ["--progress=plain", "--load", "-t", f"bx-du-{uniq}", "--target", "final"]
    r = buildx(go_clients, d, ctx, *args)
    assert r.returncode == 0, explain(r, d)

    r = docker(go_clients, d, "buildx", "du")
    assert r.returncode == 0, explain(r, d)
    total = re.search(r"^Total:\s+(\S+)", r.stdout, re.M)
    assert total and total.group(1) != "0B", r.stdout
    assert len([l for l in r.stdout.splitlines() if re.match(r"^[0-9a-f]{12,}\*?\s", l)]) >= 1, r.stdout

    r = docker(go_clients, d, "buildx", "prune", "-af")
    assert r.returncode == 0, explain(r, d)
    assert re.search(r"^Total:\s+\S*[1-9]", r.stdout, re.M), r.stdout

    r = docker(go_clients, d, "buildx", "du")
    assert r.returncode == 0, explain(r, d)
    assert re.search(r"^Total:\s+0B$", r.stdout, re.M), r.stdout

    r = buildx(go_clients, d, ctx, *args)
    assert r.returncode == 0, explain(r, d)
    assert "CACHED" not in step_of(plain_steps(r.stderr), 'RUN echo "$GREETING" > /greeting'), r.stderr


@pytest.fixture(scope="module")
def registry():
    with lib.running_registry() as r:
        yield r


def test_buildx_push_to_a_loopback_registry(spawn_daemon, go_clients, registry, tmp_path, uniq):
    """`docker buildx build --push -t 127.0.0.1:PORT/REPO:TAG` to a plain-HTTP
    registry, the daemon started without --insecure-registry (Docker Engine
    trusts loopback registries over HTTP by default): the manifest is in the
    registry, the metadata's containerimage.digest is the pushed manifest's
    digest, and the image is in storage under the same name."""
    d = spawn_daemon()
    ctx = lib.make_context(tmp_path / "ctx", MULTISTAGE)
    name = f"{registry.host}/bx/push-{uniq}:v1"
    meta = tmp_path / "meta.json"
    r = buildx(go_clients, d, ctx, "--progress=plain", "--push", "-t", name, "--target", "final",
               "--metadata-file", str(meta))
    assert r.returncode == 0, explain(r, d)
    status, headers, body = registry.manifest(f"bx/push-{uniq}", "v1")
    assert status == 200, body
    md = json.loads(meta.read_text())
    assert md.get("containerimage.digest") == headers["Docker-Content-Digest"], (md, dict(headers))
    assert md.get("image.name") == name, md
    assert d.image_file(name, "/app/both") == b"file from the context\nhello\n"


def test_buildx_secret_reaches_the_run_and_not_the_image(daemon, go_clients, tmp_path, uniq):
    """`--secret id=tok,src=FILE`: a `RUN --mount=type=secret,id=tok` reads
    it (the daemon asks buildx's session, Secrets.GetSecret); the image has
    what the RUN made of it, not the secret's mount."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}",
        "RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /secret-size && "
        "sed 's/^/seen:/' /run/secrets/tok > /secret-seen")})
    secret = tmp_path / "tok.txt"
    secret.write_text(f"tok-{uniq}\n")
    name = f"bx-secret-{uniq}"
    r = buildx(go_clients, daemon, ctx, "--progress=plain", "--load", "-t", name,
               "--secret", f"id=tok,src={secret}")
    assert r.returncode == 0, explain(r, daemon)
    image = image_ref(name)
    assert daemon.image_file(image, "/secret-seen") == f"seen:tok-{uniq}\n".encode()
    assert daemon.image_file(image, "/secret-size").strip() == str(len(f"tok-{uniq}\n")).encode()
    assert daemon.image_paths(image, "/run/secrets/tok") == {"/run/secrets/tok": False}


def ssh_context(tmp_path, *run_lines):
    """A context with the static agent probe (lib.AGENT_PROBE_C) and a
    Dockerfile that copies it in and runs `run_lines`.  Each RUN ends with
    a comment unique to the context: an ssh mount is not part of a step's
    cache key (as in BuildKit), so an equal step of another test, whose
    agent held another key, must not be reused."""
    token = os.urandom(6).hex()
    lines = [f"{l} # {token}" if l.startswith("RUN ") else l for l in run_lines]
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}",
        "COPY agent-probe /agent-probe",
        *lines)})
    lib.agent_probe(ctx / "agent-probe")
    return ctx


def test_buildx_ssh_default_forwards_the_users_agent_to_the_run(daemon, go_clients, ssh_agent, tmp_path, uniq):
    """`--ssh default` with SSH_AUTH_SOCK pointing at the user's ssh-agent:
    `RUN --mount=type=ssh` reaches that agent (the daemon asks buildx's
    session, SSH.CheckAgent then ForwardAgent per connection): the RUN lists
    the agent's key, whose comment lands in the image and in the output."""
    ctx = ssh_context(tmp_path, "RUN --mount=type=ssh /agent-probe | tee /agent-keys")
    name = f"bx-ssh-{uniq}"
    env = {**go_clients.env(daemon), "SSH_AUTH_SOCK": ssh_agent.sock}
    r = run([go_clients.docker, "buildx", "build", "--progress=plain", "--load", "-t", name, "--ssh", "default", "."],
            env, cwd=ctx)
    assert r.returncode == 0, explain(r, daemon)
    assert f"key: {ssh_agent.comment}" in r.stderr, explain(r, daemon)
    assert daemon.image_file(image_ref(name), "/agent-keys") == f"key: {ssh_agent.comment}\nkeys: 1\n".encode()
    assert not [p for p in os.listdir("/dev/shm") if p.startswith("podsolve-ssh-")], "an agent socket outlived the build"


def test_buildx_ssh_named_id_from_a_socket_path(daemon, go_clients, ssh_agent, tmp_path, uniq):
    """`--ssh mykey=/path/agent.sock` (no SSH_AUTH_SOCK) and
    `RUN --mount=type=ssh,id=mykey,required=true`: the RUN reaches that
    agent under that id."""
    ctx = ssh_context(tmp_path, "RUN --mount=type=ssh,id=mykey,required=true /agent-probe > /agent-keys")
    name = f"bx-ssh-id-{uniq}"
    env = go_clients.env(daemon)
    env.pop("SSH_AUTH_SOCK", None)
    r = run([go_clients.docker, "buildx", "build", "--progress=plain", "--load", "-t", name,
             "--ssh", f"mykey={ssh_agent.sock}", "."], env, cwd=ctx)
    assert r.returncode == 0, explain(r, daemon)
    assert daemon.image_file(image_ref(name), "/agent-keys") == f"key: {ssh_agent.comment}\nkeys: 1\n".encode()


def test_buildx_ssh_mount_without_its_id_fails_when_required_and_runs_without_an_agent_when_not(
        daemon, go_clients, ssh_agent, tmp_path, uniq):
    """`RUN --mount=type=ssh,id=deploy,required=true` without `--ssh deploy`
    (no --ssh, or another id forwarded): buildx exits non-zero with
    BuildKit's error naming the id; no image, no working container.  The
    same mount without required=true is optional, as in BuildKit: the step
    runs with no agent and the build succeeds."""
    ctx = ssh_context(tmp_path, f"RUN --mount=type=ssh,id=deploy,required=true /agent-probe && echo never-{uniq} > /x")
    before = len(daemon.working_containers())
    env = {**go_clients.env(daemon), "SSH_AUTH_SOCK": ssh_agent.sock}
    for ssh_args in ([], ["--ssh", "default"]):
        name = f"bx-ssh-missing-{uniq}"
        r = run([go_clients.docker, "buildx", "build", "--progress=plain", "--load", "-t", name, *ssh_args, "."],
                env, cwd=ctx)
        assert r.returncode != 0, explain(r, daemon)
        assert 'no SSH key "deploy" forwarded from the client' in r.stderr, explain(r, daemon)
        assert not daemon.image_exists(image_ref(name))
    assert lib.wait_for(lambda: len(daemon.working_containers()) <= before, 10), daemon.working_containers()
    assert daemon.alive()

    ctx = ssh_context(tmp_path / "optional", "RUN --mount=type=ssh,id=deploy sh -c '/agent-probe || echo no-agent' > /x")
    name = f"bx-ssh-optional-{uniq}"
    r = run([go_clients.docker, "buildx", "build", "--progress=plain", "--load", "-t", name, "--ssh", "default", "."],
            env, cwd=ctx)
    assert r.returncode == 0, explain(r, daemon)
    assert daemon.image_file(image_ref(name), "/x").endswith(b"no-agent\n")


def test_buildx_ssh_mounts_of_stages_not_built_need_no_agent(daemon, go_clients, ssh_agent, tmp_path, uniq):
    """A Dockerfile whose other stage requires `--ssh default`: building
    `--target two` with only `--ssh deploy=SOCKET` forwards deploy and never
    asks for default's agent."""
    ctx = ssh_context(tmp_path,
                      "FROM scratch AS one",
                      "RUN --mount=type=ssh,required=true true",
                      f"FROM {BASE_IMAGE} AS two",
                      "COPY agent-probe /agent-probe",
                      "RUN --mount=type=ssh,id=deploy,required=true /agent-probe > /keys")
    name = f"bx-ssh-stage-{uniq}"
    r = buildx(go_clients, daemon, ctx, "--progress=plain", "--load", "-t", name, "--target", "two",
               "--ssh", f"deploy={ssh_agent.sock}")
    assert r.returncode == 0, explain(r, daemon)
    assert daemon.image_file(image_ref(name), "/keys") == f"key: {ssh_agent.comment}\nkeys: 1\n".encode()


def ctrl_c_buildx(go_clients, env, ctx, log, args, running_when, token):
    """Start `docker buildx build --progress=plain --no-cache ARGS .` in its
    own process group, wait until `running_when` is in its output and the
    RUN `sleep 120 && echo TOKEN` runs, then SIGINT the group (Ctrl-C).
    Returns (exit status, output); the RUN must be gone afterwards."""
    with open(log, "wb") as f:
        p = subprocess.Popen([go_clients.docker, "buildx", "build", "--progress=plain", "--no-cache", *args, "."],
                             cwd=ctx, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert lib.wait_for(lambda: running_when in log.read_text(errors="replace"), 60), \
            log.read_text(errors="replace")
        assert lib.wait_for(lambda: lib.running(f"sleep 120 && echo {token}"), 20), "the RUN is not running"
        os.killpg(p.pid, signal.SIGINT)
        rc = p.wait(lib.scaled(20))
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    text = log.read_text(errors="replace")
    assert rc != 0, text
    assert lib.wait_for(lambda: not lib.running(f"sleep 120 && echo {token}"), 20), lib.running(token)
    return rc, text


def test_buildx_ctrl_c_during_an_ssh_run_stops_the_forwarding(daemon, go_clients, ssh_agent, tmp_path, uniq):
    """Ctrl-C while a `RUN --mount=type=ssh` sleeps (buildah holds a
    connection to the forwarded socket meanwhile): buildx exits cancelled,
    no RUN process or working container is left, the socket's directory is
    removed, and the daemon still forwards agents for the next build."""
    token = f"ssh-sleep-{uniq}"
    ctx = ssh_context(tmp_path, f"RUN --mount=type=ssh /agent-probe && sleep 120 && echo {token}")
    before = len(daemon.working_containers())
    shm_before = {p for p in os.listdir("/dev/shm") if p.startswith("podsolve-ssh-")}
    env = {**go_clients.env(daemon), "SSH_AUTH_SOCK": ssh_agent.sock}
    # the key's line: the agent answered through the forwarded socket
    ctrl_c_buildx(go_clients, env, ctx, tmp_path / "buildx.log", ["--ssh", "default"], f"key: {ssh_agent.comment}",
                  token)
    assert lib.wait_for(lambda: len(daemon.working_containers()) <= before, 20), daemon.working_containers()
    assert lib.wait_for(lambda: not {p for p in os.listdir("/dev/shm") if p.startswith("podsolve-ssh-")} - shm_before,
                        20), os.listdir("/dev/shm")
    assert daemon.alive()
    r = run([go_clients.docker, "buildx", "build", "--progress=plain", "--ssh", "default", "."],
            env, cwd=ssh_context(tmp_path / "again", "RUN --mount=type=ssh /agent-probe"))
    assert r.returncode == 0 and f"key: {ssh_agent.comment}" in r.stderr, explain(r, daemon)


def test_buildx_remote_driver_against_buildkit_listen(spawn_daemon, go_clients, tmp_path, uniq):
    """`docker buildx create --driver remote unix://SOCK` for podsolved's
    --buildkit-listen socket: inspect --bootstrap shows it running with
    podsolved's version, and `buildx build --builder NAME --output
    type=image,name=…` puts the image in storage (sessions over
    Control.Session)."""
    sockdir = Path(tempfile.mkdtemp(prefix="podsolve-bxr-"))
    try:
        d = spawn_daemon("--buildkit-listen", f"unix://{sockdir}/bk.sock")
        builder = f"podsolve-remote-{uniq}"
        r = docker(go_clients, d, "buildx", "create", "--name", builder, "--driver", "remote",
                   f"unix://{sockdir}/bk.sock")
        assert r.returncode == 0, explain(r, d)
        try:
            r = docker(go_clients, d, "buildx", "inspect", "--bootstrap", builder)
            assert r.returncode == 0, explain(r, d)
            assert re.search(r"^Driver:\s+remote$", r.stdout, re.M), r.stdout
            assert re.search(r"^Status:\s+running$", r.stdout, re.M), r.stdout
            version = subprocess.run([lib.podsolved_path(), "--version"], capture_output=True,
                                     text=True).stdout.split()[-1]
            assert re.search(rf"^BuildKit version:\s+{re.escape(version)}$", r.stdout, re.M), r.stdout

            ctx = lib.make_context(tmp_path / "ctx", MULTISTAGE)
            name = image_ref(f"bx-remote-{uniq}")
            r = buildx(go_clients, d, ctx, "--builder", builder, "--progress=plain", "--target", "final",
                       "--build-arg", f"GREETING=remote-{uniq}", "--output", f"type=image,name={name}")
            assert r.returncode == 0, explain(r, d)
            assert d.image_file(name, "/app/both") == f"file from the context\nremote-{uniq}\n".encode()
        finally:
            docker(go_clients, d, "buildx", "rm", builder)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def test_a_build_queued_behind_max_parallel_waits_instead_of_no_such_build(spawn_daemon, go_clients, tmp_path, uniq):
    """buildx drives every build as a client-side gateway: its LLBBridge
    calls name the build, which podsolved registers when the build's job
    starts.  With --max-parallel 1, a second build waits in the queue longer
    than BuildKit's 3 s for an unknown build (here the first RUN sleeps 6 s);
    its calls wait with it, and both builds succeed (they got "NotFound: no
    such build" in the bench's 8-at-once workload)."""
    d = spawn_daemon("--max-parallel", "1")
    first = lib.make_context(tmp_path / "first", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"RUN sleep 6 && echo first-{uniq} > /f")})
    second = lib.make_context(tmp_path / "second", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"RUN echo second-{uniq} > /f")})
    names = [image_ref(f"queued-a-{uniq}"), image_ref(f"queued-b-{uniq}")]
    env = go_clients.env(d)
    procs = []
    for ctx, name in zip((first, second), names):
        procs.append(subprocess.Popen([go_clients.docker, "buildx", "build", "--progress=plain", "-t", name, "."],
                                      cwd=ctx, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        time.sleep(1)
    outs = [p.communicate(timeout=lib.scaled(180))[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert d.image_file(names[0], "/f") == f"first-{uniq}\n".encode()
    assert d.image_file(names[1], "/f") == f"second-{uniq}\n".encode()


def test_a_build_waiting_for_a_slot_has_its_context_before_the_slot(spawn_daemon, go_clients, tmp_path, uniq):
    """With --max-parallel 1 and the only slot held by a build whose RUN
    sleeps, a second buildx build is not stuck behind it at its capability
    probe (a build that returns nothing, which takes no slot): its context
    comes over the session while the first still runs, and once the first
    is stopped (Ctrl-C) the second builds, with its own file."""
    d = spawn_daemon("--max-parallel", "1")
    token = f"slot-holder-{uniq}"
    first = lib.make_context(tmp_path / "first", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"RUN echo started-{token} && sleep 120 && echo {token}")})
    second = lib.make_context(tmp_path / "second", {
        "Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY file.txt /file.txt"),
        "file.txt": f"second build {uniq}\n"})
    name = image_ref(f"slot-second-{uniq}")
    env = go_clients.env(d)
    log1, log2 = tmp_path / "first.log", tmp_path / "second.log"
    with open(log1, "wb") as f1, open(log2, "wb") as f2:
        p1 = subprocess.Popen([go_clients.docker, "buildx", "build", "--progress=plain", "--no-cache", "."],
                              cwd=first, env=env, stdout=f1, stderr=subprocess.STDOUT, start_new_session=True)
        p2 = None
        try:
            assert lib.wait_for(lambda: f"started-{token}" in log1.read_text(errors="replace"), 60), \
                log1.read_text(errors="replace")
            p2 = subprocess.Popen([go_clients.docker, "buildx", "build", "--progress=plain", "-t", name, "."],
                                  cwd=second, env=env, stdout=f2, stderr=subprocess.STDOUT)
            context_in = re.compile(r"load build context\n(#\d+ .*\n)*#\d+ DONE")
            assert lib.wait_for(lambda: context_in.search(log2.read_text(errors="replace")), 60), \
                log2.read_text(errors="replace")
            assert p1.poll() is None, log1.read_text(errors="replace")
            assert lib.running(f"sleep 120 && echo {token}")
            os.killpg(p1.pid, signal.SIGINT)
            p1.wait(lib.scaled(20))
            assert p2.wait(lib.scaled(120)) == 0, log2.read_text(errors="replace")
        finally:
            for p in (p1, p2):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
    assert d.image_file(name, "/file.txt") == f"second build {uniq}\n".encode()
    assert lib.wait_for(lambda: not lib.running(f"sleep 120 && echo {token}"), 20)


def test_buildx_ctrl_c_cancels_the_build(daemon, go_clients, tmp_path, uniq):
    """SIGINT to the client's process group (Ctrl-C) while a RUN sleeps:
    buildx exits at once with the build cancelled, the daemon stops the RUN
    (no process of it left) and leaves no working container."""
    token = f"long-run-{uniq}"
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}",
        f"RUN echo started-{token} && sleep 120 && echo {token}")})
    before = len(daemon.working_containers())
    _, text = ctrl_c_buildx(go_clients, go_clients.env(daemon), ctx, tmp_path / "buildx.log", [],
                            f"started-{token}", token)
    assert re.search(r"cancel", text, re.I), text
    assert lib.wait_for(lambda: len(daemon.working_containers()) <= before, 20), daemon.working_containers()
    assert daemon.alive()


def test_buildx_named_context_from_a_local_directory(daemon, go_clients, tmp_path, uniq):
    """`--build-context extra=DIR` (a directory on the client, outside the
    context) and `-f` outside the context: `COPY --from=extra` takes the file
    from DIR (synced over the session like the context), the context's file
    from the context."""
    ctx = lib.make_context(tmp_path / "ctx", {"a.txt": f"from the context {uniq}\n"})
    extra = lib.make_context(tmp_path / "extra", {"x.txt": f"from the named context {uniq}\n"})
    df = lib.make_context(tmp_path / "df", {"Dockerfile.named": containerfile(
        f"FROM {BASE_IMAGE}",
        "COPY --from=extra x.txt /x.txt",
        "COPY a.txt /a.txt")}) / "Dockerfile.named"
    name = f"bx-named-{uniq}"
    r = buildx(go_clients, daemon, ctx, "--progress=plain", "--load", "-t", name, "-f", str(df),
               "--build-context", f"extra={extra}")
    assert r.returncode == 0, explain(r, daemon)
    image = image_ref(name)
    assert daemon.image_file(image, "/x.txt") == f"from the named context {uniq}\n".encode()
    assert daemon.image_file(image, "/a.txt") == f"from the context {uniq}\n".encode()


def test_buildx_output_oci_and_docker_archives(daemon, go_clients, tmp_path, uniq):
    """`--output type=oci,dest=F` and `type=docker,dest=F,name=N`: OCI
    layout and `docker load` archives of the built image, sent back over the
    session; the config in each is the build's (its label)."""
    ctx = lib.make_context(tmp_path / "ctx", MULTISTAGE)
    oci, dock = tmp_path / "img.oci.tar", tmp_path / "img.docker.tar"
    r = buildx(go_clients, daemon, ctx, "--progress=plain", "--target", "final", "--label", f"arch={uniq}",
               "--output", f"type=oci,dest={oci}")
    assert r.returncode == 0, explain(r, daemon)
    with tarfile.open(oci) as tf:
        names = set(tf.getnames())
        assert {"oci-layout", "index.json"} <= names, sorted(names)
        index = json.load(tf.extractfile("index.json"))
        blob = lambda d: json.load(tf.extractfile("blobs/" + d.replace(":", "/")))  # noqa: E731
        manifest = blob(index["manifests"][0]["digest"])
        if "manifests" in manifest:   # an index inside
            manifest = blob(manifest["manifests"][0]["digest"])
        config = blob(manifest["config"]["digest"])
        assert config["config"]["Labels"].get("arch") == uniq, config

    name = f"docker.io/library/bx-arch-{uniq}:latest"
    r = buildx(go_clients, daemon, ctx, "--progress=plain", "--target", "final", "--label", f"arch={uniq}",
               "--output", f"type=docker,dest={dock},name={name}")
    assert r.returncode == 0, explain(r, daemon)
    with tarfile.open(dock) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        assert len(manifest) == 1 and manifest[0].get("RepoTags") == [name], manifest
        config = json.load(tf.extractfile(manifest[0]["Config"]))
        assert config["config"]["Labels"].get("arch") == uniq, config


def test_buildx_remote_driver_load_goes_to_podman_through_the_proxy(own_stack, go_clients, tmp_path, uniq):
    """The remote driver's `--load`: buildx receives the image as a docker
    archive from --buildkit-listen (Control.Solve, exporter `docker` over the
    session's FileSend) and loads it with `POST /images/load` on DOCKER_HOST,
    which podsolved passes to Podman; the image then runs with `docker run`."""
    sockdir = Path(tempfile.mkdtemp(prefix="podsolve-bxl-"))
    try:
        stack = own_stack(extra_args=("--buildkit-listen", f"unix://{sockdir}/bk.sock"))
        d = stack.daemon
        builder = f"podsolve-load-{uniq}"
        r = docker(go_clients, d, "buildx", "create", "--name", builder, "--driver", "remote",
                   f"unix://{sockdir}/bk.sock")
        assert r.returncode == 0, explain(r, d)
        try:
            ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
                f"FROM {BASE_IMAGE}", f"RUN echo loaded-{uniq} > /loaded", 'CMD ["cat", "/loaded"]')})
            name = f"bx-load-{uniq}"
            r = buildx(go_clients, d, ctx, "--builder", builder, "--progress=plain", "--load", "-t", name)
            assert r.returncode == 0, explain(r, d)
            log = d.log_path.read_text(errors="replace")
            assert re.search(r" info  POST /v[\d.]+/images/load\S* 200 .* upstream", log), log[-3000:]
            r = docker(go_clients, d, "run", "--rm", name)
            assert r.returncode == 0 and r.stdout == f"loaded-{uniq}\n", explain(r, d)
            p = stack.podman_cli("image", "exists", image_ref(name))
            assert p.returncode == 0, p.stderr
        finally:
            docker(go_clients, d, "buildx", "rm", builder)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def test_buildx_dockerfile_buildah_cannot_build_fails_naming_file_and_line(daemon, go_clients, tmp_path, uniq):
    """A heredoc in a Dockerfile that comes over the session (no syntax
    line, so podsolve's buildah builder): buildx fails before any step runs
    with the file and line, no Go struct dump, no server path."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"RUN echo ran-{uniq}", "RUN <<EOF", "echo hi > /x", "EOF")})
    r = buildx(go_clients, daemon, ctx, "--progress=plain", "-t", f"bx-dialect-{uniq}")
    assert r.returncode != 0, explain(r, daemon)
    assert "Dockerfile:3: RUN <<EOF: heredocs are not supported by podsolve's Dockerfile builder" in r.output, \
        r.output
    assert f"ran-{uniq}" not in r.output.replace(f"RUN echo ran-{uniq}", ""), r.output
    for leak in ("imagebuilder", "UNHANDLED", str(daemon.tmp)):
        assert leak not in r.output, r.output
    assert not daemon.image_exists(image_ref(f"bx-dialect-{uniq}"))
def non_loopback_address():
    """An IPv4 address of this machine that is not on the loopback interface, or None."""
    r = subprocess.run(["hostname", "-I"], capture_output=True, text=True)
    for a in r.stdout.split():
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", a) and not a.startswith("127."):
            return a
    return None


def test_buildx_push_to_a_non_loopback_plain_http_registry_needs_the_flag(spawn_daemon, go_clients, tmp_path,
                                                                           uniq):
    """A plain-HTTP registry at a non-loopback address is refused (TLS is
    required, as Docker Engine requires it); `podsolved --insecure-registry
    HOST:PORT` lets `docker buildx build --push` reach it."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry (Debian package docker-registry) is not installed")
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    reg = lib.Registry(address=address)
    try:
        ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
            f"FROM {BASE_IMAGE}", f"RUN echo {uniq} > /pushed")})
        name = f"{reg.host}/bx/far-{uniq}:v1"
        d = spawn_daemon()
        r = buildx(go_clients, d, ctx, "--progress=plain", "--push", "-t", name)
        assert r.returncode != 0, r.stderr
        assert "http: server gave HTTP response to HTTPS client" in r.stderr, r.stderr
        assert reg.manifest(f"bx/far-{uniq}", "v1")[0] == 404

        d2 = spawn_daemon("--insecure-registry", reg.host)
        r = buildx(go_clients, d2, ctx, "--progress=plain", "--push", "-t", name)
        assert r.returncode == 0, explain(r, d2)
        assert reg.manifest(f"bx/far-{uniq}", "v1")[0] == 200
    finally:
        reg.stop()


# A Dockerfile as CI builds it: an ARG (buildah 1.28 never looks ARG steps up
# in --cache-from, see solver/cache_registry.h), two stages, a COPY, and a
# RUN writing a random value that shows whether it ran again.
def cache_round_trip_context(path, base, uniq):
    return lib.make_context(path, {
        "Dockerfile": containerfile(
            f"FROM {base} AS tools",
            "ARG GREETING=hello",
            f'RUN echo "$GREETING {uniq}" > /greeting',
            "FROM tools",
            "COPY a.txt /a.txt",
            "RUN cat /a.txt /greeting /proc/sys/kernel/random/uuid > /stamp"),
        "a.txt": "from the context\n"})


def test_buildx_registry_cache_round_trip_on_a_fresh_machine(spawn_daemon, go_clients, registry, tmp_path, uniq):
    """The CI round trip: `docker buildx build --cache-to type=registry,ref=R
    --cache-from type=registry,ref=R` pushes the build cache to a loopback
    registry; a second daemon with empty storage (a fresh CI machine, base
    image pulled from the registry) runs the same command: every RUN shows
    CACHED, and the RUN writing a random value did not run again (the image
    has the first build's value).  No --insecure-registry: loopback."""
    d = spawn_daemon()
    base = f"{registry.host}/bx/base-{uniq}:1"
    d.buildah("push", "--tls-verify=false", BASE_IMAGE, f"docker://{base}")
    ctx = cache_round_trip_context(tmp_path / "ctx", base, uniq)
    cache = f"{registry.host}/bx/cache-{uniq}"
    name = f"bx-regcache-{uniq}"
    cache_args = ["--cache-from", f"type=registry,ref={cache}", "--cache-to", f"type=registry,ref={cache},mode=max"]
    r = buildx(go_clients, d, ctx, "--progress=plain", "--load", "-t", name, *cache_args)
    assert r.returncode == 0, explain(r, d)
    stamp1 = d.image_file(image_ref(name), "/stamp")
    assert stamp1.startswith(b"from the context\nhello " + uniq.encode()) and len(stamp1.split(b"\n")[2]) == 36, stamp1

    d2 = spawn_daemon()
    assert not d2.image_exists(base)
    r = buildx(go_clients, d2, ctx, "--progress=plain", "--load", "-t", name, *cache_args)
    assert r.returncode == 0, explain(r, d2)
    steps = plain_steps(r.stderr)
    assert "CACHED" in step_of(steps, 'RUN echo "$GREETING'), r.stderr
    assert "CACHED" in step_of(steps, "RUN cat /a.txt /greeting"), r.stderr
    assert d2.image_file(image_ref(name), "/stamp") == stamp1


def test_buildx_cache_from_a_buildkit_format_cache_warns_and_builds(daemon, go_clients, registry, tmp_path, uniq):
    """`--cache-from type=registry,ref=R:buildcache` where R:buildcache is a
    cache BuildKit wrote (its config is application/vnd.buildkit.cacheconfig.v0,
    a format podsolve cannot read): the build warns, names the format, and
    builds normally."""
    repo = f"bx/bkcache-{uniq}"
    config = json.dumps({"layers": [], "records": []}).encode()
    layer = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.buildkit.cacheconfig.v0",
                   "digest": registry.put_blob(repo, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": registry.put_blob(repo, layer), "size": len(layer)}],
    }
    registry.put_manifest(repo, "buildcache", manifest, "application/vnd.oci.image.manifest.v1+json")
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"RUN echo {uniq} && cat /proc/sys/kernel/random/uuid > /stamp")})
    name = f"bx-bkcache-{uniq}"
    r = buildx(go_clients, daemon, ctx, "--progress=plain", "--load", "-t", name,
               "--cache-from", f"type=registry,ref={registry.host}/{repo}:buildcache")
    assert r.returncode == 0, explain(r, daemon)
    assert "BuildKit-format cache" in r.stderr and "cannot read" in r.stderr, r.stderr
    assert "CACHED" not in step_of(plain_steps(r.stderr), f"RUN echo {uniq}"), r.stderr
    assert len(daemon.image_file(image_ref(name), "/stamp").strip()) == 36
