"""Gateway frontends (BuildKit's gateway.v0) end to end: a Dockerfile
starting `# syntax=IMAGE`, sent in BuildKit mode, is built by the frontend
IMAGE running in a buildah container that talks LLBBridge over its stdio
to podsolved (solver/gateway_image.c).  Real daemons, real clients (buildx,
the docker 20.10 CLI, buildctl, curl-shaped POST /solve), outcomes checked
in storage: files, modes and image config.  Then frontends that misbehave:
each fails its build with a clear error, in bounded time, leaving no
container or process behind, and the daemon builds afterwards."""

import functools
import json
import os
import re
import subprocess
import time

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, containerfile

run = functools.partial(lib.run, timeout=300)
explain = lib.explain
image_ref = lib.image_ref

# "#5 CACHED" / "#5 [2/3] RUN ..." lines of --progress=plain
PLAIN_STEP = re.compile(r"^#(\d+) (.*)$", re.M)

# One Dockerfile in the dialect only BuildKit's frontend speaks: a RUN
# heredoc, COPY --link, COPY --chmod with a symbolic mode.
MODERN_BODY = (
    f"FROM {BASE_IMAGE}",
    "RUN <<EOF",
    "echo heredoc-line-1 > /heredoc.txt",
    "echo heredoc-line-2 >> /heredoc.txt",
    "EOF",
    "COPY --link data.txt /linked/data.txt",
    "COPY --chmod=u=rwx,go=rx tool.sh /usr/local/bin/tool.sh",
    "ENV APP_MODE=gateway",
    'CMD ["/usr/local/bin/tool.sh"]',
)
SYNTAX_LINE = "# syntax=docker/dockerfile:1"


def modern_context(uniq, syntax=True):
    lines = ((SYNTAX_LINE,) if syntax else ()) + MODERN_BODY
    return {
        "Dockerfile": containerfile(*lines),
        "data.txt": f"linked data {uniq}\n",
        # 0600 in the context: the mode in the image comes from --chmod
        "tool.sh": ("#!/bin/sh\necho tool\n", 0o600),
    }


def assert_modern_image(d, name, uniq):
    """The image the modern Dockerfile makes: files, the --chmod mode, Env, Cmd."""
    assert d.image_exists(name), f"{name} is not in storage\n{d.log_tail(3000)}"
    assert d.image_file(name, "/heredoc.txt") == b"heredoc-line-1\nheredoc-line-2\n"
    assert d.image_file(name, "/linked/data.txt") == f"linked data {uniq}\n".encode()
    st = d.image_stat(name, "/usr/local/bin/tool.sh")["/usr/local/bin/tool.sh"]
    assert st.st_mode & 0o7777 == 0o755, oct(st.st_mode)
    config = d.image_inspect(name)["OCIv1"]["config"]
    assert "APP_MODE=gateway" in (config.get("Env") or []), config
    assert config.get("Cmd") == ["/usr/local/bin/tool.sh"], config


def plain_steps(output):
    """{step number: [lines]} of --progress=plain output."""
    steps = {}
    for m in PLAIN_STEP.finditer(output):
        steps.setdefault(int(m.group(1)), []).append(m.group(2))
    return steps


def step_lines(steps, needle):
    """All lines of the steps whose title contains needle, joined."""
    found = [l for lines in steps.values() if lines and needle in lines[0] for l in lines]
    assert found, f"no step {needle!r} in {[(n, l[:1]) for n, l in steps.items()]}"
    return "\n".join(found)


# ---- POST /solve helpers ------------------------------------------------------------


def solve(d, request, parts, timeout=300):
    """POST /solve (multipart: request + tar parts) -> (http status, [lines])."""
    body, ctype = lib.multipart({"request": json.dumps(request).encode()}, parts)
    status, _, it = d.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=timeout)
    try:
        return status, list(it)
    finally:
        it.close()


vertexes = lib.stream_vertexes


def stream_errors(lines):
    """Every error the stream carries (its error lines, failed vertexes), as text."""
    errs = [l["error"] for l in lines if "error" in l] + [v["error"] for v in vertexes(lines) if v.get("error")]
    return [e if isinstance(e, str) else json.dumps(e) for e in errs]


def describe(lines, d=None):
    out = "\n".join(json.dumps(l)[:600] for l in lines[-30:])
    if d is not None:
        out += f"\n--- daemon log tail:\n{d.log_tail(4000)}"
    return out


def solve_ok(d, request, parts):
    status, lines = solve(d, request, parts)
    assert status == 200, describe(lines, d)
    assert lines and "result" in lines[-1], describe(lines, d)
    return lines


def image_exporter(name):
    return [{"type": "image", "attrs": {"name": name}}]


def frontend_vertex(lines, image):
    vs = [v for v in vertexes(lines) if v.get("name") == f"[internal] load frontend {image}"]
    assert vs, f"no '[internal] load frontend {image}' vertex: {[v.get('name') for v in vertexes(lines)]}"
    return vs[-1]


# ---- 1. docker/dockerfile:1 through three clients -----------------------------------


def test_buildx_builds_a_syntax_dockerfile_with_buildkits_frontend(daemon, frontend_images, go_clients,
                                                                   tmp_path, uniq):
    """`docker buildx build --load -t NAME .` (docker driver) on a Dockerfile
    starting `# syntax=docker/dockerfile:1`: BuildKit's frontend builds the
    heredoc, COPY --link and COPY --chmod into storage, the progress shows
    the frontend being loaded, and a rebuild shows the steps CACHED."""
    ctx = lib.make_context(tmp_path / "ctx", modern_context(uniq))
    name = f"gw-bx-{uniq}"
    cmd = [go_clients.docker, "buildx", "build", "--progress=plain", "--load", "-t", name, "."]
    r1 = run(cmd, go_clients.env(daemon), cwd=ctx)
    assert r1.returncode == 0, explain(r1, daemon)
    assert "[internal] load frontend docker/dockerfile:1" in r1.stderr, r1.stderr
    assert_modern_image(daemon, image_ref(name), uniq)
    first = plain_steps(r1.stderr)
    assert "CACHED" not in step_lines(first, "RUN <<EOF"), r1.stderr
    image_id = daemon.image_id(image_ref(name))

    r2 = run(cmd, go_clients.env(daemon), cwd=ctx)
    assert r2.returncode == 0, explain(r2, daemon)
    second = plain_steps(r2.stderr)
    for title in ("RUN <<EOF", "COPY --link data.txt", "COPY --chmod=u=rwx,go=rx tool.sh"):
        assert "CACHED" in step_lines(second, title), r2.stderr
    assert daemon.image_id(image_ref(name)) == image_id


def test_docker_2010_cli_buildkit_mode_builds_a_syntax_dockerfile(daemon, frontend_images, docker_cli,
                                                                   tmp_path, uniq):
    """DOCKER_BUILDKIT=1 docker build (the 20.10 CLI: /session + /build?version=2)
    with `# syntax=docker/dockerfile:1`: the same image, the frontend's vertex
    in the progress, CACHED steps on a rebuild."""
    ctx = lib.make_context(tmp_path / "ctx", modern_context(uniq))
    name = f"gw-cli-{uniq}"
    env = daemon.env()
    env.pop("BUILDKIT_PROGRESS", None)
    env["DOCKER_BUILDKIT"] = "1"
    cmd = [docker_cli, "build", "--progress=plain", "-t", name, "."]
    r1 = run(cmd, env, cwd=ctx)
    assert r1.returncode == 0, explain(r1, daemon)
    assert "[internal] load frontend docker/dockerfile:1" in r1.output, r1.output
    assert_modern_image(daemon, image_ref(name), uniq)

    r2 = run(cmd, env, cwd=ctx)
    assert r2.returncode == 0, explain(r2, daemon)
    second = plain_steps(r2.output)
    for title in ("RUN <<EOF", "COPY --link data.txt", "COPY --chmod=u=rwx,go=rx tool.sh"):
        assert "CACHED" in step_lines(second, title), r2.output


def test_solve_dockerfile_v0_with_a_syntax_line_runs_the_frontend_image(daemon, frontend_images, uniq):
    """POST /solve, frontend dockerfile.v0, the context as a tar part (what
    curl -F sends): the frontend vertex completes, the image is right, and
    the same request again reports every step cached."""
    name = f"localhost/gw-solve-{uniq}:latest"
    parts = {"context": lib.tar_context(modern_context(uniq))}
    req = {"frontend": "dockerfile.v0", "exporters": image_exporter(name)}
    lines = solve_ok(daemon, req, parts)
    fv = frontend_vertex(lines, "docker/dockerfile:1")
    assert fv.get("completed") and not fv.get("error"), fv
    assert_modern_image(daemon, name, uniq)
    image_id = daemon.image_id(name)

    again = solve_ok(daemon, req, parts)
    steps = [v for v in vertexes(again) if re.match(r"\[\d+/\d+\] (RUN|COPY)", v.get("name", ""))]
    assert len(steps) == 3, [v.get("name") for v in vertexes(again)]
    assert all(v.get("cached") is True for v in steps), [(v["name"], v.get("cached")) for v in steps]
    assert daemon.image_id(name) == image_id


# ---- 2. the same Dockerfile without the syntax line ---------------------------------


def test_modern_dockerfile_without_syntax_fails_before_running_on_the_buildah_dialect(daemon, uniq):
    """No syntax line, default daemon: buildah's dialect has no heredocs or
    --link; the build fails before any step runs with an error naming the
    line, and the image does not exist."""
    name = f"localhost/gw-nosyntax-{uniq}:latest"
    parts = {"context": lib.tar_context(modern_context(uniq, syntax=False))}
    status, lines = solve(daemon, {"frontend": "dockerfile.v0", "exporters": image_exporter(name)}, parts)
    errs = stream_errors(lines) if status == 200 else [json.dumps(lines)]
    assert status == 400 or errs, describe(lines, daemon)
    text = " ".join(errs)
    # the first line buildah's dialect lacks, by its line number
    assert "Dockerfile:2: RUN <<EOF: heredocs are not supported" in text, text
    assert not any(re.match(r"\[\d+/\d+\] RUN", v.get("name", "")) and v.get("started")
                   for v in vertexes(lines)), describe(lines)
    assert not daemon.image_exists(name)


def test_dockerfile_frontend_flag_builds_the_modern_dialect_without_a_syntax_line(spawn_daemon, uniq):
    """podsolved --dockerfile-frontend docker.io/docker/dockerfile:1: every
    BuildKit-mode Dockerfile without a syntax line goes through that
    frontend, so the same Dockerfile builds."""
    d = spawn_daemon("--dockerfile-frontend", lib.DOCKERFILE_FRONTEND_IMAGE)
    images, reason = lib.make_frontend_images(d)
    if images is None:
        pytest.skip(reason)
    name = f"localhost/gw-flag-{uniq}:latest"
    parts = {"context": lib.tar_context(modern_context(uniq, syntax=False))}
    lines = solve_ok(d, {"frontend": "dockerfile.v0", "exporters": image_exporter(name)}, parts)
    frontend_vertex(lines, lib.DOCKERFILE_FRONTEND_IMAGE)
    assert_modern_image(d, name, uniq)


# ---- 3. classic /build ignores the line; BUILDKIT_SYNTAX picks the frontend ----------


def test_classic_build_ignores_the_syntax_line_with_one_warning(daemon, uniq):
    """POST /build (v1) with `# syntax=docker/dockerfile:1` on a Dockerfile
    buildah understands: built by buildah, and the stream says exactly once
    that the syntax line is ignored."""
    tag = f"gw-classic-{uniq}"
    ctx = {"Dockerfile": containerfile(SYNTAX_LINE, f"FROM {BASE_IMAGE}", f"RUN echo {uniq} > /classic.txt",
                                       "ENV BUILT_BY=buildah")}
    r = daemon.build(ctx, {"t": tag})
    assert r.status == 200 and r.error is None, r.describe()
    warnings = [l for l in r.text.splitlines() if "syntax" in l.lower()]
    assert len(warnings) == 1, r.text
    assert "ignor" in warnings[0].lower() and "docker/dockerfile:1" in warnings[0], warnings
    assert "load frontend" not in r.text
    assert daemon.image_file(image_ref(tag), "/classic.txt") == f"{uniq}\n".encode()
    assert "BUILT_BY=buildah" in daemon.image_inspect(image_ref(tag))["OCIv1"]["config"]["Env"]


def test_buildkit_syntax_build_arg_selects_the_frontend(daemon, frontend_images, uniq):
    """BuildKit mode, no syntax line, build-arg BUILDKIT_SYNTAX=docker/dockerfile:1:
    the frontend builds the modern Dockerfile."""
    name = f"localhost/gw-bkarg-{uniq}:latest"
    parts = {"context": lib.tar_context(modern_context(uniq, syntax=False))}
    req = {"frontend": "dockerfile.v0", "frontendAttrs": {"build-arg:BUILDKIT_SYNTAX": "docker/dockerfile:1"},
           "exporters": image_exporter(name)}
    lines = solve_ok(daemon, req, parts)
    frontend_vertex(lines, "docker/dockerfile:1")
    assert_modern_image(daemon, name, uniq)


# ---- 4. the example frontend (an app.toml in, an image out) -------------------------


APP_TOML = """# syntax=localhost/podsolve-example-frontend
name = "gw-app"
base = "localhost/busybox:latest"
workdir = "/app"
cmd = ["/app/bin/run"]

[env]
GREETING = "hello {uniq}"

[labels]
"org.example.uniq" = "{uniq}"

[[steps]]
copy = "bin/"
to = "/app/bin/"
mode = "0755"

[[steps]]
file = "/app/VERSION"
content = "{uniq}\\n"

[[steps]]
run = "echo \\"$GREETING\\" > /app/greeting"
"""


def app_context(uniq):
    return {"app.toml": APP_TOML.replace("{uniq}", uniq), "bin/run": ("#!/bin/sh\necho run\n", 0o600)}


def assert_app_image(d, name, uniq):
    assert d.image_exists(name), f"{name} is not in storage\n{d.log_tail(3000)}"
    assert d.image_file(name, "/app/VERSION") == f"{uniq}\n".encode()
    assert d.image_file(name, "/app/greeting") == f"hello {uniq}\n".encode()
    assert d.image_file(name, "/app/bin/run") == b"#!/bin/sh\necho run\n"
    assert d.image_stat(name, "/app/bin/run")["/app/bin/run"].st_mode & 0o777 == 0o755
    config = d.image_inspect(name)["OCIv1"]["config"]
    assert config.get("Cmd") == ["/app/bin/run"], config
    assert config.get("WorkingDir") == "/app", config
    assert f"GREETING=hello {uniq}" in (config.get("Env") or []), config
    assert (config.get("Labels") or {}).get("org.example.uniq") == uniq, config


def test_buildx_builds_an_app_toml_with_the_example_frontend(daemon, frontend_images, go_clients, tmp_path, uniq):
    """`docker buildx build -f app.toml` on an app.toml whose first line is
    `# syntax=localhost/podsolve-example-frontend`: our own frontend reads it
    over the session and the image has its files, modes, Env, Cmd and labels."""
    ctx = lib.make_context(tmp_path / "ctx", app_context(uniq))
    name = f"gw-app-bx-{uniq}"
    r = run([go_clients.docker, "buildx", "build", "--progress=plain", "--load", "-f", "app.toml", "-t", name, "."],
            go_clients.env(daemon), cwd=ctx)
    assert r.returncode == 0, explain(r, daemon)
    assert "[internal] load frontend localhost/podsolve-example-frontend" in r.stderr, r.stderr
    assert_app_image(daemon, image_ref(name), uniq)


def test_solve_gateway_v0_with_source_runs_the_example_frontend(daemon, frontend_images, uniq):
    """POST /solve with frontend gateway.v0 and frontendAttrs source=IMAGE (no
    syntax line needed), the description and the files as two tar parts."""
    name = f"localhost/gw-app-solve-{uniq}:latest"
    files = app_context(uniq)
    parts = {"dockerfile": lib.tar_context({"app.toml": files["app.toml"]}),
             "context": lib.tar_context({"bin/run": files["bin/run"]})}
    req = {"frontend": "gateway.v0",
           "frontendAttrs": {"source": "localhost/podsolve-example-frontend", "filename": "app.toml"},
           "exporters": image_exporter(name)}
    lines = solve_ok(daemon, req, parts)
    frontend_vertex(lines, "localhost/podsolve-example-frontend")
    assert_app_image(daemon, name, uniq)


@pytest.fixture(scope="module")
def bkd():
    """A podsolved with --buildkit-listen and both frontend images."""
    with lib.private_daemon("podsolve-it-gwbk-", buildkit_listen=True) as d:
        images, reason = lib.make_frontend_images(d)
        yield d if images else reason


def test_buildctl_frontend_gateway_v0_builds_with_the_example_frontend(bkd, go_clients, tmp_path, uniq):
    """`buildctl build --frontend gateway.v0 --opt source=IMAGE --local context=.
    --local dockerfile=.` against --buildkit-listen: Control.Solve runs the image."""
    if isinstance(bkd, str):
        pytest.skip(bkd)
    ctx = lib.make_context(tmp_path / "ctx", app_context(uniq))
    name = f"localhost/gw-app-bctl-{uniq}:latest"
    r = run([go_clients.buildctl, "--addr", bkd.buildkit_addr, "build", "--progress=plain",
             "--frontend", "gateway.v0", "--opt", "source=localhost/podsolve-example-frontend",
             "--opt", "filename=app.toml", "--local", "context=.", "--local", "dockerfile=.",
             "--output", f"type=image,name={name}"], go_clients.env(bkd), cwd=ctx)
    assert r.returncode == 0, explain(r, bkd)
    assert "[internal] load frontend localhost/podsolve-example-frontend" in r.output, r.output
    assert_app_image(bkd, name, uniq)


# ---- 5. hostile frontends -----------------------------------------------------------


def make_frontend(d, name, entrypoint):
    """An image in d's storage FROM localhost/busybox whose entrypoint is
    `entrypoint` (a list)."""
    ctr = d.buildah("from", "--pull=never", "--quiet", BASE_IMAGE).stdout.strip()
    try:
        d.buildah("config", "--entrypoint", json.dumps(entrypoint), "--cmd", "", ctr)
        d.buildah("commit", "--quiet", ctr, name)
    finally:
        d.buildah("rm", ctr, check=False)
    return name


def leftovers(d, token=None):
    """Working containers in d's storage, and processes still running for
    it: a cmdline naming its storage root, or `token`."""
    ctrs = d.working_containers()
    procs = []
    me = os.getpid()
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) in (me, d.proc.pid if d.proc else -1):
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if str(d.root) in cmd or (token and token in cmd):
            procs.append((int(p), cmd[:300]))
    return ctrs, procs


def assert_clean(d, token=None):
    assert lib.wait_for(lambda: leftovers(d, token) == ([], []), 15), \
        f"left behind: {leftovers(d, token)}\n{d.log_tail(3000)}"


def hostile_solve(d, source, uniq, attrs=None, timeout=120):
    """/solve through frontend `source` -> (elapsed s, error text); must fail."""
    name = f"localhost/gw-hostile-{uniq}:latest"
    req = {"frontend": "gateway.v0", "frontendAttrs": {"source": source, **(attrs or {})},
           "exporters": image_exporter(name)}
    start = time.monotonic()
    status, lines = solve(d, req, {"context": lib.tar_context({"Dockerfile": f"FROM {BASE_IMAGE}\n"})},
                          timeout=timeout)
    elapsed = time.monotonic() - start
    if status != 200:
        return elapsed, status, json.dumps(lines)
    errs = stream_errors(lines)
    assert errs, f"the build through {source} succeeded: {describe(lines, d)}"
    assert not d.image_exists(name)
    return elapsed, status, "\n".join(errs)


@pytest.fixture(scope="module")
def hostile_daemon():
    """A podsolved whose frontends count as idle after 3 s (PS_FRONTEND_IDLE_MS)."""
    with lib.private_daemon("podsolve-it-gwhostile-", start_env={"PS_FRONTEND_IDLE_MS": "3000"}) as d:
        yield d


def test_frontend_that_exits_with_status_3_fails_the_build_naming_status_and_message(hostile_daemon, uniq):
    """An entrypoint that writes to stderr and exits 3 at once: the error names
    the status and carries the message."""
    d = hostile_daemon
    src = make_frontend(d, f"localhost/gw-exit3-{uniq}:latest",
                        ["/bin/sh", "-c", f"echo frontend-broke-on-purpose-{uniq} >&2; exit 3"])
    elapsed, status, err = hostile_solve(d, src, uniq)
    assert "status 3" in err and f"frontend-broke-on-purpose-{uniq}" in err, err
    assert elapsed < lib.scaled(60), elapsed
    assert_clean(d)
    lib.assert_daemon_builds(d, f"gw-health-exit3-{uniq}")


def test_frontend_that_writes_garbage_to_stdout_fails_the_build_at_once(hostile_daemon, uniq):
    """`echo garbage; sleep 600`: what it wrote is not HTTP/2, the bridge
    connection ends, and the build fails naming that — without waiting for
    the frontend to exit or for the idle limit — and the frontend is stopped."""
    d = hostile_daemon
    token = f"gwgarbage{uniq}"
    src = make_frontend(d, f"localhost/gw-garbage-{uniq}:latest",
                        ["/bin/sh", "-c", f"echo garbage; sleep 600; echo {token} >/dev/null"])
    elapsed, status, err = hostile_solve(d, src, uniq)
    assert f"frontend {src} broke its LLBBridge connection" in err, err
    assert "HTTP/2 protocol error" in err and "made no call" not in err, err
    assert elapsed < lib.scaled(30), elapsed
    assert_clean(d, token)
    lib.assert_daemon_builds(d, f"gw-health-garbage-{uniq}")


def test_frontend_that_never_answers_is_stopped_after_the_idle_limit(hostile_daemon, uniq):
    """`sleep 600`, never a gRPC call: after PS_FRONTEND_IDLE_MS (3 s here) the
    build fails saying so, and the sleeping frontend is gone."""
    d = hostile_daemon
    token = f"gwsilent{uniq}"
    src = make_frontend(d, f"localhost/gw-silent-{uniq}:latest",
                        ["/bin/sh", "-c", f"sleep 600; echo {token} >/dev/null"])
    elapsed, status, err = hostile_solve(d, src, uniq)
    assert src in err and re.search(r"idle|no request|silent|answer", err, re.I), err
    assert elapsed < lib.scaled(60), elapsed
    assert_clean(d, token)
    lib.assert_daemon_builds(d, f"gw-health-silent-{uniq}")


def test_missing_frontend_image_with_resolve_mode_local_is_a_clear_error(hostile_daemon, uniq):
    """image-resolve-mode=local and no such image in storage: never pulled, a
    clear error naming the image."""
    d = hostile_daemon
    src = f"localhost/gw-no-such-frontend-{uniq}:latest"
    elapsed, status, err = hostile_solve(d, src, uniq, attrs={"image-resolve-mode": "local"})
    assert src in err and "not in storage" in err, err
    assert elapsed < lib.scaled(30), elapsed
    assert_clean(d)


def test_missing_frontend_image_without_a_registry_is_a_clear_error(hostile_daemon, uniq):
    """Not in storage, and its registry (a closed port on 127.0.0.1) cannot be reached."""
    d = hostile_daemon
    src = f"127.0.0.1:{lib.free_port()}/gw-no-such-frontend-{uniq}:latest"
    elapsed, status, err = hostile_solve(d, src, uniq)
    assert src in err and "could not be pulled" in err, err
    assert elapsed < lib.scaled(60), elapsed
    assert_clean(d)


# ---- frontends that speak gRPC and ask for the wrong things --------------------------
# tests/fixtures/hostile-frontend, its frontend option "mode" picking the misbehaviour.

MAKE_HOSTILE_FRONTEND = lib.FIXTURES / "make-hostile-frontend"
HOSTILE_FRONTEND = "localhost/podsolve-hostile-frontend:latest"


@pytest.fixture(scope="module")
def grpc_hostile(hostile_daemon):
    """hostile_daemon with localhost/podsolve-hostile-frontend in its storage."""
    d = hostile_daemon
    r = subprocess.run([str(MAKE_HOSTILE_FRONTEND), str(d.root), str(d.runroot), "overlay"], env=d.base_env(),
                       capture_output=True, text=True, timeout=lib.scaled(600))
    if r.returncode != 0:
        if lib.go_toolchain() is None:
            pytest.skip(f"no Go toolchain to build tests/fixtures/hostile-frontend:\n{r.stderr[-1000:]}")
        pytest.fail(f"make-hostile-frontend failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}", pytrace=False)
    return d


def test_hostile_frontend_control_case_builds(grpc_hostile, uniq):
    """mode=ok: the fixture itself works, so the failures below are the modes'."""
    d = grpc_hostile
    name = f"localhost/gw-hostile-ok-{uniq}:latest"
    req = {"frontend": "gateway.v0", "frontendAttrs": {"source": HOSTILE_FRONTEND, "mode": "ok"},
           "exporters": image_exporter(name)}
    solve_ok(d, req, {})
    assert d.image_file(name, "/hostile-ok") == b"ok\n"
    assert_clean(d)


def test_a_frontend_hands_inputs_to_a_frontend_it_nests(grpc_hostile, uniq):
    """mode=forward-inputs: the frontend solves gateway.v0 (itself, in
    mode=return-input) with FrontendInputs {"ctx": a one-file state}; the
    nested frontend gets it from LLBBridge.Inputs and returns it, and that
    is the image."""
    d = grpc_hostile
    name = f"localhost/gw-inputs-{uniq}:latest"
    req = {"frontend": "gateway.v0", "exporters": image_exporter(name),
           "frontendAttrs": {"source": HOSTILE_FRONTEND, "self": HOSTILE_FRONTEND, "mode": "forward-inputs",
                             "value": uniq}}
    lines = solve_ok(d, req, {})
    assert d.image_file(name, "/from-input") == f"input {uniq}\n".encode()
    # two frontends ran, one inside the other
    assert len([v for v in vertexes(lines) if v.get("name") == f"[internal] load frontend {HOSTILE_FRONTEND}"
                and v.get("completed")]) >= 2, [v.get("name") for v in vertexes(lines)]
    assert_clean(d)


@pytest.mark.parametrize("mode", ["missing-input", "cycle"])
def test_frontend_definition_with_a_dangling_input_is_rejected_by_the_validator(grpc_hostile, uniq, mode):
    """A definition naming an input it does not hold (a cycle cannot be
    written with content digests: the frontend's attempt at one is a
    dangling input too): LLB validation answers 400 naming the op, the
    frontend reports it, nothing runs."""
    d = grpc_hostile
    elapsed, status, err = hostile_solve(d, HOSTILE_FRONTEND, uniq, attrs={"mode": mode})
    assert HOSTILE_FRONTEND in err, err
    assert re.search(r"\(def\[\d\]\): input 0: \\?\"sha256:[0-9a-f]{64}\\?\" is not the digest of any op in the "
                     r"definition", err), err
    assert elapsed < lib.scaled(60), elapsed
    assert_clean(d)
    lib.assert_daemon_builds(d, f"gw-health-{mode}-{uniq}")


def test_frontend_asking_for_10000_solves_is_stopped_at_1000(grpc_hostile, uniq):
    """A frontend that loops on LLBBridge.Solve: the 2001st call is refused
    (RESOURCE_EXHAUSTED, 413 inside), the build fails saying so, and the
    frontend's container is gone."""
    d = grpc_hostile
    elapsed, status, err = hostile_solve(d, HOSTILE_FRONTEND, uniq, attrs={"mode": "many-solves"}, timeout=600)
    assert "more than 1000 solves asked for" in err, err
    assert "all 10000 solves were answered" not in err
    assert elapsed < lib.scaled(300), elapsed
    assert_clean(d)
    lib.assert_daemon_builds(d, f"gw-health-many-{uniq}")


def test_frontend_returning_no_result_fails_the_build(grpc_hostile, uniq):
    """Return with neither a ref nor refs: the build fails naming the frontend."""
    d = grpc_hostile
    elapsed, status, err = hostile_solve(d, HOSTILE_FRONTEND, uniq, attrs={"mode": "bad-return"})
    assert HOSTILE_FRONTEND in err and "no result" in err, err
    assert elapsed < lib.scaled(60), elapsed
    assert_clean(d)


def test_frontends_nesting_without_end_stop_at_8_deep(grpc_hostile, uniq):
    """A frontend that solves gateway.v0 with itself as the source, again and
    again: the ninth is refused (more than 8 frontends inside one another),
    the error climbs back out through every level, and every level's
    container is gone."""
    d = grpc_hostile
    elapsed, status, err = hostile_solve(d, HOSTILE_FRONTEND, uniq,
                                         attrs={"mode": "nest", "self": HOSTILE_FRONTEND}, timeout=300)
    assert "more than 8 frontends inside one another" in err, err
    assert elapsed < lib.scaled(120), elapsed
    assert_clean(d)
    lib.assert_daemon_builds(d, f"gw-health-nest-{uniq}")
