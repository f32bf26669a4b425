"""One Dockerfile written for today's Docker, using every feature of issue
14 item 5 at once, built through BuildKit's own Dockerfile frontend
(`# syntax=docker/dockerfile:1`, v0.32.2) by three real clients: the docker
20.10 CLI in BuildKit mode (/session + /build?version=2), buildx (/grpc)
and POST /solve with a session.  Each build is checked in storage (files,
contents, modes, owners, deleted paths, the image config and its history),
then built again to show every step CACHED.

Features: FROM --platform=$BUILDPLATFORM with BUILDPLATFORM/TARGETPLATFORM/
TARGETARCH, multi-stage COPY --from, ARG/ENV expansion, ADD of local
archives (unpacked), of an http URL with --checksum and of a git URL,
COPY --exclude/--parents/--chmod (octal and symbolic)/--chown/--link, a RUN
rm over a --link layer, COPY and RUN heredocs, RUN --network=none|host,
RUN --security=insecure, RUN --mount=type=cache|tmpfs|bind|secret|ssh with
their options (a secret as an environment variable too), SHELL, WORKDIR, USER, LABEL, EXPOSE, VOLUME, HEALTHCHECK,
STOPSIGNAL, ONBUILD, ENTRYPOINT and CMD."""

import functools
import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile

import pytest

import podsolve_testlib as lib
from session_peer import SessionPeer
from test_gateway_dockerfile import COPY_CONTEXT, COPY_VARIANTS

BASE = lib.BASE_IMAGE
run = functools.partial(lib.run, timeout=600)
PLAIN_STEP = re.compile(r"^#(\d+) (.*)$", re.M)
SECRET = b"s3cr3t-token-for-every-feature\n"
CAP_SYS_ADMIN = 1 << 21


def dockerfile(remote_url, remote_sum, git_url):
    return "\n".join([
        "# syntax=docker/dockerfile:1",
        f"FROM --platform=$BUILDPLATFORM {BASE} AS tools",
        "ARG TARGETPLATFORM",
        "ARG BUILDPLATFORM",
        "ARG TARGETARCH",
        'RUN echo "$BUILDPLATFORM $TARGETPLATFORM $TARGETARCH" > /platforms && mkdir /kit'
        " && echo tool-data > /kit/tool.txt",
        "",
        f"FROM {BASE}",
        "ARG CLIENT",
        "ARG VER=1.2",
        "ENV DIR=/opt/v${VER} CLIENT=${CLIENT}",
        'SHELL ["/bin/sh", "-c"]',
        'RUN echo "$CLIENT" > /client',
        "COPY --from=tools /platforms /kit/tool.txt ${DIR}/",
        "ADD bundle.tar.gz /unpacked/",
        f"ADD --checksum={remote_sum} {remote_url} /remote.txt",
        f"ADD {git_url}#v1 /src/repo",
        *COPY_VARIANTS,
        "COPY <<EOF /etc/heredoc.conf",
        "key=${VER}",
        "EOF",
        "RUN <<EOF",
        "set -e",
        "echo from-heredoc > /heredoc-run",
        "echo second >> /heredoc-run",
        "EOF",
        "RUN --network=none ls /sys/class/net > /ifaces-none",
        "RUN --network=host ls /sys/class/net > /ifaces-host",
        "RUN --security=insecure grep CapEff /proc/self/status > /caps-insecure",
        "RUN grep CapEff /proc/self/status > /caps-default",
        "RUN --mount=type=cache,target=/cache,id=every-feature,sharing=locked,mode=0750,uid=1000,gid=1000"
        " stat -c '%a %u %g' /cache > /cache-meta && echo \"$CLIENT\" >> /cache/log && cp /cache/log /seen-cache",
        "RUN --mount=type=tmpfs,target=/scratch,size=1m grep ' /scratch ' /proc/mounts > /tmpfs-line"
        " && echo t > /scratch/t",
        "RUN --mount=type=bind,from=tools,source=/kit,target=/mnt/kit,rw"
        " echo scribble > /mnt/kit/new && cat /mnt/kit/tool.txt > /from-bind",
        "RUN --mount=type=secret,id=token,target=/run/secrets/tok,mode=0440,uid=1000,gid=1001,required=true"
        " stat -c '%a %u %g' /run/secrets/tok > /secret-meta && sha256sum /run/secrets/tok | cut -d' ' -f1"
        " > /secret-sum",
        "RUN --mount=type=secret,id=token,env=TOKEN printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1 > /secret-env-sum",
        "COPY --chmod=0755 agent-probe /agent-probe",
        "RUN --mount=type=ssh,id=default,mode=0600,required=true /agent-probe > /agent-keys",
        "WORKDIR /srv",
        "USER 1000:1000",
        "LABEL org.example.k=v",
        "EXPOSE 8080/tcp 53/udp",
        "VOLUME /data",
        "HEALTHCHECK --interval=5s --timeout=2s --retries=2 CMD true",
        "STOPSIGNAL SIGINT",
        "ONBUILD RUN echo child",
        'ENTRYPOINT ["/bin/echo"]',
        'CMD ["hi"]',
        "",
    ])


# the layers the final stage adds, in order, by the first word of their history entry
LAYER_STEPS = (["RUN", "COPY"] + ["ADD"] * 3 + ["COPY"] * 6 + ["RUN", "COPY", "RUN"] + ["RUN"] * 9
               + ["COPY", "RUN", "WORKDIR"])


def tar_gz(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.uid, ti.gid = len(data), 0o640, 1234, 2345
            tf.addfile(ti, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


class Feature:
    """The context (a directory), what the build must produce, and the servers it reads."""

    def __init__(self, tmp, ctx_server, gitd, uniq):
        self.uniq = uniq
        self.remote = f"remote file {uniq}\n".encode()
        (lib.Path(ctx_server.root) / f"every-{uniq}.txt").write_bytes(self.remote)
        remote_url = ctx_server.url(f"every-{uniq}.txt")
        remote_sum = "sha256:" + hashlib.sha256(self.remote).hexdigest()
        repo = f"every-{uniq}"
        git_url = gitd.repo(repo, {"README": "v1 readme\n", "bin/tool.sh": ("#!/bin/sh\n", 0o755)})
        gitd.git(repo, "tag", "-a", "v1", "-m", "v1")
        gitd.commit(repo, {"README": "after v1\n"}, "after the tag")
        self.dir = lib.make_context(tmp / "ctx", {"Dockerfile": dockerfile(remote_url, remote_sum, git_url),
                                                  **COPY_CONTEXT})
        (self.dir / "bundle.tar.gz").write_bytes(tar_gz({"bundle/inside.txt": b"from the archive\n"}))
        lib.agent_probe(self.dir / "agent-probe")
        self.secret = tmp / "token.txt"  # outside the context
        self.secret.write_bytes(SECRET)

    def context_tar(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            tf.add(str(self.dir), arcname=".")
        return buf.getvalue()


@pytest.fixture(scope="module")
def gitd(tmp_path_factory):
    srv = lib.GitServer(tmp_path_factory.mktemp("every-git"))
    yield srv
    srv.close()


@pytest.fixture
def feature(tmp_path, ctx_server, gitd, uniq):
    return Feature(tmp_path, ctx_server, gitd, uniq)


def assert_every_feature_image(d, name, client, agent):
    """The image the Dockerfile makes, checked in storage."""
    assert d.image_exists(name), f"{name} is not in storage\n{d.log_tail(3000)}"
    want = {
        "/client": f"{client}\n".encode(),
        "/opt/v1.2/platforms": b"linux/amd64 linux/amd64 amd64\n",
        "/opt/v1.2/tool.txt": b"tool-data\n",
        "/unpacked/bundle/inside.txt": b"from the archive\n",
        "/src/repo/README": b"v1 readme\n",
        "/app/a.txt": b"a\n", "/app/sub/b.txt": b"b\n",
        "/p/src/x/one.txt": b"one\n", "/p/src/y/two.txt": b"two\n",
        "/linked/keep.txt": b"keep\n", "/linked/marker": b"after-rm\n",
        "/etc/heredoc.conf": b"key=1.2\n", "/heredoc-run": b"from-heredoc\nsecond\n",
        "/from-bind": b"tool-data\n",
        "/cache-meta": b"750 1000 1000\n",
        "/secret-meta": b"440 1000 1001\n",
        "/secret-sum": (hashlib.sha256(SECRET).hexdigest() + "\n").encode(),
        "/secret-env-sum": (hashlib.sha256(SECRET).hexdigest() + "\n").encode(),
        "/agent-keys": f"key: {agent.comment}\nkeys: 1\n".encode(),
    }
    got = {p: d.image_file(name, p) for p in want}
    assert got == want
    assert d.image_file(name, "/remote.txt").startswith(b"remote file ")
    # the cache mount kept what earlier builds wrote to it; this build added its line
    assert d.image_file(name, "/seen-cache").split(b"\n")[-2] == client.encode()
    # the tmpfs had the size asked for, and neither it nor the bind mount's write stayed
    assert b"tmpfs" in d.image_file(name, "/tmpfs-line") and b"size=1024k" in d.image_file(name, "/tmpfs-line")
    gone = ("/app/skip.log", "/linked/gone.txt", "/unpacked/bundle.tar.gz", "/src/repo/.git", "/scratch/t",
            "/mnt/kit/new", "/run/secrets/tok", "/.podsolve-env-exec", "/.podsolve-secret-env")
    assert d.image_paths(name, *gone) == {p: False for p in gone}
    assert d.image_file(name, "/ifaces-none").split() == [b"lo"]
    assert sorted(d.image_file(name, "/ifaces-host").split()) == sorted(n.encode() for n in os.listdir("/sys/class/net"))
    insecure = int(d.image_file(name, "/caps-insecure").split()[1], 16)
    default = int(d.image_file(name, "/caps-default").split()[1], 16)
    assert insecure & CAP_SYS_ADMIN and not default & CAP_SYS_ADMIN, (hex(insecure), hex(default))
    st = d.image_stat(name, "/bin/run-octal", "/bin/run-symbolic", "/chowned", "/unpacked/bundle/inside.txt",
                      "/src/repo/bin/tool.sh")
    assert stat.S_IMODE(st["/bin/run-octal"].st_mode) == 0o750
    assert stat.S_IMODE(st["/bin/run-symbolic"].st_mode) == 0o755
    assert (st["/chowned"].st_uid, st["/chowned"].st_gid, stat.S_IMODE(st["/chowned"].st_mode)) == (1234, 2345, 0o600)
    inside = st["/unpacked/bundle/inside.txt"]
    assert (inside.st_uid, inside.st_gid, stat.S_IMODE(inside.st_mode)) == (1234, 2345, 0o640)
    assert stat.S_IMODE(st["/src/repo/bin/tool.sh"].st_mode) == 0o755

    inspect = d.image_inspect(name)
    oci, docker = inspect["OCIv1"], inspect["Docker"]["config"]
    c = oci["config"]
    assert "DIR=/opt/v1.2" in c["Env"] and f"CLIENT={client}" in c["Env"], c["Env"]
    assert (c["User"], c["WorkingDir"], c["StopSignal"]) == ("1000:1000", "/srv", "SIGINT")
    assert c["Labels"] == {**d.image_labels(BASE), "org.example.k": "v"}, c.get("Labels")
    assert set(c["ExposedPorts"]) == {"8080/tcp", "53/udp"} and set(c["Volumes"]) == {"/data"}
    assert (c["Entrypoint"], c["Cmd"]) == (["/bin/echo"], ["hi"])
    hc = docker.get("Healthcheck") or {}
    assert (hc.get("Test"), hc.get("Interval"), hc.get("Timeout"), hc.get("Retries")) == \
        (["CMD-SHELL", "true"], 5_000_000_000, 2_000_000_000, 2), docker
    assert docker.get("Shell") == ["/bin/sh", "-c"] and docker.get("OnBuild") == ["RUN echo child"], docker
    hist = oci["history"]
    ours = [h for h in hist if h.get("comment") == "buildkit.dockerfile.v0"]
    assert [h["created_by"].split(" ")[0] for h in ours if not h.get("empty_layer")] == LAYER_STEPS, hist
    assert sum(1 for h in hist if not h.get("empty_layer")) == len(oci["rootfs"]["diff_ids"]), hist
    assert not any(h.get("comment") == "buildkit.exporter.image.v0" for h in hist), hist
    runs = [h["created_by"] for h in ours if h["created_by"].startswith("RUN ")]
    # BuildKit's form: the build args in use, then the shell form
    assert f"RUN |2 CLIENT={client} VER=1.2 /bin/sh -c grep CapEff /proc/self/status > /caps-default # buildkit" \
        in runs, runs


def plain_steps(output):
    steps = {}
    for m in PLAIN_STEP.finditer(output):
        steps.setdefault(int(m.group(1)), []).append(m.group(2))
    return steps


def assert_plain_all_cached(output):
    """--progress=plain of a rebuild: every step of the Dockerfile ([stage n/m] or [n/m]) is CACHED."""
    steps = [lines for lines in plain_steps(output).values() if lines and re.match(r"\[(\S+\s+)?\d+/\d+\]", lines[0])]
    assert len(steps) >= len(LAYER_STEPS), output
    uncached = [lines[0] for lines in steps if not any(l == "CACHED" for l in lines[1:])]
    assert not uncached, f"not CACHED on the rebuild: {uncached}\n{output[-4000:]}"


def cli_build_twice(d, cmd, env, cwd, name, client, agent, progress):
    """Build with a CLI, check the image, build again: every step CACHED,
    the same image.  progress(r) is where the CLI printed its progress."""
    r1 = run(cmd, env, cwd=cwd)
    assert r1.returncode == 0, lib.explain(r1, d)
    assert "[internal] load frontend docker/dockerfile:1" in progress(r1), progress(r1)
    assert_every_feature_image(d, lib.image_ref(name), client, agent)
    first = d.image_id(lib.image_ref(name))
    r2 = run(cmd, env, cwd=cwd)
    assert r2.returncode == 0, lib.explain(r2, d)
    assert_plain_all_cached(progress(r2))
    assert d.image_id(lib.image_ref(name)) == first


def test_docker_2010_cli_builds_every_feature(daemon, frontend_images, docker_cli, feature, ssh_agent, uniq):
    """DOCKER_BUILDKIT=1 docker build --network=host --secret --ssh: /build
    grants network.host for --network=host (as dockerd) and security.insecure
    because this daemon runs with --allow-insecure-entitlement."""
    name = f"every-cli-{uniq}"
    env = daemon.env()
    env.pop("BUILDKIT_PROGRESS", None)
    env["DOCKER_BUILDKIT"] = "1"
    cmd = [docker_cli, "build", "--progress=plain", "--network=host", "--secret", f"id=token,src={feature.secret}",
           "--ssh", f"default={ssh_agent.sock}", "--build-arg", "CLIENT=docker-20.10", "-t", name, "."]
    cli_build_twice(daemon, cmd, env, feature.dir, name, "docker-20.10", ssh_agent, lambda r: r.output)


def test_buildx_builds_every_feature(daemon, frontend_images, go_clients, feature, ssh_agent, uniq):
    """docker buildx build --allow network.host,security.insecure --secret --ssh --load."""
    name = f"every-bx-{uniq}"
    env = go_clients.env(daemon)
    cmd = [go_clients.docker, "buildx", "build", "--progress=plain", "--allow", "network.host",
           "--allow", "security.insecure", "--secret", f"id=token,src={feature.secret}",
           "--ssh", f"default={ssh_agent.sock}", "--build-arg", "CLIENT=buildx", "--load", "-t", name, "."]
    cli_build_twice(daemon, cmd, env, feature.dir, name, "buildx", ssh_agent, lambda r: r.stderr)


def solve_every_feature(d, feature, agent, name, uniq):
    req = {"ref": f"every-solve-{uniq}-{os.urandom(3).hex()}", "frontend": "dockerfile.v0",
           "frontendAttrs": {"build-arg:CLIENT": "solve"},
           "entitlements": ["network.host", "security.insecure"],
           "exporters": [{"type": "image", "attrs": {"name": name}}]}
    with SessionPeer(d.sock, {}, secrets={"token": SECRET}, ssh_agents={"default": agent.sock}) as peer:
        req["session"] = peer.uuid
        body, ctype = lib.multipart({"request": json.dumps(req).encode()}, {"context": feature.context_tar()})
        status, _, it = d.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=600)
        try:
            lines = list(it)
        finally:
            it.close()
    tail = "\n".join(json.dumps(l)[:500] for l in lines[-25:])
    assert status == 200 and lines and "result" in lines[-1], f"{tail}\n{d.log_tail(3000)}"
    return lines


def test_solve_with_a_session_builds_every_feature(daemon, frontend_images, feature, ssh_agent, uniq):
    """POST /solve (dockerfile.v0, the context as a tar part, a /session for
    the secret and the agent, both entitlements): the same image; a second
    solve has every Dockerfile step cached."""
    name = f"localhost/every-solve-{uniq}:latest"
    solve_every_feature(daemon, feature, ssh_agent, name, uniq)
    assert_every_feature_image(daemon, name, "solve", ssh_agent)
    first = daemon.image_id(name)
    again = solve_every_feature(daemon, feature, ssh_agent, name, uniq)
    steps = [v for v in lib.stream_vertexes(again) if re.match(r"\[(\S+\s+)?\d+/\d+\]", v.get("name", ""))]
    assert len(steps) >= len(LAYER_STEPS), [v.get("name") for v in lib.stream_vertexes(again)]
    assert not [v["name"] for v in steps if not v.get("cached")]
    assert daemon.image_id(name) == first
