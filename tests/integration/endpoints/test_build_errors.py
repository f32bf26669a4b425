"""What a client gets when a build cannot start or fails half way, and what
the daemon leaves behind (nothing).

Before streaming: an HTTP error with Podman's body {"cause","message",
"response"}.  After streaming started: HTTP 200 and a final
{"error","errorDetail"} line (capture F: errorDetail.code = the RUN exit
code).  After every case the daemon is alive and still builds."""

import json
import os
import re
import secrets
import time
from pathlib import Path

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, COMPAT_BUILD, LIBPOD_BUILD, containerfile, wait_for
from podsolve_testlib import running as sleepers

GOOD = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo ok > /ok.txt")}


def assert_api_error(r, status, *needles):
    """HTTP `status` with Podman's JSON error body whose message names every needle."""
    assert r.status == status, r.describe()
    assert r.headers.get_content_type() == "application/json", r.headers.get("Content-Type")
    try:
        err = json.loads(r.body)
    except ValueError:
        pytest.fail(f"HTTP {r.status} body is not JSON: {r.body[:500]!r}")
    assert set(err) >= {"cause", "message", "response"}, err
    assert err["response"] == status, err
    for n in needles:
        assert n.lower() in err["message"].lower(), f"{n!r} not in message {err['message']!r}"
    return err


def find_named(top, name):
    hits = []
    for dirpath, dirnames, filenames in os.walk(top):
        if name in filenames or name in dirnames:
            hits.append(os.path.join(dirpath, name))
    return hits


# --------------------------------------------------------------------------
# Rejected before streaming


@pytest.mark.parametrize("param,value", [
    ("buildargs", "notjson"),
    ("buildargs", '["a list", "not an object"]'),
    ("labels", "{unterminated"),
    ("ulimits", "nofile"),
    ("memory", "abc"),
    ("shmsize", "lots"),
])
def test_malformed_query_value_is_a_400_naming_the_parameter(daemon, daemon_builds, uniq, param, value):
    r = daemon.build(GOOD, {"t": f"bad-{uniq}", param: value})
    assert_api_error(r, 400, param)
    assert not daemon.image_exists(f"docker.io/library/bad-{uniq}:latest")
    daemon_builds(daemon)


def test_uppercase_tag_is_a_400_that_says_lowercase(daemon, daemon_builds):
    """Podman answers 500 with an empty body here; a user deserves to be
    told why `-t Upper` is refused."""
    r = daemon.build(GOOD, {"t": "Upper"})
    assert_api_error(r, 400, "lowercase")
    daemon_builds(daemon)


def test_body_that_is_not_a_tar_is_a_400(daemon, daemon_builds):
    r = daemon.build(body=b"this is not a tar archive\n" * 200, params={"t": "nottar"})
    assert_api_error(r, 400, "tar")
    daemon_builds(daemon)


@pytest.mark.parametrize("depth", [1, 12])
def test_tar_entry_with_dotdot_is_a_400_and_writes_nothing_outside(daemon, daemon_builds, depth):
    """`../evil` (one level up) and `../../…/tmp/evil` (aimed at /tmp)."""
    evil = "evil-" + secrets.token_hex(6)
    name = "../" * depth + ("tmp/" if depth > 1 else "") + evil
    body = lib.tar_entries([("Dockerfile", "file", GOOD["Dockerfile"]), (name, "file", "pwned\n")])
    r = daemon.build(body=body, params={"t": "dotdot"})
    assert_api_error(r, 400)
    assert find_named(daemon.tmp, evil) == []
    assert not os.path.lexists(f"/tmp/{evil}") and not os.path.lexists(f"/var/tmp/{evil}")
    daemon_builds(daemon)


def test_absolute_tar_entry_is_a_400_and_the_file_is_not_created(daemon, daemon_builds):
    target = f"/tmp/evil-{secrets.token_hex(6)}"
    body = lib.tar_entries([("Dockerfile", "file", GOOD["Dockerfile"]), (target, "file", "pwned\n")])
    r = daemon.build(body=body, params={"t": "absolute"})
    assert_api_error(r, 400)
    assert not os.path.lexists(target)
    assert find_named(daemon.tmp, os.path.basename(target)) == []
    daemon_builds(daemon)


def test_writing_through_a_symlink_out_of_the_context_is_a_400(daemon, daemon_builds, tmp_path):
    """`link -> /tmp/<dir>` followed by `link/evil`: nothing may appear in
    the link's target."""
    outside = Path("/tmp") / f"podsolve-escape-{secrets.token_hex(6)}"
    outside.mkdir()
    try:
        body = lib.tar_entries([("Dockerfile", "file", GOOD["Dockerfile"]),
                                ("link", "symlink", str(outside)),
                                ("link/evil", "file", "pwned\n")])
        r = daemon.build(body=body, params={"t": "symlinkescape"})
        assert_api_error(r, 400)
        assert list(outside.iterdir()) == []
    finally:
        for p in outside.iterdir():
            p.unlink()
        outside.rmdir()
    daemon_builds(daemon)


def test_hardlink_to_a_host_file_is_a_400(daemon, daemon_builds, uniq):
    """A hard link naming a host path (not an earlier entry) would let COPY
    ship /etc/shadow into an image."""
    body = lib.tar_entries([("Dockerfile", "file", containerfile(f"FROM {BASE_IMAGE}", "COPY leak /leak")),
                            ("leak", "hardlink", "/etc/shadow")])
    r = daemon.build(body=body, params={"t": f"hardlink-{uniq}"})
    assert_api_error(r, 400)
    assert not daemon.image_exists(f"docker.io/library/hardlink-{uniq}:latest")
    daemon_builds(daemon)


@pytest.mark.parametrize("endpoint,dockerfile", [
    (COMPAT_BUILD, "../../../../../../../../tmp/{host}"),
    (COMPAT_BUILD, "/tmp/{host}"),
    (LIBPOD_BUILD, '["/tmp/{host}"]'),
])
def test_dockerfile_param_pointing_outside_the_context_is_a_400(daemon, daemon_builds, uniq, endpoint,
                                                                dockerfile):
    """dockerfile= may not make the daemon read a Dockerfile from its own
    filesystem (here a host file that would build an image)."""
    host = Path("/tmp") / f"podsolve-hostdf-{uniq}"
    host.write_text(containerfile(f"FROM {BASE_IMAGE}", "RUN echo host-file-was-read > /pwn"))
    try:
        r = daemon.build({"x": "y"}, {"t": f"outdf-{uniq}", "dockerfile": dockerfile.format(host=host.name)},
                         endpoint=endpoint)
        assert_api_error(r, 400, "context")
    finally:
        host.unlink()
    assert not daemon.image_exists(f"docker.io/library/outdf-{uniq}:latest")
    assert not daemon.image_exists(f"localhost/outdf-{uniq}:latest")
    daemon_builds(daemon)


@pytest.mark.parametrize("target", ["/tmp/{host}", "../../../../../../../../tmp/{host}"])
def test_dockerfile_that_is_a_symlink_out_of_the_context_is_a_400(daemon, daemon_builds, uniq, target):
    host = Path("/tmp") / f"podsolve-hostdf-{uniq}"
    host.write_text(containerfile(f"FROM {BASE_IMAGE}", "RUN echo host-file-was-read > /pwn"))
    try:
        body = lib.tar_entries([("Dockerfile", "symlink", target.format(host=host.name))])
        r = daemon.build(body=body, params={"t": f"symdf-{uniq}"})
        assert_api_error(r, 400, "Dockerfile")
    finally:
        host.unlink()
    assert not daemon.image_exists(f"docker.io/library/symdf-{uniq}:latest")
    daemon_builds(daemon)


def test_COPY_of_a_symlink_to_a_host_file_never_ships_the_host_file(daemon, daemon_builds, uniq):
    """`l -> /etc/passwd` in the context, `COPY l /l`: the image may hold
    the symlink or the build may fail, but never the host's file content."""
    host_content = Path("/etc/passwd").read_bytes()
    body = lib.tar_entries([("Dockerfile", "file", containerfile(f"FROM {BASE_IMAGE}", "COPY l /l")),
                            ("l", "symlink", "/etc/passwd")])
    r = daemon.build(body=body, params={"t": f"cpsym-{uniq}"})
    image = f"docker.io/library/cpsym-{uniq}:latest"
    if r.status == 200 and r.error is None:
        def check(mnt):
            p = mnt / "l"
            return p.is_symlink() or p.read_bytes() != host_content
        assert daemon._with_mounted(image, check), "the host's /etc/passwd was copied into the image"
    else:
        assert not daemon.image_exists(image)
    assert daemon.working_containers() == []
    daemon_builds(daemon)


def test_named_dockerfile_missing_from_the_context_is_a_400_naming_it(daemon, daemon_builds):
    r = daemon.build({"Containerfile": GOOD["Dockerfile"]}, {"t": "nodf", "dockerfile": "Nope.dockerfile"})
    assert_api_error(r, 400, "Nope.dockerfile")
    daemon_builds(daemon)


def test_compat_context_without_any_build_file_is_a_400_naming_Dockerfile(daemon, daemon_builds):
    r = daemon.build({"README": "no build file here\n"}, {"t": "nodf2"})
    assert_api_error(r, 400, "Dockerfile")
    daemon_builds(daemon)


def test_libpod_context_without_any_build_file_is_a_400(daemon, daemon_builds):
    r = daemon.build({"README": "no build file here\n"}, {"t": "nodf3"}, endpoint=LIBPOD_BUILD)
    err = assert_api_error(r, 400)
    assert "containerfile" in err["message"].lower() or "dockerfile" in err["message"].lower(), err
    daemon_builds(daemon)


def test_context_over_max_context_bytes_is_a_413(spawn_daemon, daemon_builds):
    """podsolved --max-context-bytes 1048576: a 2 MB context is refused with
    413 and the same daemon then builds a small context fine."""
    small = spawn_daemon("--max-context-bytes", "1048576")
    ctx = {"Dockerfile": GOOD["Dockerfile"], "big.bin": os.urandom(2 * 1024 * 1024)}
    try:
        r = small.build(ctx, {"t": "toobig"}, timeout=20)
    except TimeoutError:
        pytest.fail("no HTTP answer within 20 s to a 2 MB context on a 1 MiB limit (the client hangs); "
                    f"log tail:\n{small.log_tail(1500)}", pytrace=False)
    assert_api_error(r, 413)
    assert not small.image_exists("docker.io/library/toobig:latest")
    daemon_builds(small)


@pytest.mark.parametrize("bad,line,needles", [
    (["RUN <<EOF", "echo hi > /x", "EOF"], 3, ["RUN <<EOF", "heredocs are not supported"]),
    (["COPY --link a.txt /a"], 3, ["COPY --link", "takes --from, --chown and --chmod on COPY"]),
    (["RUN --network=none true"], 3, ["RUN --network", "takes --mount on RUN"]),
    (["COPY --chmod=u+x a.txt /a"], 3, ["--chmod=u+x", "octal mode only"]),
    (["ECHO hi"], 3, ["unknown instruction: ECHO"]),
])
@pytest.mark.parametrize("endpoint", [COMPAT_BUILD, LIBPOD_BUILD])
def test_dockerfile_buildah_cannot_build_is_a_400_naming_file_and_line(daemon, daemon_builds, uniq, endpoint,
                                                                        bad, line, needles):
    """What buildah 1.28 would only refuse after running FROM and the steps
    before (with a Go struct dump for an unknown instruction, or a server
    path for a heredoc) is a 400 before anything runs, naming the Dockerfile
    as the client named it and the line."""
    name = f"dialect-{uniq}"
    df = containerfile(f"FROM {BASE_IMAGE}", f"RUN echo ran-{uniq} > /ran", *bad)
    r = daemon.build({"sub/My.Dockerfile": df, "a.txt": "a\n"},
                     {"t": name, "dockerfile": "sub/My.Dockerfile"}, endpoint=endpoint)
    err = assert_api_error(r, 400, f"sub/My.Dockerfile:{line}: ", *needles)
    for leak in ("imagebuilder", "UNHANDLED", str(daemon.tmp)):
        assert leak not in r.body.decode(errors="replace"), err
    assert not daemon.image_exists(f"docker.io/library/{name}:latest")
    assert f"ran-{uniq}" not in daemon.log_path.read_text(errors="replace")
    assert daemon.working_containers() == []
    daemon_builds(daemon)


# --------------------------------------------------------------------------
# Failing after streaming started


def test_failing_RUN_streams_its_output_then_an_error_with_the_exit_code(daemon, daemon_builds, uniq):
    """`RUN echo about-to-fail && exit 3`: HTTP 200, the RUN output in the
    stream, a final errorDetail with code 3 (the docker CLI exits with it),
    no image under the tag and no working container left over."""
    name = f"fail-{uniq}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo about-to-fail && exit 3")}
    r = daemon.build(ctx, {"t": name})
    assert r.status == 200, r.describe()
    assert any("about-to-fail" in s for s in r.streams), r.describe()
    last = r.events[-1]
    assert set(last) >= {"error", "errorDetail"}, last
    assert last["error"] and last["errorDetail"]["message"], last
    assert last["errorDetail"].get("code") == 3, last
    assert r.aux_ids == [] and not any(s.startswith("Successfully built") for s in r.streams)
    assert not daemon.image_exists(f"docker.io/library/{name}:latest")
    assert daemon.working_containers() == []
    daemon_builds(daemon)


def test_COPY_of_a_missing_file_names_it_in_the_build_context_not_a_server_path(daemon, daemon_builds, uniq):
    """buildah's error names the unpacked context by its path on the server
    (".../builds/<id>/context"); the user reads "the build context"."""
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"COPY missing-{uniq}.txt /x")}
    r = daemon.build(ctx, {"t": f"nocopy-{uniq}"})
    assert r.status == 200, r.describe()
    last = r.events[-1]
    msg = last.get("errorDetail", {}).get("message", "")
    assert f"missing-{uniq}.txt" in msg and "in the build context" in msg, r.describe()
    assert str(daemon.tmp) not in r.text and "imagebuilder" not in r.text, r.describe()
    assert daemon.working_containers() == []
    daemon_builds(daemon)


def test_quiet_build_that_fails_still_shows_what_went_wrong(daemon, daemon_builds, uniq):
    """q=1 hides step output, but when the build fails the held-back output
    is replayed (Docker and Podman both do), so `docker build -q` users see
    why: the RUN output and the error with its exit code."""
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN echo quiet-fail-{uniq} && exit 5")}
    r = daemon.build(ctx, {"t": f"qfail-{uniq}", "q": "1"})
    assert r.status == 200, r.describe()
    assert f"quiet-fail-{uniq}" in r.text, r.describe()
    assert r.events[-1].get("errorDetail", {}).get("code") == 5, r.describe()
    daemon_builds(daemon)


def test_client_vanishing_mid_upload_leaves_nothing_behind(daemon, daemon_builds, uniq):
    """The client sends half of a 2 MB context and disappears: the partial
    context is removed and the daemon keeps serving."""
    import socket
    marker = f"upload-marker-{uniq}"
    body = lib.tar_context({marker: "x" * 1000, "big.bin": os.urandom(2 * 1024 * 1024),
                            "Dockerfile": GOOD["Dockerfile"]})
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(daemon.sock))
    s.sendall(f"POST /v1.41/build?t=vanish-{uniq} HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
    time.sleep(0.5)
    s.close()

    def leftovers():
        return [h for sub in daemon.tmp.iterdir() if sub.is_dir() and sub.name not in ("root", "runroot")
                for h in find_named(sub, marker)]
    assert wait_for(lambda: leftovers() == [], 10), leftovers()
    assert not daemon.image_exists(f"docker.io/library/vanish-{uniq}:latest")
    daemon_builds(daemon)


def test_unknown_base_image_fails_in_the_stream_without_a_registry(daemon, daemon_builds, uniq):
    """FROM an image that is not in storage (no registry reachable): the
    error comes back in-band, naming the image."""
    ctx = {"Dockerfile": containerfile("FROM localhost/does-not-exist-" + uniq + ":latest", "RUN true")}
    r = daemon.build(ctx, {"t": f"nobase-{uniq}", "pull": "0"})
    if r.status == 200:
        assert r.error is not None, r.describe()
        assert "does-not-exist-" + uniq in json.dumps(r.error), r.error
    else:
        assert_api_error(r, r.status, "does-not-exist-" + uniq)
    assert daemon.working_containers() == []
    daemon_builds(daemon)


def test_finished_failed_and_rejected_builds_leave_no_context_files(daemon, uniq):
    """Uploaded contexts are deleted when a build ends, however it ends:
    no file from them remains outside containers-storage."""
    marker = f"marker-{uniq}.txt"
    good = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"COPY {marker} /m"), marker: "m\n"}
    failing = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN exit 4"), marker: "m\n"}
    assert daemon.build(good, {"t": f"leak-{uniq}"}).error is None
    assert daemon.build(failing, {"t": f"leak2-{uniq}"}).error is not None
    assert daemon.build(good, {"t": "Upper"}).status == 400
    assert daemon.build(good, {"t": f"leak3-{uniq}", "dockerfile": "missing"}).status == 400

    def leftovers():
        hits = []
        for sub in daemon.tmp.iterdir():
            if sub.name in ("root", "runroot"):
                continue
            hits += find_named(sub, marker) if sub.is_dir() else []
        return hits
    assert wait_for(lambda: leftovers() == [], 5), leftovers()


def test_client_disconnect_mid_build_cancels_it_and_cleans_up(daemon, daemon_builds, uniq):
    """A client that goes away after the first STEP line (Ctrl-C on docker
    build): within 15 s the RUN process and buildah are gone and no working
    container is left."""
    token = f"sleep 31.{int(uniq, 16) % 100000:05d}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN {token}")}
    status, _, events = daemon.stream("POST", lib.with_query(COMPAT_BUILD, {"t": f"gone-{uniq}", "nocache": "1"}),
                                      lib.tar_context(ctx), {"Content-Type": "application/x-tar"})
    assert status == 200
    try:
        first = next(events)
        assert first.get("stream", "").startswith("STEP 1/2"), first
        assert wait_for(lambda: sleepers(token), 20), "the RUN step never started"
    finally:
        events.close()
    gone = wait_for(lambda: not sleepers(token) and
                    not [p for p in daemon.descendants() if "buildah" in p[1]], 15)
    assert gone, (f"still running 15 s after the client left: {sleepers(token)} "
                  f"{daemon.descendants()}\nlog tail:\n{daemon.log_tail()}")
    assert wait_for(lambda: daemon.working_containers() == [], 5), daemon.working_containers()
    assert not daemon.image_exists(f"docker.io/library/gone-{uniq}:latest")
    daemon_builds(daemon)


def test_sigterm_during_a_build_stops_it_and_exits_0(spawn_daemon, uniq):
    """SIGTERM while a RUN step sleeps: the daemon cancels the build, cleans
    up, and exits 0 within 20 s."""
    d = spawn_daemon()
    token = f"sleep 32.{int(uniq, 16) % 100000:05d}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN {token}")}
    status, _, events = d.stream("POST", lib.with_query(COMPAT_BUILD, {"t": f"term-{uniq}"}),
                                 lib.tar_context(ctx), {"Content-Type": "application/x-tar"})
    assert status == 200
    try:
        next(events)
        assert wait_for(lambda: sleepers(token), 20), "the RUN step never started"
        code, msg = d.stop(timeout=20)
    finally:
        events.close()
    assert msg is None, f"{msg}\nlog tail:\n{d.log_tail()}"
    assert code == 0, f"exit status {code}\nlog tail:\n{d.log_tail()}"
    assert wait_for(lambda: not sleepers(token), 5), sleepers(token)
    assert d.working_containers() == []


@pytest.mark.parametrize("step", ["COPY", "COMMIT"])
def test_client_disconnect_outside_a_run_step_leaves_no_working_container(spawn_daemon, uniq, step):
    """buildah stops cleanly on SIGTERM only inside a RUN step; a client that
    leaves while a big COPY or the final commit runs must not leave buildah's
    working container behind either."""
    d = spawn_daemon()
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY big /big"),
           "big": os.urandom(1 << 20) * 200}
    status, _, events = d.stream("POST", lib.with_query(COMPAT_BUILD, {"t": f"cut-{uniq}", "nocache": "1"}),
                                 lib.tar_context(ctx), {"Content-Type": "application/x-tar"})
    assert status == 200
    try:
        for ev in events:
            text = ev.get("stream", "")
            if step == "COPY" and text.startswith("STEP 2/2"):
                break
            if step == "COMMIT" and text.startswith("COMMIT"):
                break
        else:
            pytest.fail("the build ended before the step was reached")
    finally:
        events.close()
    assert wait_for(lambda: not [p for p in d.descendants() if "buildah" in p[1]], 20), d.descendants()
    assert wait_for(lambda: d.working_containers() == [], 10), d.working_containers()
    assert not d.image_exists(f"docker.io/library/cut-{uniq}:latest")
    assert d.alive()


def _cut_during_copy(d, tag):
    """Start a build with a 200 MB COPY; returns its event stream once the
    COPY step began (buildah has its working container by then)."""
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY big /big"),
           "big": os.urandom(1 << 20) * 200}
    status, _, events = d.stream("POST", lib.with_query(COMPAT_BUILD, {"t": tag, "nocache": "1"}),
                                 lib.tar_context(ctx), {"Content-Type": "application/x-tar"})
    assert status == 200
    for ev in events:
        if ev.get("stream", "").startswith("STEP 2/2"):
            return events
    pytest.fail("the build ended before its COPY step")


def test_a_stopped_builds_leftovers_wait_for_the_builds_running_beside_it(spawn_daemon, uniq):
    """Another build's working container is made while the stopped one
    lived, so it looks like a leftover: it is swept only once that build
    is over, which therefore succeeds, and then nothing is left."""
    d = spawn_daemon()
    cut = _cut_during_copy(d, f"cut-{uniq}")
    token = f"sleep 4.{int(uniq, 16) % 100000:05d}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN {token} && echo beside > /beside")}
    status, _, beside = d.stream("POST", lib.with_query(COMPAT_BUILD, {"t": f"beside-{uniq}"}),
                                 lib.tar_context(ctx), {"Content-Type": "application/x-tar"})
    assert status == 200
    events = []
    for ev in beside:
        events.append(ev)
        if ev.get("stream", "").startswith("STEP 2/2"):
            break
    assert wait_for(lambda: sleepers(token), 20), "the RUN step never started"
    cut.close()
    events += list(beside)
    assert not [e for e in events if "error" in e], events[-3:]
    assert d.image_file(f"docker.io/library/beside-{uniq}:latest", "/beside") == b"beside\n"
    assert wait_for(lambda: d.working_containers() == [], 15), d.working_containers()
    assert not d.image_exists(f"docker.io/library/cut-{uniq}:latest")


def test_two_overlapping_stopped_builds_both_leave_nothing(spawn_daemon, uniq):
    """Two builds cut during their COPY, one after the other: the first
    one's window waits for the second build, which is stopped too; once
    that one ends, both windows are swept (the first used to wait for it
    forever and its container stayed)."""
    d = spawn_daemon()
    first = _cut_during_copy(d, f"cut1-{uniq}")
    second = _cut_during_copy(d, f"cut2-{uniq}")
    assert len(d.working_containers()) >= 2, d.working_containers()
    first.close()
    # The first build's end (its leftovers wait for the second one).
    assert wait_for(lambda: len([p for p in d.descendants() if "buildah" in p[1]]) <= 1, 20), d.descendants()
    second.close()
    assert wait_for(lambda: not [p for p in d.descendants() if "buildah" in p[1]], 20), d.descendants()
    assert wait_for(lambda: d.working_containers() == [], 15), d.working_containers()
    assert not d.image_exists(f"docker.io/library/cut1-{uniq}:latest")
    assert not d.image_exists(f"docker.io/library/cut2-{uniq}:latest")
    assert d.alive()


def test_containers_a_build_asked_to_keep_are_never_swept(spawn_daemon, uniq):
    """rm=0 keeps a build's containers (Docker's meaning), also when they
    were made while another build was later stopped: that build's window
    is left alone."""
    d = spawn_daemon()
    token = f"sleep 33.{int(uniq, 16) % 100000:05d}"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN {token}")}
    status, _, cut = d.stream("POST", lib.with_query(COMPAT_BUILD, {"t": f"cut-{uniq}", "nocache": "1"}),
                              lib.tar_context(ctx), {"Content-Type": "application/x-tar"})
    assert status == 200
    try:
        next(cut)
        cut_id = re.search(r"job (\S+): started: POST /build", d.log_tail(1 << 20)).group(1)
        assert wait_for(lambda: sleepers(token), 20), "the RUN step never started"
        before = {c["id"] for c in d.working_containers()}
        r = d.build({"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo kept > /kept")},
                    {"t": f"kept-{uniq}", "rm": "0"})
        assert r.status == 200 and r.error is None, r.describe()
        kept = {c["id"] for c in d.working_containers()} - before
        assert kept, "rm=0 kept no container"
    finally:
        cut.close()
    assert wait_for(lambda: not [p for p in d.descendants() if "buildah" in p[1]], 20), d.descendants()
    # The stopped build's job ends (its line comes after its leftovers were swept).
    assert wait_for(lambda: re.search(rf"job {cut_id}: (?!cancelling: )", d.log_tail(1 << 20)), 20), d.log_tail()
    assert {c["id"] for c in d.working_containers()} == kept


def test_log_names_the_build_once_and_a_failure_is_a_warning(daemon, uniq):
    # Operators: the start line has the job id every later line about the
    # build carries, the endpoint, the client and the tags; a failed build
    # is a warn line with "failed" and the reason.
    tag = f"localhost/logged-{uniq}:1"
    ctx = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "RUN echo going down; exit 7")}
    status, _, body = daemon.request("POST", lib.with_query(COMPAT_BUILD, {"t": tag}), body=lib.tar_context(ctx),
                                     headers={"Content-Type": "application/x-tar", "User-Agent": f"ua-{uniq}/1.0"})
    assert status == 200 and b"errorDetail" in body, body
    def lines():
        return daemon.log_tail(1 << 20).splitlines()
    start = None
    assert wait_for(lambda: any(f"(client ua-{uniq}/1.0) -> {tag}" in ln for ln in lines()), 10), lines()[-20:]
    start = next(ln for ln in lines() if f"(client ua-{uniq}/1.0)" in ln)
    m = re.search(r"info  job (\S+): started: POST /build \(classic\) \(client ua-", start)
    assert m, start
    job = m.group(1)
    assert wait_for(lambda: any(f"job {job}: failed: " in ln for ln in lines()), 10), lines()[-20:]
    failed = next(ln for ln in lines() if f"job {job}: failed: " in ln)
    assert re.search(r" warn  job \S+: failed: .*exit status 7", failed), failed
    assert not any(f"build {job}" in ln for ln in lines())
