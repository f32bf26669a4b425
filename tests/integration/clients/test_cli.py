"""The podsolve CLI against a real podsolved: `podsolve build` tars the
context (honouring .dockerignore), streams POST /solve, renders the
progress, downloads outputs; `ls`, `status` and `cancel` work on solves by
ref.  Each test runs the binary the way a user would and checks what the
user gets: images in storage, files on disk, text on the terminal.

Environment:
  PODSOLVE_CLI   the CLI binary (default: <repo>/client/podsolve)
"""

import base64
import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import tarfile
import time

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, containerfile

CLI = os.environ.get("PODSOLVE_CLI") or str(lib.REPO_ROOT / "client" / "podsolve")


@pytest.fixture(scope="module", autouse=True)
def cli_binary():
    if not os.access(CLI, os.X_OK):
        pytest.fail(f"podsolve CLI not found at {CLI} (build it with `make client/podsolve` or set PODSOLVE_CLI)",
                    pytrace=False)


def cli_env(daemon, extra=None):
    env = daemon.env()
    env["PODSOLVE_HOST"] = f"unix://{daemon.sock}"
    env["TMPDIR"] = str(daemon.tmpdir)
    env.pop("NO_COLOR", None)
    env.pop("SSH_AUTH_SOCK", None)
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def podsolve(daemon, *args, cwd=None, timeout=240, stdin=None, env=None):
    """Run the CLI to completion; the result has .output = stdout + stderr.
    `env`: variables to set (None: unset) on top of cli_env."""
    r = subprocess.run([CLI, *map(str, args)], env=cli_env(daemon, env), cwd=cwd, capture_output=True,
                       timeout=lib.scaled(timeout), input=stdin)
    r.out = r.stdout.decode("utf-8", "replace")
    r.err = r.stderr.decode("utf-8", "replace")
    return r


def explain(r, daemon):
    return (f"exit {r.returncode}\n--- stdout:\n{r.out[-3000:]}\n--- stderr:\n{r.err[-5000:]}"
            f"\n--- podsolved log tail:\n{daemon.log_tail(3000)}")


def jobs(daemon):
    r = podsolve(daemon, "ls", "--json")
    assert r.returncode == 0, explain(r, daemon)
    return {j["ref"]: j for j in json.loads(r.out)}


def wait_for_state(daemon, ref, states, timeout=60):
    def reached():
        job = jobs(daemon).get(ref)
        return job if job and job["state"] in states else None
    job = lib.wait_for(reached, timeout, step=0.2)
    assert job, f"solve {ref} never reached {states}; jobs: {jobs(daemon)}"
    return job


HELLO = {
    "Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}",
        "ARG GREETING=default",
        "RUN echo \"$GREETING\" > /greeting.txt && cat /greeting.txt",
        "COPY app.txt /app/app.txt"),
    "app.txt": "app file\n",
}


# ---- build ----------------------------------------------------------------------


def test_build_with_tag_and_build_arg_stores_the_image_with_the_file(daemon, tmp_path, uniq):
    """`podsolve build -t NAME --build-arg K=V --label K=V CTX` exits 0 and the
    image is in storage under NAME, with the RUN's output built from the
    argument, the copied file and the label."""
    ctx = lib.make_context(tmp_path / "ctx", HELLO)
    image = f"localhost/cli-tag-{uniq}:1"
    r = podsolve(daemon, "build", "-t", image, "--build-arg", f"GREETING=hi-{uniq}",
                 "--label", f"cli.test={uniq}", "--progress=plain", ctx)
    assert r.returncode == 0, explain(r, daemon)
    assert daemon.image_file(image, "/greeting.txt") == f"hi-{uniq}\n".encode()
    assert daemon.image_file(image, "/app/app.txt") == b"app file\n"
    assert daemon.image_labels(image).get("cli.test") == uniq


def test_build_output_local_writes_the_image_filesystem_into_a_directory(daemon, tmp_path, uniq):
    """`--output type=local,dest=DIR` leaves the built filesystem in DIR on the
    client, with the files the Dockerfile made and copied."""
    ctx = lib.make_context(tmp_path / "ctx", HELLO)
    dest = tmp_path / "out"
    r = podsolve(daemon, "build", "--build-arg", f"GREETING=local-{uniq}", "--output", f"type=local,dest={dest}",
                 "--progress=plain", ctx)
    assert r.returncode == 0, explain(r, daemon)
    assert (dest / "greeting.txt").read_text() == f"local-{uniq}\n"
    assert (dest / "app" / "app.txt").read_text() == "app file\n"
    assert (dest / "bin" / "busybox").is_file()
    assert os.path.islink(dest / "bin" / "sh"), "symlinks of the image stay symlinks"


def test_build_output_tar_writes_a_tar_of_the_image_filesystem(daemon, tmp_path, uniq):
    """`--output type=tar,dest=FILE` writes a tar holding the image's paths;
    `-o -` writes the same tar to stdout."""
    ctx = lib.make_context(tmp_path / "ctx", HELLO)
    dest = tmp_path / "image.tar"
    r = podsolve(daemon, "build", "--build-arg", f"GREETING=tar-{uniq}", "-o", f"type=tar,dest={dest}",
                 "--progress=plain", ctx)
    assert r.returncode == 0, explain(r, daemon)
    with tarfile.open(dest) as tf:
        names = {n.lstrip("./") for n in tf.getnames()}
        assert {"greeting.txt", "app/app.txt", "bin/busybox"} <= names, sorted(names)[:50]
        assert tf.extractfile(next(m for m in tf.getmembers() if m.name.lstrip("./") == "greeting.txt")).read() \
            == f"tar-{uniq}\n".encode()
    assert not list(tmp_path.glob(".podsolve-*")), "no temporary file is left beside the destination"

    r = podsolve(daemon, "build", "--build-arg", f"GREETING=tar-{uniq}", "-o", "-", "--progress=quiet", ctx)
    assert r.returncode == 0, explain(r, daemon)
    stdout_tar = tmp_path / "stdout.tar"
    stdout_tar.write_bytes(r.stdout)
    with tarfile.open(stdout_tar) as tf:
        assert "app/app.txt" in {n.lstrip("./") for n in tf.getnames()}


def test_build_output_oci_writes_an_oci_archive(daemon, tmp_path, uniq):
    """`--output type=oci,dest=FILE,name=N` downloads an OCI image layout tar."""
    ctx = lib.make_context(tmp_path / "ctx", HELLO)
    dest = tmp_path / "oci.tar"
    r = podsolve(daemon, "build", "-o", f"type=oci,dest={dest},name=localhost/cli-oci-{uniq}:1",
                 "--progress=plain", ctx)
    assert r.returncode == 0, explain(r, daemon)
    with tarfile.open(dest) as tf:
        names = set(tf.getnames())
        assert {"oci-layout", "index.json"} <= names, sorted(names)


def test_build_with_dockerfile_outside_the_context(daemon, tmp_path, uniq):
    """`-f ../elsewhere/Dockerfile CTX` sends the Dockerfile as its own part;
    the context's files are still what COPY sees."""
    ctx = lib.make_context(tmp_path / "ctx", {"app.txt": "outside-df\n"})
    other = lib.make_context(tmp_path / "other", {"Build.df": containerfile(
        f"FROM {BASE_IMAGE}", "COPY app.txt /from-ctx.txt")})
    dest = tmp_path / "out"
    r = podsolve(daemon, "build", "-f", other / "Build.df", "-o", dest, "--progress=plain", ctx)
    assert r.returncode == 0, explain(r, daemon)
    assert (dest / "from-ctx.txt").read_text() == "outside-df\n"


def test_dockerignore_keeps_ignored_files_out_of_the_context(daemon, tmp_path, uniq):
    """Files .dockerignore excludes never leave the client: a 4 MB ignored file
    does not show in the transferred size, and ignored files are absent from
    the result while '!' exceptions come back."""
    ctx = lib.make_context(tmp_path / "ctx", {
        "Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY . /ctx/"),
        ".dockerignore": "secret.txt\nbig/\n*.log\n!keep.log\n",
        "kept.txt": "kept\n",
        "secret.txt": "do not send\n",
        "debug.log": "noise\n",
        "keep.log": "wanted\n",
        "big/blob.bin": os.urandom(4 * 1024 * 1024),
    })
    dest = tmp_path / "out"
    r = podsolve(daemon, "build", "-o", f"type=local,dest={dest}", "--progress=plain", ctx)
    assert r.returncode == 0, explain(r, daemon)
    got = {p.name for p in (dest / "ctx").iterdir()}
    assert {"kept.txt", "keep.log"} <= got, got
    assert not {"secret.txt", "debug.log", "big"} & got, got
    transferred = [line for line in r.err.splitlines() if "transferring context:" in line]
    assert transferred, r.err
    assert re.search(r"transferring context: [0-9.]+k?B done$", transferred[-1]), \
        f"the ignored 4 MB file was sent: {transferred[-1]}"


# ---- progress --------------------------------------------------------------------


def test_progress_plain_shows_numbered_steps_done_and_cached_on_rebuild(daemon, tmp_path, uniq):
    """--progress=plain prints BuildKit's plain text: "#N [1/4] FROM ...",
    RUN output prefixed "#N <seconds>", "#N DONE <t>s", the context transfer
    status; building again prints "#N CACHED" for the RUN."""
    ctx = lib.make_context(tmp_path / "ctx", HELLO)
    args = ["build", "--build-arg", f"GREETING=plain-{uniq}", "--progress=plain", ctx]
    r = podsolve(daemon, *args)
    assert r.returncode == 0, explain(r, daemon)
    lines = r.err.splitlines()
    assert any(l.startswith("#") and "[1/4] FROM localhost/busybox:latest" in l for l in lines), r.err
    run_header = next(l for l in lines if "[3/4] RUN echo" in l)
    n = run_header.split()[0]
    assert any(re.fullmatch(rf"{n} \d+\.\d{{3}} plain-{uniq}", l) for l in lines), r.err
    assert any(l.startswith(f"{n} DONE ") and l.endswith("s") for l in lines), r.err
    assert any("transferring context:" in l and l.endswith(" done") for l in lines), r.err

    r = podsolve(daemon, *args)
    assert r.returncode == 0, explain(r, daemon)
    lines = r.err.splitlines()
    n = next(l for l in lines if "[3/4] RUN echo" in l).split()[0]
    assert f"{n} CACHED" in lines, r.err


def test_progress_rawjson_prints_one_solve_status_per_line(daemon, tmp_path, uniq):
    """--progress=rawjson prints each SolveStatus object of the stream on its
    own line: JSON with vertexes (digest, name), and logs with base64 data."""
    ctx = lib.make_context(tmp_path / "ctx", HELLO)
    r = podsolve(daemon, "build", "--build-arg", f"GREETING=raw-{uniq}", "--progress=rawjson", ctx)
    assert r.returncode == 0, explain(r, daemon)
    statuses = [json.loads(line) for line in r.err.splitlines() if line.strip()]
    assert statuses, r.err
    assert all(isinstance(s, dict) and set(s) <= {"vertexes", "statuses", "logs", "warnings"} for s in statuses)
    names = [v["name"] for s in statuses for v in s.get("vertexes", [])]
    assert any("[3/4] RUN echo" in n for n in names), names
    assert all(v["digest"].startswith("sha256:") for s in statuses for v in s.get("vertexes", []))
    logs = b"".join(base64.b64decode(entry["data"]) for s in statuses for entry in s.get("logs", []))
    assert f"raw-{uniq}".encode() in logs


def test_failing_run_exits_non_zero_and_shows_its_output(daemon, tmp_path, uniq):
    """A RUN that fails makes `podsolve build` exit non-zero, and the summary
    names the failing step, shows its last output lines and the error."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"RUN echo before-failure-{uniq} && echo on-stderr-{uniq} >&2 && exit 3")})
    r = podsolve(daemon, "build", "--progress=plain", ctx)
    assert r.returncode == 1, explain(r, daemon)
    summary = r.err[r.err.index("------"):]
    assert f" > [2/2] RUN echo before-failure-{uniq}" in summary, r.err
    assert f"before-failure-{uniq}" in summary.split("------")[1]
    assert f"on-stderr-{uniq}" in summary.split("------")[1]
    assert "ERROR: " in summary and "exit status 3" in summary, r.err


def test_daemon_refusal_exits_1_with_the_daemons_message(daemon, tmp_path):
    """A request the daemon refuses before building (an invalid tag) exits 1
    and prints the daemon's message."""
    ctx = lib.make_context(tmp_path / "ctx", HELLO)
    r = podsolve(daemon, "build", "-t", "Not A Valid Tag", "--progress=plain", ctx)
    assert r.returncode == 1, explain(r, daemon)
    assert "invalid tag" in r.err and "Not A Valid Tag" in r.err, r.err


def test_unreachable_daemon_is_reported(daemon, tmp_path):
    """--host naming a socket nobody listens on: exit 1, the address in the message."""
    ctx = lib.make_context(tmp_path / "ctx", HELLO)
    missing = tmp_path / "nobody.sock"
    r = podsolve(daemon, "--host", f"unix://{missing}", "build", "--progress=plain", ctx)
    assert r.returncode == 1, explain(r, daemon)
    assert f"cannot connect to podsolved at unix://{missing}" in r.err, r.err


# ---- ls / status / cancel ------------------------------------------------------------


def test_ls_and_status_show_a_finished_solve_by_its_ref(daemon, tmp_path, uniq):
    """`build --ref R` names the solve: `ls` lists R as succeeded, and
    `status R` replays its progress and exits 0."""
    ctx = lib.make_context(tmp_path / "ctx", HELLO)
    ref = f"cli-ls-{uniq}"
    image = f"localhost/cli-ls-{uniq}:1"
    r = podsolve(daemon, "build", "--ref", ref, "-t", image, "--build-arg", f"GREETING=ls-{uniq}",
                 "--progress=quiet", ctx)
    assert r.returncode == 0, explain(r, daemon)
    # The result, last, on stdout: the image with its digest, and the ref.
    lines = r.stdout.decode().splitlines()
    assert re.fullmatch(rf"image {re.escape(image)} sha256:[0-9a-f]{{64}}", lines[-2]), r.stdout
    assert lines[-1] == f"ref {ref}", r.stdout
    # A 64-hex ref (the default kind) in the list too: the columns stay aligned.
    r = podsolve(daemon, "build", "--build-arg", f"GREETING=ls2-{uniq}", "--progress=quiet", ctx)
    assert r.returncode == 0, explain(r, daemon)

    r = podsolve(daemon, "ls")
    assert r.returncode == 0, explain(r, daemon)
    rows = r.out.splitlines()
    row = next(line for line in rows if line.startswith(ref))
    assert row.split()[1:3] == [image, "succeeded"], r.out
    header = rows[0]
    assert header.split()[:3] == ["REF", "NAME", "STATE"], header
    for line in rows[1:]:
        assert line.index(line.split()[2]) == header.index("STATE"), r.out
    assert ref in podsolve(daemon, "ls", "-q").out.split()

    r = podsolve(daemon, "status", "--progress=plain", ref)
    assert r.returncode == 0, explain(r, daemon)
    assert "[3/4] RUN echo" in r.err and f"ls-{uniq}" in r.err, r.err


def test_cancel_from_a_second_process_stops_a_running_build(daemon, tmp_path, uniq):
    """While `podsolve build --ref R` runs `RUN sleep 30`, `podsolve cancel R`
    from another process stops it: cancel exits 0, the build exits non-zero
    long before 30 s, and `ls` shows R cancelled."""
    nap = round(lib.scaled(30))   # the bound below stays meaningful under PODSOLVE_TEST_SLOW
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"RUN echo sleeping-{uniq} && sleep {nap}")})
    ref = f"cli-cancel-{uniq}"
    started = time.monotonic()
    build = subprocess.Popen([CLI, "build", "--ref", ref, "--progress=plain", str(ctx)], env=cli_env(daemon),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_state(daemon, ref, {"running"})
        # the shell execs its last command: the RUN's process is `sleep N`
        assert lib.wait_for(lambda: [p for p in daemon.descendants() if p[1].endswith(f"sleep {nap}")], 30), \
            f"the RUN step never started: {daemon.descendants()}"
        r = podsolve(daemon, "cancel", ref)
        assert r.returncode == 0, explain(r, daemon)
        assert f"{ref} cancelled" in r.out, r.out
        _, err = build.communicate(timeout=lib.scaled(30))
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert build.returncode not in (0, None), err.decode()
    assert time.monotonic() - started < nap - 2, "the build ran to the end of its sleep"
    assert "ERROR: " in err.decode(), err.decode()
    assert jobs(daemon)[ref]["state"] == "cancelled"


def test_interrupting_the_build_cancels_it_on_the_daemon(daemon, tmp_path, uniq):
    """SIGINT (Ctrl-C) to `podsolve build` exits 130 and the daemon cancels the
    solve, since its client went away."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", "RUN sleep 30")})
    ref = f"cli-sigint-{uniq}"
    build = subprocess.Popen([CLI, "build", "--ref", ref, "--progress=plain", str(ctx)], env=cli_env(daemon),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_state(daemon, ref, {"running"})
        assert lib.wait_for(lambda: [p for p in daemon.descendants() if p[1].endswith("sleep 30")], 30), \
            f"the RUN step never started: {daemon.descendants()}"
        build.send_signal(signal.SIGINT)
        _, err = build.communicate(timeout=lib.scaled(15))
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert build.returncode == 130, err.decode()
    assert "interrupted" in err.decode()
    job = wait_for_state(daemon, ref, {"cancelled", "failed"}, timeout=30)
    assert job["state"] == "cancelled", job


def test_cancel_of_an_unknown_ref_exits_1(daemon):
    r = podsolve(daemon, "cancel", "no-such-solve")
    assert r.returncode == 1, explain(r, daemon)
    assert "no solve with ref" in r.err, r.err


def test_build_flags_users_reach_for(daemon, tmp_path, uniq):
    """--add-host, --network none, --iidfile and --metadata-file map onto the
    SolveRequest (add-hosts, force-network-mode) and onto the result."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", "RUN cat /etc/hosts > /hosts")})
    image = f"localhost/cli-flags-{uniq}:1"
    iid, meta = tmp_path / "iid", tmp_path / "meta.json"
    r = podsolve(daemon, "build", "-t", image, "--add-host", "db.internal:10.1.2.3", "--no-cache",
                 "--iidfile", iid, "--metadata-file", meta, "--progress=plain", ctx)
    assert r.returncode == 0, explain(r, daemon)
    assert "10.1.2.3\tdb.internal" in daemon.image_file(image, "/hosts").decode().replace(" ", "\t")
    assert iid.read_text() == "sha256:" + daemon.image_id(image)
    md = json.loads(meta.read_text())
    assert md["image.name"] == image and md["containerimage.config.digest"] == iid.read_text(), md

    ctx2 = lib.make_context(tmp_path / "ctx2", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", "RUN ls /sys/class/net > /nets")})
    r = podsolve(daemon, "build", "-t", image, "--network", "none", "--no-cache", "--progress=plain", ctx2)
    assert r.returncode == 0, explain(r, daemon)
    assert daemon.image_file(image, "/nets").split() == [b"lo"]

    r = podsolve(daemon, "build", "--add-host", "nocolon", ctx)
    assert r.returncode == 2 and "--add-host nocolon: expected HOST:IP" in r.err, r.err


# ---- --secret and --ssh (served on a /session the CLI opens) ---------------------------


def image_blobs(daemon, image, out):
    """Every blob of the image (layers, config, manifest) as stored, plus the
    decompressed form of the gzip ones."""
    daemon.buildah("push", image, f"dir:{out}")
    blobs = []
    for p in out.iterdir():
        if p.is_file():
            data = p.read_bytes()
            blobs.append(data)
            if data[:2] == b"\x1f\x8b":
                blobs.append(gzip.decompress(data))
    return blobs


def podsolve_ssh_leftovers(daemon):
    return sorted(p.name for p in daemon.tmpdir.iterdir() if p.name.startswith("podsolve-ssh-"))


def test_build_secret_from_a_file_and_from_the_environment(daemon, tmp_path, uniq):
    """`--secret id=tok,src=FILE`, `--secret id=envtok,env=VAR` and
    `--secret id=typed,type=env,src=VAR`: the CLI serves them on a /session
    (Secrets/GetSecret) and each RUN --mount=type=secret reads its value
    (checked in the RUN itself, its sha256 kept in the image); no secret byte
    is in any blob of the image, nor is /run/secrets/ in it."""
    file_value = f"file-secret-{uniq}-{os.urandom(8).hex()}"
    env_value = f"env-secret-{uniq}-{os.urandom(8).hex()}"
    typed_value = f"typed-secret-{uniq}-{os.urandom(8).hex()}"
    secret = tmp_path / "tok.txt"               # outside the context on purpose
    secret.write_text(file_value)
    def sha(v):
        return hashlib.sha256(v.encode()).hexdigest()
    # the RUN checks the value by its digest: the Dockerfile (and so the
    # image's history) must not hold it either
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}",
        "RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /tok-sum"
        f" && test \"$(cat /tok-sum)\" = {sha(file_value)}",
        "RUN --mount=type=secret,id=envtok,required=true sha256sum /run/secrets/envtok | cut -d' ' -f1 > /envtok-sum"
        f" && test \"$(cat /envtok-sum)\" = {sha(env_value)}",
        "RUN --mount=type=secret,id=typed,target=/typed sha256sum /typed | cut -d' ' -f1 > /typed-sum")})
    image = f"localhost/cli-secret-{uniq}:1"
    r = podsolve(daemon, "build", "-t", image, "--progress=plain", "--secret", f"id=tok,src={secret}",
                 "--secret", "id=envtok,env=CLI_TEST_SECRET", "--secret", "ID=typed,Type=env,SOURCE=CLI_TYPED",
                 ctx, env={"CLI_TEST_SECRET": env_value, "CLI_TYPED": typed_value})
    assert r.returncode == 0, explain(r, daemon)
    sums = {p: daemon.image_file(image, p) for p in ("/tok-sum", "/envtok-sum", "/typed-sum")}
    assert sums == {"/tok-sum": f"{sha(file_value)}\n".encode(), "/envtok-sum": f"{sha(env_value)}\n".encode(),
                    "/typed-sum": f"{sha(typed_value)}\n".encode()}
    assert daemon.image_paths(image, "/run/secrets/tok", "/typed") == {"/run/secrets/tok": False, "/typed": False}
    blobs = image_blobs(daemon, image, tmp_path / "image-dir")
    assert len(blobs) >= 3
    for value in (file_value, env_value, typed_value):
        assert not any(value.encode() in b for b in blobs), f"secret {value} in a blob of the image"
        assert value not in r.out + r.err


def test_build_secret_id_alone_reads_the_variable_or_the_file_named_like_it(daemon, tmp_path, uniq):
    """`--secret id=ID` alone: $ID when it is set, else the file named ID
    (relative to the working directory), as buildx does."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}",
        "RUN --mount=type=secret,id=CLI_ALONE cat /run/secrets/CLI_ALONE | wc -c > /alone-len",
        "RUN --mount=type=secret,id=alone.txt cat /run/secrets/alone.txt | wc -c > /file-len")})
    (tmp_path / "alone.txt").write_text("x" * 7)
    image = f"localhost/cli-secret-alone-{uniq}:1"
    r = podsolve(daemon, "build", "-t", image, "--progress=plain", "--secret", "id=CLI_ALONE",
                 "--secret", "id=alone.txt", ctx, cwd=tmp_path, env={"CLI_ALONE": "abc"})
    assert r.returncode == 0, explain(r, daemon)
    assert daemon.image_file(image, "/alone-len").strip() == b"3"
    assert daemon.image_file(image, "/file-len").strip() == b"7"


def test_build_missing_required_secret_fails_naming_it(daemon, tmp_path, uniq):
    """A RUN whose required secret the CLI does not have (another --secret
    is given, so a session is open): the build exits 1 and says which
    secret is missing; no image is made."""
    other = tmp_path / "other.txt"
    other.write_text("other")
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"RUN --mount=type=secret,id=absent-{uniq},required=true cat /run/secrets/absent-{uniq}")})
    image = f"localhost/cli-secret-missing-{uniq}:1"
    r = podsolve(daemon, "build", "-t", image, "--progress=plain", "--secret", f"id=other,src={other}", ctx)
    assert r.returncode == 1, explain(r, daemon)
    assert f"absent-{uniq}" in r.err and "ERROR" in r.err, explain(r, daemon)
    assert not daemon.image_exists(image)


def test_bad_secret_and_ssh_flags_exit_2_before_anything_is_sent(daemon, tmp_path, uniq):
    """Usage errors of --secret and --ssh: exit 2 with the reason, and no
    solve reaches the daemon."""
    ctx = lib.make_context(tmp_path / "ctx", HELLO)
    cases = [
        (["--secret", "id=a,bogus=1"], "unexpected key 'bogus'"),
        (["--secret", "id=a,noequals"], "invalid field 'noequals' must be a key=value pair"),
        (["--secret", "id=a,type=socket"], 'unsupported secret type "socket"'),
        (["--secret", "src=/etc/hostname"], "no id="),
        (["--secret", f"id=a,src={tmp_path}/no-such-file"], f"secret file {tmp_path}/no-such-file"),
        (["--secret", "id=a,src=/etc/hostname,env=HOME"], "not both"),
        (["--ssh", "default"], "make sure SSH_AUTH_SOCK is set"),
        (["--ssh", f"k={tmp_path}/no-such-key"], f"{tmp_path}/no-such-key"),
        (["--ssh", f"k={tmp_path}"], "neither an agent socket nor a key file"),
    ]
    for i, (flags, message) in enumerate(cases):
        ref = f"cli-badflag-{uniq}-{i}"
        r = podsolve(daemon, "build", "--ref", ref, "--progress=plain", *flags, ctx)
        assert r.returncode == 2, f"{flags}: {explain(r, daemon)}"
        assert message in r.err, f"{flags}: {r.err}"
    listed = jobs(daemon)
    assert not [ref for ref in listed if ref.startswith(f"cli-badflag-{uniq}")], listed


def test_build_ssh_forwards_the_agent_and_key_files(daemon, tmp_path, ssh_agent, uniq):
    """`--ssh default` ($SSH_AUTH_SOCK: a real ssh-agent holding a generated
    key) and `--ssh k=KEYFILE` (a private key: the CLI starts an ssh-agent
    of its own for it): RUN --mount=type=ssh lists each agent's key through
    the session's SSH service (CheckAgent, ForwardAgent).  The CLI's own
    agent and its directory are gone afterwards."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", "COPY agent-probe /agent-probe",
        "RUN --mount=type=ssh,required=true /agent-probe > /agent-keys",
        "RUN --mount=type=ssh,id=k,required=true /agent-probe > /file-keys")})
    lib.agent_probe(ctx / "agent-probe")
    image = f"localhost/cli-ssh-{uniq}:1"
    before = podsolve_ssh_leftovers(daemon)
    r = podsolve(daemon, "build", "-t", image, "--progress=plain", "--ssh", "default",
                 "--ssh", f"k={ssh_agent.dir}/id_ed25519", ctx, env={"SSH_AUTH_SOCK": ssh_agent.sock})
    assert r.returncode == 0, explain(r, daemon)
    want = f"key: {ssh_agent.comment}\nkeys: 1\n".encode()
    assert daemon.image_file(image, "/agent-keys") == want
    assert daemon.image_file(image, "/file-keys") == want
    assert podsolve_ssh_leftovers(daemon) == before
    assert not lib.running(f"ssh-agent -D -a {daemon.tmpdir}/podsolve-ssh-"), "the CLI's ssh-agent outlived it"


def test_build_ssh_without_the_id_fails_naming_it(daemon, tmp_path, ssh_agent, uniq):
    """RUN --mount=type=ssh,id=missing,required=true while the CLI forwards
    only `default`: the daemon's CheckAgent gets NOT_FOUND, and the build
    fails naming the id."""
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", f"RUN --mount=type=ssh,id=missing-{uniq},required=true true")})
    r = podsolve(daemon, "build", "--progress=plain", "--ssh", f"default={ssh_agent.sock}", ctx)
    assert r.returncode == 1, explain(r, daemon)
    assert f'no SSH key "missing-{uniq}" forwarded from the client' in r.err, explain(r, daemon)


def test_build_secret_over_a_tcp_daemon_address(spawn_daemon, tmp_path, uniq):
    """--host tcp://HOST:PORT (a plain TCP listener): the session opens on
    that address too and the RUN reads the secret; an https:// address is
    refused up front (the session needs the raw socket)."""
    port = lib.free_port()
    d = spawn_daemon("--listen", f"tcp://127.0.0.1:{port}", "--insecure-tcp")
    secret = tmp_path / "tok"
    secret.write_text(f"tcp-secret-{uniq}")
    ctx = lib.make_context(tmp_path / "ctx", {"Dockerfile": containerfile(
        f"FROM {BASE_IMAGE}", "RUN --mount=type=secret,id=tok,required=true wc -c < /run/secrets/tok > /len")})
    image = f"localhost/cli-secret-tcp-{uniq}:1"
    r = podsolve(d, "--host", f"tcp://127.0.0.1:{port}", "build", "-t", image, "--progress=plain",
                 "--secret", f"id=tok,src={secret}", ctx)
    assert r.returncode == 0, explain(r, d)
    assert d.image_file(image, "/len").strip() == str(len(f"tcp-secret-{uniq}")).encode()

    r = podsolve(d, "--host", f"https://127.0.0.1:{port}", "build", "--secret", f"id=tok,src={secret}", ctx)
    assert r.returncode == 1, explain(r, d)
    assert "--secret and --ssh need a unix:// or plain tcp:// daemon address" in r.err, r.err
