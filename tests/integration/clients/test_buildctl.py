"""buildctl (BuildKit v0.32.2's own client) against podsolved's
buildkitd-compatible socket, `--buildkit-listen unix:///PATH` (issue #13):
prior-knowledge h2c, Control.Solve in direct mode (dockerfile.v0, or a
Definition read from stdin), sessions over Control.Session.  Each test
checks the image in containers-storage or the files buildctl wrote.
"""

import functools
import json
import re
import shutil
import subprocess

import pytest

import llbgen as llb
import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, containerfile

run = functools.partial(lib.run, timeout=180)
explain = lib.explain

CTX = {
    "Dockerfile": containerfile(
        f"FROM {BASE_IMAGE} AS base",
        "ARG WHO=nobody",
        'RUN echo "built by $WHO" > /who',
        "FROM base",
        "LABEL via=buildctl",
        "COPY data.txt /data.txt"),
    "data.txt": "buildctl context file\n",
}


@pytest.fixture(scope="module")
def bkd():
    """A podsolved with --buildkit-listen (its own storage; module-wide);
    .buildkit_addr is the address for buildctl --addr."""
    with lib.private_daemon("podsolve-it-buildctl-", buildkit_listen=True) as d:
        yield d


def buildctl(clients, d, *args, cwd=None, input=None, timeout=180):
    return run([clients.buildctl, "--addr", d.buildkit_addr, *args], clients.env(d), cwd=cwd, input=input,
               timeout=timeout)


def test_buildctl_debug_workers_lists_the_worker(bkd, go_clients):
    """`buildctl debug workers` (Control.ListWorkers) shows one worker with
    the machine's platform."""
    r = buildctl(go_clients, bkd, "debug", "workers")
    assert r.returncode == 0, explain(r, bkd)
    rows = [l.split() for l in r.stdout.splitlines()[1:] if l.strip()]
    assert len(rows) == 1 and rows[0][-1] == "linux/amd64", r.stdout


def test_buildctl_dockerfile_frontend_to_image(bkd, go_clients, tmp_path, uniq):
    """`buildctl build --frontend dockerfile.v0 --local context=. --local
    dockerfile=. --opt build-arg:WHO=… --output type=image,"name=A,B"
    --metadata-file F`: both names are in storage for one image with the
    build arg, the copied file and the label; the metadata's digests are the
    image's config digest (its ID) and manifest digest in storage."""
    ctx = lib.make_context(tmp_path / "ctx", CTX)
    a, b = f"docker.io/library/bctl-{uniq}:latest", f"docker.io/library/bctl-{uniq}:v2"
    meta = tmp_path / "meta.json"
    r = buildctl(go_clients, bkd, "build", "--progress=plain", "--frontend", "dockerfile.v0",
                 "--local", "context=.", "--local", "dockerfile=.", "--opt", f"build-arg:WHO={uniq}",
                 "--output", f'type=image,"name={a},{b}"', "--metadata-file", str(meta), cwd=ctx)
    assert r.returncode == 0, explain(r, bkd)
    assert bkd.image_exists(a) and bkd.image_exists(b), explain(r, bkd)
    image_id = bkd.image_id(a)
    assert bkd.image_id(b) == image_id
    assert bkd.image_file(a, "/who") == f"built by {uniq}\n".encode()
    assert bkd.image_file(a, "/data.txt") == b"buildctl context file\n"
    assert bkd.image_labels(a).get("via") == "buildctl"
    md = json.loads(meta.read_text())
    assert md.get("containerimage.config.digest") == f"sha256:{image_id}", md
    assert md.get("containerimage.digest") == bkd.image_inspect(a)["FromImageDigest"], md
    assert md.get("image.name") == f"{a},{b}", md


def test_buildctl_dockerfile_frontend_to_local_dir(bkd, go_clients, tmp_path, uniq):
    """`--opt target=base --output type=local,dest=DIR`: the stage's files
    come back to buildctl over its session (Control.Session, FileSend)."""
    ctx = lib.make_context(tmp_path / "ctx", CTX)
    dest = tmp_path / "out"
    r = buildctl(go_clients, bkd, "build", "--progress=plain", "--frontend", "dockerfile.v0",
                 "--local", "context=.", "--local", "dockerfile=.", "--opt", "target=base",
                 "--opt", f"build-arg:WHO=local-{uniq}", "--output", f"type=local,dest={dest}", cwd=ctx)
    assert r.returncode == 0, explain(r, bkd)
    assert (dest / "who").read_text() == f"built by local-{uniq}\n"
    assert not (dest / "data.txt").exists()


def test_buildctl_llb_definition_from_stdin(bkd, go_clients, uniq):
    """An LLB definition (tests/fixtures/llbgen.py) piped to `buildctl
    build --output type=image,name=…`: the exec and file ops run and the
    result is an image in storage."""
    img = llb.source(f"docker-image://{BASE_IMAGE}")
    run_op = llb.exec_(root=img, args=["sh", "-c", f"echo llb-{uniq} > /from-exec"])
    mk = llb.file([llb.mkfile("/from-fileop", f"fileop {uniq}\n")], inputs=[run_op], base=0)
    name = f"docker.io/library/bctl-llb-{uniq}:latest"
    proc = subprocess.run([go_clients.buildctl, "--addr", bkd.buildkit_addr, "build", "--progress=plain",
                               "--output", f"type=image,name={name}"], env=go_clients.env(bkd),
                              input=llb.definition_pb([img, run_op, mk]), capture_output=True,
                              timeout=lib.scaled(180))
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-4000:]}\n--- log:\n{bkd.log_tail(4000)}"
    assert re.search(r"^#\d+ .*echo llb-", out, re.M), out
    assert bkd.image_file(name, "/from-exec") == f"llb-{uniq}\n".encode()
    assert bkd.image_file(name, "/from-fileop") == f"fileop {uniq}\n".encode()


def test_buildctl_ssh_reaches_an_llb_ssh_mount_and_a_dockerfile_run(bkd, go_clients, ssh_agent, tmp_path, uniq):
    """`buildctl build --ssh mykey=SOCK` (a real ssh-agent): an LLB exec with
    an ssh mount of id mykey (the Definition from stdin) and a Dockerfile's
    `RUN --mount=type=ssh,id=mykey` (dockerfile.v0) both list the agent's
    key through buildctl's session (Control.Session, SSH.ForwardAgent)."""
    probe = lib.agent_probe(tmp_path / "agent-probe")
    img = llb.source(f"docker-image://{BASE_IMAGE}")
    with_probe = llb.file([llb.mkfile("/agent-probe", probe.read_bytes(), 0o755)], inputs=[img], base=0)
    run_op = llb.exec_(root=with_probe, args=["sh", "-c", f"/agent-probe /run/a.sock > /keys # {uniq}"],
                       mounts=[llb.mount(-1, "/run/a.sock", type=llb.SSH, ssh="mykey")])
    name = f"docker.io/library/bctl-ssh-llb-{uniq}:latest"
    proc = subprocess.run([go_clients.buildctl, "--addr", bkd.buildkit_addr, "build", "--progress=plain",
                           "--ssh", f"mykey={ssh_agent.sock}", "--output", f"type=image,name={name}"],
                          env=go_clients.env(bkd), input=llb.definition_pb([img, with_probe, run_op]),
                          capture_output=True, timeout=lib.scaled(180))
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-4000:]}\n--- log:\n{bkd.log_tail(4000)}"
    assert bkd.image_file(name, "/keys") == f"key: {ssh_agent.comment}\nkeys: 1\n".encode()

    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", "COPY agent-probe /agent-probe",
        f"RUN --mount=type=ssh,id=mykey /agent-probe > /keys # {uniq}")})
    shutil.copy(probe, ctx / "agent-probe")
    name = f"docker.io/library/bctl-ssh-df-{uniq}:latest"
    r = buildctl(go_clients, bkd, "build", "--progress=plain", "--frontend", "dockerfile.v0", "--local", "context=.",
                 "--local", "dockerfile=.", "--ssh", f"mykey={ssh_agent.sock}",
                 "--output", f"type=image,name={name}", cwd=ctx)
    assert r.returncode == 0, explain(r, bkd)
    assert bkd.image_file(name, "/keys") == f"key: {ssh_agent.comment}\nkeys: 1\n".encode()
