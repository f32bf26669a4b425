"""The docker 20.10 CLI in BuildKit mode against podsolved.

`DOCKER_BUILDKIT=1 DOCKER_HOST=unix://SOCK docker build --progress=plain ...`
opens `POST /session` (h2c; the daemon pulls the Dockerfile, .dockerignore and
context with FileSync DiffCopy) and `POST /build?version=2&remote=client-session`,
whose trace records the CLI prints (buildkit-protocols.md §7, anchors.md §2-3).
Each test runs the CLI the way a user would and checks what the user gets:
the image in containers-storage, the CLI's output and exit status, and where
the daemon's log says what crossed the session.
"""

import functools
import gzip
import os
import re
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, containerfile

# "job <id>: context synced over session <sid>: N entries, K files requested, B bytes"
SYNCED = re.compile(r"context synced over session (\S+): (\d+) entries, (\d+) files requested, (\d+) bytes")
# "#5 [2/3] RUN ..." / "#5 DONE 0.4s" / "#5 CACHED" in --progress=plain output
PLAIN_LINE = re.compile(r"^#(\d+) (.*)$")
IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")


# --------------------------------------------------------------------------
# helpers


image_ref = lib.image_ref


def bk_env(daemon, docker_cli, buildkit="1"):
    """Client environment: the 20.10 CLI first in PATH, DOCKER_BUILDKIT as
    given (None = unset, so the CLI decides from /_ping's Builder-Version)."""
    env = daemon.env()
    env.pop("BUILDKIT_PROGRESS", None)
    if buildkit is None:
        env.pop("DOCKER_BUILDKIT", None)
    else:
        env["DOCKER_BUILDKIT"] = buildkit
    env["PATH"] = str(Path(docker_cli).parent) + os.pathsep + env.get("PATH", "")
    return env


run = functools.partial(lib.run, timeout=120)
explain = lib.explain


def docker_build(daemon, docker_cli, ctx, *args, buildkit="1", progress="plain", timeout=120):
    """`docker build [--progress=P] ARGS .` in `ctx` -> (CompletedProcess, LogMark)."""
    mark = LogMark(daemon)
    cmd = [docker_cli, "build"]
    if progress:
        cmd.append(f"--progress={progress}")
    cmd += list(args) + ["."]
    r = run(cmd, bk_env(daemon, docker_cli, buildkit), cwd=ctx, timeout=timeout)
    return r, mark


class LogMark:
    """The part of the daemon log written after this mark was taken."""

    def __init__(self, daemon):
        self.path = daemon.log_path
        self.offset = os.path.getsize(self.path)

    def text(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read().decode("utf-8", "replace")

    def synced(self):
        """[(session, entries, files_requested, bytes)] for each context sync."""
        return [(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)))
                for m in SYNCED.finditer(self.text())]

    def one_sync(self):
        s = self.synced()
        assert len(s) == 1, f"want exactly one 'context synced over session' line, got {s}:\n{self.text()[-4000:]}"
        return s[0]


def plain_vertices(output):
    """--progress=plain output -> {vertex name: [its other lines]}.

    The first "#N text" line of vertex N is its name; later "#N ..." lines
    (digest, status, DONE / CACHED / ERROR, RUN output) are collected under it."""
    names, lines = {}, {}
    for line in output.splitlines():
        m = PLAIN_LINE.match(line)
        if not m:
            continue
        n, text = m.group(1), m.group(2)
        if n not in names:
            names[n] = text
            lines[text] = []
        else:
            lines[names[n]].append(text)
    return lines


def is_done(vlines):
    return any(re.match(r"^DONE \d+\.\d+s$", l) for l in vlines)


def is_cached(vlines):
    return "CACHED" in vlines


def step_names(vertices):
    return [n for n in vertices if re.match(r"^\[\d+/\d+\] ", n)]


def scan_tree_for(root, needle):
    """Regular files under `root` whose bytes contain `needle`."""
    hits = []
    for dirpath, dirnames, filenames in os.walk(root):
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            try:
                if not os.path.isfile(p) or os.path.islink(p):
                    continue
                with open(p, "rb") as f:
                    if needle in f.read():
                        hits.append(p)
            except OSError:
                continue
    return hits


def blob_bytes(path):
    """A layer/config blob as stored, plus its decompressed form if gzip."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        return data, gzip.decompress(data)
    return data, b""


def secrets_dirs():
    return {p for p in os.listdir("/dev/shm") if p.startswith("podsolve-secrets-")}


def sleep40_pids(daemon):
    return [pid for pid, cmd in daemon.descendants() if cmd == "sleep 40"]


def pid_is(pid, cmdline):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip() == cmdline
    except OSError:
        return False


# --------------------------------------------------------------------------
# 1-2: a build, its image and its progress output


def test_buildkit_build_creates_image_with_files_label_and_build_arg(daemon, docker_cli, tmp_path, uniq):
    """`docker build --build-arg V=... --label cli.label=... -t NAME .` in BuildKit
    mode: the image holds the RUN's output with the build-arg value, the copied
    context file, the Dockerfile LABEL and the --label."""
    ctx = lib.make_context(tmp_path / "ctx", {
        "Dockerfile": containerfile(
            f"FROM {BASE_IMAGE}",
            "ARG V=default",
            f"LABEL org.podsolve.test=bk-{uniq}",
            'RUN echo "v=$V" > /v.txt',
            "COPY hello.txt /hello.txt"),
        "hello.txt": f"hello from the session {uniq}\n",
    })
    tag = f"bk-basic-{uniq}"
    r, log = docker_build(daemon, docker_cli, ctx, "--build-arg", f"V=arg-{uniq}",
                          "--label", f"cli.label=cli-{uniq}", "-t", tag)
    assert r.returncode == 0, explain(r, daemon, log)
    image = image_ref(tag)
    assert daemon.image_file(image, "/v.txt") == f"v=arg-{uniq}\n".encode()
    assert daemon.image_file(image, "/hello.txt") == f"hello from the session {uniq}\n".encode()
    labels = daemon.image_labels(image)
    assert labels.get("org.podsolve.test") == f"bk-{uniq}", labels
    assert labels.get("cli.label") == f"cli-{uniq}", labels
    # The build really went over the session (not a legacy tar upload).
    assert log.synced(), log.text()[-3000:]
    assert "POST /v1.41/build" in log.text()


def test_buildkit_plain_progress_shows_vertices_and_a_rebuild_shows_cached(daemon, docker_cli, tmp_path, uniq):
    """--progress=plain shows the daemon's vertex names, each ending DONE; the
    same command again shows CACHED for every step and yields the same image."""
    ctx = lib.make_context(tmp_path / "ctx", {
        "Dockerfile": containerfile(
            f"FROM {BASE_IMAGE}",
            f"RUN echo step-{uniq} > /step.txt",
            "COPY data.txt /data.txt"),
        "data.txt": "data\n",
    })
    tag = f"bk-progress-{uniq}"
    r, log = docker_build(daemon, docker_cli, ctx, "-t", tag)
    assert r.returncode == 0, explain(r, daemon, log)
    v = plain_vertices(r.stderr)
    for name in ("[internal] load build definition from Dockerfile",
                 "[internal] load build context",
                 f"[1/3] FROM {BASE_IMAGE}",
                 f"[2/3] RUN echo step-{uniq} > /step.txt",
                 "[3/3] COPY data.txt /data.txt",
                 "exporting to image"):
        assert name in v, f"vertex {name!r} missing; got {list(v)}\n{explain(r, daemon, log)}"
        assert is_done(v[name]), f"vertex {name!r} has no DONE line: {v[name]}\n{r.stderr}"
    assert "transferring dockerfile:" in r.stderr
    assert "transferring context:" in r.stderr
    image = image_ref(tag)
    first_id = daemon.image_id(image)
    assert daemon.image_file(image, "/step.txt") == f"step-{uniq}\n".encode()

    r2, log2 = docker_build(daemon, docker_cli, ctx, "-t", tag)
    assert r2.returncode == 0, explain(r2, daemon, log2)
    v2 = plain_vertices(r2.stderr)
    steps = step_names(v2)
    assert sorted(steps) == sorted(["[1/3] FROM " + BASE_IMAGE, f"[2/3] RUN echo step-{uniq} > /step.txt",
                                    "[3/3] COPY data.txt /data.txt"]), r2.stderr
    for name in steps:
        assert is_cached(v2[name]), f"rebuild: step {name!r} not CACHED: {v2[name]}\n{r2.stderr}"
    assert daemon.image_id(image) == first_id


# --------------------------------------------------------------------------
# 3-4: the context over the session


def test_buildkit_rebuild_after_changing_one_file_transfers_only_that_file(daemon, docker_cli, tmp_path, uniq):
    """A 2000-file context (+ a 5 MB file): the first build transfers every file;
    after editing one file the daemon requests exactly that one and the image
    has the new content; a no-op rebuild requests nothing and shows CACHED."""
    files = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"LABEL run={uniq}", "COPY . /ctx"),
             "big.bin": os.urandom(5 * 1024 * 1024)}
    for i in range(2000):
        files[f"small/f{i:04d}.txt"] = f"small file {i} {uniq}\n"
    ctx = lib.make_context(tmp_path / "ctx", files)
    n_regular = len(files)                      # 2002
    tag = f"bk-incr-{uniq}"
    image = image_ref(tag)

    r, log = docker_build(daemon, docker_cli, ctx, "-t", tag)
    assert r.returncode == 0, explain(r, daemon, log)
    _, entries, requested, nbytes = log.one_sync()
    assert entries >= n_regular, log.text()[-3000:]
    assert requested == n_regular, log.text()[-3000:]
    assert nbytes >= 5 * 1024 * 1024
    assert daemon.image_file(image, "/ctx/big.bin") == files["big.bin"]

    changed = ctx / "small" / "f0777.txt"
    changed.write_text(f"changed content {uniq}, now longer\n")
    r, log = docker_build(daemon, docker_cli, ctx, "-t", tag)
    assert r.returncode == 0, explain(r, daemon, log)
    _, entries2, requested2, nbytes2 = log.one_sync()
    assert requested2 == 1, f"after editing one file the daemon requested {requested2} files:\n{log.text()[-3000:]}"
    assert entries2 == entries
    assert nbytes2 == len(f"changed content {uniq}, now longer\n")
    assert daemon.image_file(image, "/ctx/small/f0777.txt") == f"changed content {uniq}, now longer\n".encode()
    assert daemon.image_file(image, "/ctx/small/f0778.txt") == f"small file 778 {uniq}\n".encode()
    second_id = daemon.image_id(image)

    r, log = docker_build(daemon, docker_cli, ctx, "-t", tag)
    assert r.returncode == 0, explain(r, daemon, log)
    _, entries3, requested3, nbytes3 = log.one_sync()
    assert (entries3, requested3, nbytes3) == (entries, 0, 0), log.text()[-3000:]
    v = plain_vertices(r.stderr)
    copy_step = "[3/3] COPY . /ctx"
    assert copy_step in v and is_cached(v[copy_step]), r.stderr
    assert daemon.image_id(image) == second_id


def test_buildkit_dockerignore_keeps_files_out_of_the_image_and_off_the_wire(daemon, docker_cli, tmp_path, uniq):
    """Paths in .dockerignore are not in the image and are never transferred:
    the daemon's sync line counts neither their entries nor their bytes."""
    big = os.urandom(2 * 1024 * 1024)
    files = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"LABEL run={uniq}", "COPY . /ctx"),
             ".dockerignore": "ignored.bin\nskipdir\n*.tmp\n",
             "keep.txt": "keep me\n",
             "ignored.bin": big,
             "scratch.tmp": "temporary\n"}
    for i in range(50):
        files[f"skipdir/s{i:02d}.txt"] = f"skip {i}\n"
    ctx = lib.make_context(tmp_path / "ctx", files)
    tag = f"bk-ignore-{uniq}"
    r, log = docker_build(daemon, docker_cli, ctx, "-t", tag)
    assert r.returncode == 0, explain(r, daemon, log)
    image = image_ref(tag)
    assert daemon.image_paths(image, "/ctx/keep.txt", "/ctx/Dockerfile", "/ctx/ignored.bin", "/ctx/skipdir",
                              "/ctx/scratch.tmp") == {
        "/ctx/keep.txt": True, "/ctx/Dockerfile": True, "/ctx/ignored.bin": False, "/ctx/skipdir": False,
        "/ctx/scratch.tmp": False}
    _, entries, requested, nbytes = log.one_sync()
    # Dockerfile, .dockerignore, keep.txt: nothing of the 52 ignored paths.
    assert entries == 3, log.text()[-3000:]
    assert requested == 3
    assert nbytes < 4096, f"ignored bytes crossed the session: {nbytes} bytes\n{log.text()[-3000:]}"


def test_buildkit_rebuild_after_deleting_a_file_drops_it_from_the_image(daemon, docker_cli, tmp_path, uniq):
    """Deleting a context file (and its directory) between two builds: the
    daemon's cached copy of the context loses it too, so the rebuilt image
    does not have it (the whole-build reuse must not replay the old result)."""
    ctx = lib.make_context(tmp_path / "ctx", {
        "Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"LABEL run={uniq}", "COPY . /ctx"),
        "a.txt": "a\n", "sub/b.txt": "b\n"})
    tag = f"bk-delete-{uniq}"
    image = image_ref(tag)
    r, log = docker_build(daemon, docker_cli, ctx, "-t", tag)
    assert r.returncode == 0, explain(r, daemon, log)
    assert daemon.image_paths(image, "/ctx/a.txt", "/ctx/sub/b.txt") == {"/ctx/a.txt": True, "/ctx/sub/b.txt": True}
    first_id = daemon.image_id(image)
    (ctx / "sub" / "b.txt").unlink()
    (ctx / "sub").rmdir()
    r, log = docker_build(daemon, docker_cli, ctx, "-t", tag)
    assert r.returncode == 0, explain(r, daemon, log)
    _, entries, requested, _ = log.one_sync()
    assert (entries, requested) == (2, 0), log.text()[-3000:]
    assert daemon.image_id(image) != first_id
    assert daemon.image_paths(image, "/ctx/a.txt", "/ctx/sub") == {"/ctx/a.txt": True, "/ctx/sub": False}


def test_buildkit_named_dockerfile_with_its_own_dockerignore_and_target(daemon, docker_cli, tmp_path, uniq):
    """`-f build/Other.Dockerfile --target two`: the named file is used, its own
    Other.Dockerfile.dockerignore beats the context's .dockerignore, and the
    image is the target stage; `--no-cache` then runs the RUN again."""
    ctx = lib.make_context(tmp_path / "ctx", {
        "build/Other.Dockerfile": containerfile(
            f"FROM {BASE_IMAGE} AS one", "RUN echo one > /stage",
            f"FROM {BASE_IMAGE} AS two", f"RUN echo two-{uniq} > /stage", "COPY . /ctx",
            f"FROM {BASE_IMAGE} AS three", "RUN echo three > /stage"),
        "build/Other.Dockerfile.dockerignore": "x.txt\n",
        ".dockerignore": "y.txt\n",
        "x.txt": "x\n", "y.txt": "y\n"})
    tag = f"bk-named-{uniq}"
    image = image_ref(tag)
    r, log = docker_build(daemon, docker_cli, ctx, "-f", "build/Other.Dockerfile", "--target", "two", "-t", tag)
    assert r.returncode == 0, explain(r, daemon, log)
    assert "[internal] load build definition from Other.Dockerfile" in plain_vertices(r.stderr), r.stderr
    assert daemon.image_file(image, "/stage") == f"two-{uniq}\n".encode()
    assert daemon.image_paths(image, "/ctx/x.txt", "/ctx/y.txt") == {"/ctx/x.txt": False, "/ctx/y.txt": True}

    r, log = docker_build(daemon, docker_cli, ctx, "-f", "build/Other.Dockerfile", "--target", "two",
                          "--no-cache", "-t", tag)
    assert r.returncode == 0, explain(r, daemon, log)
    v = plain_vertices(r.stderr)
    runs = [n for n in v if f"RUN echo two-{uniq}" in n]
    assert len(runs) == 1 and is_done(v[runs[0]]) and not is_cached(v[runs[0]]), r.stderr
    assert daemon.image_file(image, "/stage") == f"two-{uniq}\n".encode()


# --------------------------------------------------------------------------
# 5: failure


def test_buildkit_failing_RUN_exits_nonzero_and_shows_the_RUN_output(daemon, docker_cli, tmp_path, uniq):
    """`RUN echo about-to-fail && exit 3`: the CLI exits 3, prints the RUN's
    output and an ERROR for that step; no image, no leftover container."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"LABEL run={uniq}", "RUN echo about-to-fail && exit 3")})
    tag = f"bk-fail-{uniq}"
    r, log = docker_build(daemon, docker_cli, ctx, "-t", tag)
    assert r.returncode == 3, explain(r, daemon, log)
    assert "about-to-fail" in r.stderr
    v = plain_vertices(r.stderr)
    step = "[3/3] RUN echo about-to-fail && exit 3"
    assert step in v, r.stderr
    assert any(l.startswith("ERROR") for l in v[step]), v[step]
    assert not daemon.image_exists(image_ref(tag))
    assert daemon.working_containers() == []


# --------------------------------------------------------------------------
# 6: secrets


def test_buildkit_secret_is_readable_in_RUN_and_leaves_no_trace(daemon, docker_cli, tmp_path, uniq):
    """`--secret id=s,src=FILE` + `RUN --mount=type=secret,id=s`: the RUN reads
    the secret (its length lands in /len), but its bytes are in no blob of the
    image, not in the daemon log, not under --state-dir or the daemon's TMPDIR,
    and no /dev/shm/podsolve-secrets-* dir outlives the build."""
    marker = f"PODSOLVE-SECRET-{os.urandom(12).hex()}"
    secret = tmp_path / "secret.txt"          # outside the context on purpose
    secret.write_text(marker)
    os.chmod(secret, 0o600)
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"LABEL run={uniq}",
        "RUN --mount=type=secret,id=s cat /run/secrets/s | wc -c > /len")})
    tag = f"bk-secret-{uniq}"
    shm_before = secrets_dirs()
    r, log = docker_build(daemon, docker_cli, ctx, "--secret", f"id=s,src={secret}", "-t", tag)
    assert r.returncode == 0, explain(r, daemon, log)
    image = image_ref(tag)
    assert daemon.image_file(image, "/len").strip() == str(len(marker)).encode()
    needle = marker.encode()

    # Every blob of the image (layers, config, manifest), decompressed if gzip.
    out = tmp_path / "image-dir"
    daemon.buildah("push", image, f"dir:{out}")
    blobs = [p for p in out.iterdir() if p.is_file()]
    assert len(blobs) >= 3, blobs
    leaking = [p.name for p in blobs if any(needle in b for b in blob_bytes(p))]
    assert leaking == [], f"secret bytes in image blobs {leaking}"
    assert marker not in r.output

    assert needle not in daemon.log_path.read_bytes(), "secret bytes in the daemon log"
    assert scan_tree_for(daemon.state, needle) == [], "secret bytes under --state-dir"
    assert scan_tree_for(daemon.tmpdir, needle) == [], "secret bytes under the daemon's TMPDIR"

    lib.wait_for(lambda: not secrets_dirs() - shm_before, 5)
    assert secrets_dirs() - shm_before == set(), f"left on /dev/shm: {secrets_dirs() - shm_before}"


# --------------------------------------------------------------------------
# 6b: ssh agent forwarding


def ssh_dirs():
    return {p for p in os.listdir("/dev/shm") if p.startswith("podsolve-ssh-")}


def test_buildkit_ssh_forwards_the_agent_to_RUN_mount_type_ssh(daemon, docker_cli, ssh_agent, tmp_path, uniq):
    """`docker build --ssh default` (SSH_AUTH_SOCK: the user's ssh-agent) +
    `RUN --mount=type=ssh`: the RUN lists the agent's key through the
    session's SSH service; its comment is in the RUN's output and the image,
    and the forwarded socket's directory is gone after the build.  Without
    --ssh the same build (the mount is required) fails naming the id,
    leaving nothing behind."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"LABEL run={uniq}",
        "COPY agent-probe /agent-probe",
        "RUN --mount=type=ssh,required=true /agent-probe | tee /agent-keys")})
    lib.agent_probe(ctx / "agent-probe")
    tag = f"bk-ssh-{uniq}"
    shm_before = ssh_dirs()
    mark = LogMark(daemon)
    env = {**bk_env(daemon, docker_cli), "SSH_AUTH_SOCK": ssh_agent.sock}
    r = run([docker_cli, "build", "--progress=plain", "--ssh", "default", "-t", tag, "."], env, cwd=ctx)
    assert r.returncode == 0, explain(r, daemon, mark)
    assert f"key: {ssh_agent.comment}" in r.stderr, explain(r, daemon, mark)
    assert daemon.image_file(image_ref(tag), "/agent-keys") == f"key: {ssh_agent.comment}\nkeys: 1\n".encode()
    assert lib.wait_for(lambda: not ssh_dirs() - shm_before, 5), f"left on /dev/shm: {ssh_dirs() - shm_before}"

    tag2 = f"bk-ssh-none-{uniq}"
    r, log = docker_build(daemon, docker_cli, ctx, "--no-cache", "-t", tag2)
    assert r.returncode != 0, explain(r, daemon, log)
    assert 'no SSH key "default" forwarded from the client' in r.stderr, explain(r, daemon, log)
    assert not daemon.image_exists(image_ref(tag2))
    assert daemon.working_containers() == []
    assert daemon.alive()


# --------------------------------------------------------------------------
# 7: Ctrl-C


def test_buildkit_ctrl_c_during_RUN_cancels_the_build(daemon, docker_cli, tmp_path, uniq):
    """SIGINT to `docker build` while `RUN sleep 40` runs: the CLI posts
    /build/cancel and closes the session; within 15 s the sleep is gone and
    no working container is left."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"LABEL run={uniq}", "RUN sleep 40")})
    mark = LogMark(daemon)
    out = open(tmp_path / "cli.out", "w+")
    cli = subprocess.Popen([docker_cli, "build", "--progress=plain", "-t", f"bk-cancel-{uniq}", "."],
                           env=bk_env(daemon, docker_cli), cwd=ctx, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + lib.scaled(30)
        sleeps = []
        while not sleeps and time.monotonic() < deadline and cli.poll() is None:
            time.sleep(0.2)
            sleeps = sleep40_pids(daemon)
        assert sleeps, (f"`sleep 40` never started under the daemon (cli exit {cli.poll()}):\n"
                        f"{Path(out.name).read_text()[-3000:]}\n{mark.text()[-3000:]}")
        cli.send_signal(signal.SIGINT)
        deadline = time.monotonic() + lib.scaled(15)
        while time.monotonic() < deadline:
            alive = [p for p in sleeps if pid_is(p, "sleep 40")] + sleep40_pids(daemon)
            if not alive and daemon.working_containers() == [] and cli.poll() is not None:
                break
            time.sleep(0.25)
        cli_output = Path(out.name).read_text()
        alive = [p for p in sleeps if pid_is(p, "sleep 40")] + sleep40_pids(daemon)
        assert alive == [], f"`sleep 40` still running 15 s after SIGINT: {alive}\n{mark.text()[-3000:]}"
        assert daemon.working_containers() == [], daemon.working_containers()
        assert cli.poll() is not None, "docker build still running 15 s after SIGINT"
        assert cli.returncode != 0, cli_output
        assert "POST /v1.41/build/cancel 200" in mark.text(), mark.text()[-3000:]
        assert not daemon.image_exists(image_ref(f"bk-cancel-{uniq}"))
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(lib.scaled(10))
        out.close()


# --------------------------------------------------------------------------
# 8-9: other ways of asking for a BuildKit build


def test_docker_compose_with_cli_build_and_buildkit_builds_the_service(daemon, docker_cli, tmp_path, uniq):
    """docker-compose 1.29 with COMPOSE_DOCKER_CLI_BUILD=1 DOCKER_BUILDKIT=1 and
    the 20.10 CLI first in PATH shells out to `docker build` in BuildKit mode;
    the service image exists with the right content."""
    name = f"bk-compose-{uniq}"
    ctx = lib.make_context(tmp_path / "compose", {
        "Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN echo compose-{uniq} > /c.txt",
                                    "COPY file.txt /file.txt"),
        "file.txt": "compose file\n",
        "docker-compose.yml": ('version: "3"\n'
                               "services:\n"
                               "  app:\n"
                               "    build:\n"
                               "      context: .\n"
                               f"    image: {name}:latest\n"),
    })
    env = bk_env(daemon, docker_cli, "1")
    env["COMPOSE_DOCKER_CLI_BUILD"] = "1"
    mark = LogMark(daemon)
    r = run(["docker-compose", "-p", f"bkproj{uniq}", "build"], env, cwd=ctx)
    assert r.returncode == 0, explain(r, daemon, mark)
    image = image_ref(name)
    assert daemon.image_file(image, "/c.txt") == f"compose-{uniq}\n".encode()
    assert daemon.image_file(image, "/file.txt") == b"compose file\n"
    assert mark.synced(), f"compose's build did not go over a session:\n{mark.text()[-3000:]}"


def test_buildkit_quiet_build_prints_only_the_image_id(daemon, docker_cli, tmp_path, uniq):
    """`docker build -q -t NAME .` in BuildKit mode prints `sha256:<id>` and
    nothing else on stdout; that is the tagged image's ID."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"RUN echo quiet-{uniq} > /q.txt")})
    tag = f"bk-quiet-{uniq}"
    r, log = docker_build(daemon, docker_cli, ctx, "-q", "-t", tag, progress=None)
    assert r.returncode == 0, explain(r, daemon, log)
    printed = r.stdout.strip()
    assert IMAGE_ID.match(printed), explain(r, daemon, log)
    image = image_ref(tag)
    assert printed == "sha256:" + daemon.image_id(image)
    assert daemon.image_file(image, "/q.txt") == f"quiet-{uniq}\n".encode()


def test_plain_docker_build_without_DOCKER_BUILDKIT_builds_the_image(daemon, docker_cli, tmp_path, uniq):
    """`docker build` with DOCKER_BUILDKIT unset: the CLI picks the builder from
    /_ping's Builder-Version (2 = BuildKit over a session, else the legacy tar
    upload); either way the image is built correctly."""
    status, headers, _ = daemon.request("GET", "/_ping")
    assert status == 200
    advertised = headers.get("Builder-Version")
    ctx = lib.make_context(tmp_path / "ctx", {
        "Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN echo default-{uniq} > /d.txt",
                                    "COPY f.txt /f.txt"),
        "f.txt": "default builder\n"})
    tag = f"bk-default-{uniq}"
    r, log = docker_build(daemon, docker_cli, ctx, "-t", tag, buildkit=None, progress=None)
    assert r.returncode == 0, explain(r, daemon, log)
    image = image_ref(tag)
    assert daemon.image_file(image, "/d.txt") == f"default-{uniq}\n".encode()
    assert daemon.image_file(image, "/f.txt") == b"default builder\n"
    if advertised == "2":
        assert log.synced(), f"/_ping says Builder-Version 2 but the CLI did not use a session:\n{log.text()[-3000:]}"
    else:
        assert not log.synced(), f"/_ping says Builder-Version {advertised!r} but a session build ran"


# --------------------------------------------------------------------------
# 11: --output (FileSend)

OUTPUT_DOCKERFILE = (
    f"FROM {BASE_IMAGE} AS build",
    "RUN mkdir -p /out/sub && echo built-{uniq} > /out/result.txt && echo nested > /out/sub/n.txt",
    "FROM scratch",
    "COPY --from=build /out/ /",
)


def output_context(tmp_path, uniq):
    return lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        *[l.format(uniq=uniq) if "{uniq}" in l else l for l in OUTPUT_DOCKERFILE])})


def test_buildkit_output_local_writes_the_files_into_dest(daemon, docker_cli, tmp_path, uniq):
    """`--output type=local,dest=DIR`: the final stage's files land in DIR."""
    ctx = output_context(tmp_path, uniq)
    dest = tmp_path / "out"
    r, log = docker_build(daemon, docker_cli, ctx, "--output", f"type=local,dest={dest}")
    assert r.returncode == 0, explain(r, daemon, log)
    assert (dest / "result.txt").read_text() == f"built-{uniq}\n", explain(r, daemon, log)
    assert (dest / "sub" / "n.txt").read_text() == "nested\n"


def test_buildkit_output_tar_writes_an_archive_of_the_files(daemon, docker_cli, tmp_path, uniq):
    """`--output type=tar,dest=F`: F is a tar holding the final stage's files."""
    ctx = output_context(tmp_path, uniq)
    dest = tmp_path / "out.tar"
    r, log = docker_build(daemon, docker_cli, ctx, "--output", f"type=tar,dest={dest}")
    assert r.returncode == 0, explain(r, daemon, log)
    assert dest.is_file() and dest.stat().st_size > 0, explain(r, daemon, log)
    with tarfile.open(dest) as tf:
        names = {n.lstrip("./").rstrip("/") for n in tf.getnames()}
        assert {"result.txt", "sub/n.txt"} <= names, names
        member = next(m for m in tf.getmembers() if m.name.lstrip("./") == "result.txt")
        assert tf.extractfile(member).read() == f"built-{uniq}\n".encode()
