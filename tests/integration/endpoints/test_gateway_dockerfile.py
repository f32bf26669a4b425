"""Dockerfiles built by BuildKit's own Dockerfile frontend (v0.32.2, as
docker.io/docker/dockerfile:1) through POST /solve: the frontend runs in a
container and sends LLB to the engine over LLBBridge, so every feature here
is the engine executing the LLB the real frontend emits (issue 14 item 5).
Each test checks what ends up in storage: files, contents, modes, owners,
deleted paths, the image config and its history."""

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import stat
import tarfile

import pytest

import podsolve_testlib as lib
from test_solve_e2e import dockerfile_ctx, log_text, result_of, run_solve, vertexes, describe

BASE = lib.BASE_IMAGE
SYNTAX = "# syntax=docker/dockerfile:1"


def gateway_build(d, uniq, lines, extra=None, attrs=None, name="gw"):
    """Build `lines` (a Dockerfile after the syntax line) with the real
    frontend -> (image name, stream lines)."""
    img = f"localhost/{name}-{uniq}:latest"
    req = {"ref": f"{name}-{uniq}-{os.urandom(3).hex()}", "frontend": "dockerfile.v0",
           "frontendAttrs": attrs or {},
           "exporters": [{"type": "image", "attrs": {"name": img}}]}
    _, out = run_solve(d, req, {"context": dockerfile_ctx(SYNTAX, *lines, extra=extra)})
    assert "result" in out[-1], f"{describe(out, d)}\n--- logs:\n{log_text(out)[-3000:]}"
    return img, out


def assert_all_cached(lines, d):
    """Every step of a rebuild is CACHED (the frontend's load steps, which
    BuildKit never caches, and the '[internal] load frontend' aside)."""
    steps = [v for v in vertexes(lines) if not v.get("name", "").startswith("[internal]")
             and v.get("name", "").split(" ")[0] != "resolve" and "load " not in v.get("name", "")]
    assert steps, describe(lines, d)
    uncached = [v["name"] for v in steps if not v.get("cached")]
    assert not uncached, f"not cached on the second build: {uncached}\n{describe(lines, d)}"


def tar_bytes(files, mode="w"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o640
            ti.uid, ti.gid = 1234, 2345
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


# --------------------------------------------------------------------------
# ADD of local archives


def test_add_local_archives_unpack_like_docker(daemon, frontend_images, uniq):
    plain = tar_bytes({"plain/a.txt": b"plain tar\n"})
    extra = {
        "plain.tar": plain,
        "z.tar.gz": gzip.compress(tar_bytes({"gz/b.txt": b"gzip tar\n"})),
        "z.tar.bz2": bz2.compress(tar_bytes({"bz/c.txt": b"bzip2 tar\n"})),
        "z.tar.xz": lzma.compress(tar_bytes({"xz/d.txt": b"xz tar\n"})),
        "notes.gz": b"not an archive at all\n",
    }
    img, lines = gateway_build(daemon, uniq, [f"FROM {BASE}",
                                              "ADD plain.tar z.tar.gz z.tar.bz2 z.tar.xz /unpacked/",
                                              "ADD notes.gz /copied/"], extra=extra, name="gw-add")
    result_of(lines, daemon)
    files = {p: daemon.image_file(img, p) for p in
             ("/unpacked/plain/a.txt", "/unpacked/gz/b.txt", "/unpacked/bz/c.txt", "/unpacked/xz/d.txt",
              "/copied/notes.gz")}
    assert files == {"/unpacked/plain/a.txt": b"plain tar\n", "/unpacked/gz/b.txt": b"gzip tar\n",
                     "/unpacked/bz/c.txt": b"bzip2 tar\n", "/unpacked/xz/d.txt": b"xz tar\n",
                     "/copied/notes.gz": b"not an archive at all\n"}
    # the archives themselves are not copied; entries keep the tar's owner and mode
    assert daemon.image_paths(img, "/unpacked/plain.tar", "/unpacked/z.tar.gz") == {
        "/unpacked/plain.tar": False, "/unpacked/z.tar.gz": False}
    st = daemon.image_stat(img, "/unpacked/plain/a.txt")["/unpacked/plain/a.txt"]
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 2345)


# --------------------------------------------------------------------------
# COPY: required sources, --link, --parents, --exclude, --chmod, heredocs


def test_copy_of_a_missing_source_fails_naming_it(daemon, frontend_images, uniq):
    req = {"ref": f"gw-missing-{uniq}", "frontend": "dockerfile.v0",
           "exporters": [{"type": "image", "attrs": {"name": f"localhost/gw-missing-{uniq}"}}]}
    body, ctype = lib.multipart({"request": json.dumps(req).encode()},
                                {"context": dockerfile_ctx(SYNTAX, f"FROM {BASE}", "COPY here.txt nothere.txt /d/",
                                                           extra={"here.txt": "x\n"})})
    status, _, it = daemon.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=300)
    lines = list(it)
    it.close()
    errors = [l["error"] for l in lines if "error" in l]
    assert errors, describe(lines, daemon)
    msg = " ".join(e.get("message", "") for e in errors)
    # the failing action names the missing source, not the whole instruction
    assert "copy /nothere.txt: No such file or directory" in msg, msg
    assert "not supported" not in msg, msg


# COPY's options over the context of COPY_CONTEXT, then a RUN rm of a file a
# COPY --link layer holds (test_gateway_every_feature uses them too)
COPY_VARIANTS = [
    "COPY --exclude=*.log app/ /app/",
    "COPY --parents src/*/*.txt /p/",
    "COPY --chmod=0750 run.sh /bin/run-octal",
    "COPY --chmod=u=rwx,go=rx run.sh /bin/run-symbolic",
    "COPY --chown=1234:2345 run.sh /chowned",
    "COPY --link linked/ /linked/",
    "RUN rm /linked/gone.txt && echo after-rm > /linked/marker",
]

COPY_DOCKERFILE = [
    f"FROM {BASE} AS build",
    "ARG WHO=world",
    "ENV GREETING=hello-${WHO}",
    'RUN echo "$GREETING" > /greeting && mkdir -p /out && echo built > /out/artifact',
    f"FROM {BASE}",
    "ARG VER=1.2",
    "ENV DIR=/opt/v${VER}",
    "COPY --from=build /out/artifact /greeting ${DIR}/",
    *COPY_VARIANTS,
    "COPY <<EOF /etc/heredoc.conf\nkey=${VER}\nEOF",
    "RUN <<EOF\nset -e\necho from-heredoc > /heredoc-run\necho second >> /heredoc-run\nEOF",
]

COPY_CONTEXT = {"app/a.txt": "a\n", "app/skip.log": "log\n", "app/sub/b.txt": "b\n",
                "src/x/one.txt": "one\n", "src/y/two.txt": "two\n", "run.sh": ("#!/bin/sh\necho hi\n", 0o600),
                "linked/keep.txt": "keep\n", "linked/gone.txt": "gone\n"}


def test_copy_variants_heredocs_and_rm_over_a_link_then_all_cached(daemon, frontend_images, uniq):
    img, lines = gateway_build(daemon, uniq, COPY_DOCKERFILE, extra=COPY_CONTEXT, name="gw-copy")
    want = {"/opt/v1.2/artifact": b"built\n", "/opt/v1.2/greeting": b"hello-world\n", "/app/a.txt": b"a\n",
            "/app/sub/b.txt": b"b\n", "/p/src/x/one.txt": b"one\n", "/p/src/y/two.txt": b"two\n",
            "/linked/keep.txt": b"keep\n", "/linked/marker": b"after-rm\n", "/etc/heredoc.conf": b"key=1.2\n",
            "/heredoc-run": b"from-heredoc\nsecond\n"}
    assert {p: daemon.image_file(img, p) for p in want} == want
    # --exclude left the log out; the RUN's rm deleted a file COPY --link put in a layer of its own
    assert daemon.image_paths(img, "/app/skip.log", "/linked/gone.txt") == {
        "/app/skip.log": False, "/linked/gone.txt": False}
    st = daemon.image_stat(img, "/bin/run-octal", "/bin/run-symbolic")
    assert stat.S_IMODE(st["/bin/run-octal"].st_mode) == 0o750
    assert stat.S_IMODE(st["/bin/run-symbolic"].st_mode) == 0o755
    ch = daemon.image_stat(img, "/chowned")["/chowned"]
    assert (ch.st_uid, ch.st_gid, stat.S_IMODE(ch.st_mode)) == (1234, 2345, 0o600)
    oci = daemon.image_inspect(img)["OCIv1"]
    made = [h for h in oci["history"] if h.get("comment") == "buildkit.dockerfile.v0"]
    assert [h["created_by"].split(" ")[0] for h in made if not h.get("empty_layer")] == \
        ["COPY"] * 7 + ["RUN", "COPY", "RUN"], oci["history"]
    assert sum(1 for h in oci["history"] if not h.get("empty_layer")) == len(oci["rootfs"]["diff_ids"])
    assert not any(h.get("comment") == "buildkit.exporter.image.v0" for h in oci["history"]), oci["history"]
    # the same build again (a fresh context tar, a new frontend session): every step from the cache
    img2, again = gateway_build(daemon, uniq, COPY_DOCKERFILE, extra=COPY_CONTEXT, name="gw-copy")
    assert_all_cached(again, daemon)
    assert daemon.image_id(img2) == daemon.image_id(img)


# --------------------------------------------------------------------------
# ADD --checksum of an http URL


def test_add_http_with_checksum(daemon, frontend_images, ctx_server, uniq):
    data = f"remote file {uniq}\n".encode()
    (lib.Path(ctx_server.root) / f"f-{uniq}.txt").write_bytes(data)
    url = f"http://127.0.0.1:{ctx_server.port}/f-{uniq}.txt"
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    img, lines = gateway_build(daemon, uniq, [f"FROM {BASE}", f"ADD --checksum={good} {url} /remote.txt"],
                               name="gw-http")
    result_of(lines, daemon)
    assert daemon.image_file(img, "/remote.txt") == data
    bad = "sha256:" + "0" * 64
    req = {"ref": f"gw-http-bad-{uniq}", "frontend": "dockerfile.v0", "exporters": []}
    body, ctype = lib.multipart({"request": json.dumps(req).encode()},
                                {"context": dockerfile_ctx(SYNTAX, f"FROM {BASE}",
                                                           f"ADD --checksum={bad} {url} /remote.txt")})
    _, _, it = daemon.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=300)
    out = list(it)
    it.close()
    assert any("error" in l for l in out), describe(out, daemon)
    assert "checksum" in json.dumps([l["error"] for l in out if "error" in l]).lower()


# --------------------------------------------------------------------------
# RUN --network and --mount


def test_run_network_none_and_mounts(daemon, frontend_images, uniq):
    lines_df = [
        f"FROM {BASE} AS tools",
        "RUN mkdir /kit && echo tool-data > /kit/tool.txt",
        f"FROM {BASE}",
        "RUN --network=none ls /sys/class/net > /ifaces",
        f"RUN --mount=type=cache,target=/cache,id=gw-{uniq} echo run >> /cache/log && cat /cache/log > /seen-cache",
        "RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/t && grep -c tmpfs /proc/mounts > /tmpfs-seen"
        " && ls -A /scratch > /scratch-list",
        "RUN --mount=type=bind,from=tools,source=/kit,target=/mnt/kit cat /mnt/kit/tool.txt > /from-bind",
    ]
    img, lines = gateway_build(daemon, uniq, lines_df, name="gw-run")
    result_of(lines, daemon)
    assert daemon.image_file(img, "/ifaces").split() == [b"lo"]
    assert daemon.image_file(img, "/seen-cache") == b"run\n"
    assert daemon.image_file(img, "/from-bind") == b"tool-data\n"
    assert int(daemon.image_file(img, "/tmpfs-seen")) >= 1
    assert daemon.image_paths(img, "/scratch/t", "/mnt/kit/tool.txt") == {"/scratch/t": False,
                                                                          "/mnt/kit/tool.txt": False}
    # the cache mount persists: a build that differs before it sees the first run's line
    img2, lines2 = gateway_build(daemon, uniq, [lines_df[0], lines_df[1], lines_df[2], "ENV CHANGED=1"]
                                 + lines_df[3:], name="gw-run2")
    result_of(lines2, daemon)
    assert daemon.image_file(img2, "/seen-cache") == b"run\nrun\n"


# --------------------------------------------------------------------------
# the image config and history, as BuildKit records them


def test_image_config_and_history_are_the_frontends(daemon, frontend_images, uniq):
    img, lines = gateway_build(daemon, uniq, [
        f"FROM {BASE}",
        "ENV A=1 B=two",
        "LABEL org.example.k=v",
        "WORKDIR /srv",
        "RUN echo x > /srv/x",
        "USER 1000:1000",
        "EXPOSE 8080/tcp 53/udp",
        "VOLUME /data",
        "HEALTHCHECK --interval=5s --timeout=2s --retries=2 CMD true",
        "STOPSIGNAL SIGINT",
        'SHELL ["/bin/sh", "-xc"]',
        "ONBUILD RUN echo child",
        'ENTRYPOINT ["/bin/echo"]',
        'CMD ["hi"]',
    ], name="gw-cfg")
    result_of(lines, daemon)
    cfg = daemon.image_inspect(img)["OCIv1"]
    c = cfg["config"]
    assert "A=1" in c["Env"] and "B=two" in c["Env"]
    assert c["Entrypoint"] == ["/bin/echo"] and c["Cmd"] == ["hi"]
    assert c["User"] == "1000:1000" and c["WorkingDir"] == "/srv"
    # the labels are the base image's (as BuildKit inherits them) and the
    # Dockerfile's: nothing the engine's own commits add
    assert c["Labels"] == {**daemon.image_labels(BASE), "org.example.k": "v"}, c.get("Labels")
    assert set(c["ExposedPorts"]) == {"8080/tcp", "53/udp"}
    assert set(c["Volumes"]) == {"/data"}
    assert c["StopSignal"] == "SIGINT"
    docker = daemon.image_inspect(img)["Docker"]["config"]
    hc = docker.get("Healthcheck") or {}
    assert hc.get("Test") == ["CMD-SHELL", "true"] and hc.get("Interval") == 5_000_000_000 and hc.get("Retries") == 2, docker
    assert docker.get("Shell") == ["/bin/sh", "-xc"], docker
    assert docker.get("OnBuild") == ["RUN echo child"], docker
    hist = cfg["history"]
    ours = [h for h in hist if h.get("comment") == "buildkit.dockerfile.v0"]
    assert [h["created_by"] for h in ours][:3] == ["ENV A=1 B=two", "LABEL org.example.k=v", "WORKDIR /srv"], hist
    run = [h for h in ours if h["created_by"].startswith("RUN ")]
    assert run and run[0]["created_by"] == "RUN /bin/sh -c echo x > /srv/x # buildkit", hist
    assert not run[0].get("empty_layer")
    assert all(h.get("empty_layer") for h in ours if h["created_by"].startswith(("ENV", "LABEL", "USER", "CMD")))
    # one history entry per layer
    layers = len(cfg["rootfs"]["diff_ids"])
    assert sum(1 for h in hist if not h.get("empty_layer")) == layers, (hist, cfg["rootfs"])
    assert not any("FROM " in (h.get("comment") or "") for h in hist), hist
    # ...and they are the frontend's own: none had to be made up for a layer it did not account for
    assert not any(h.get("comment") == "buildkit.exporter.image.v0" for h in hist), hist


def test_scratch_image_has_no_builder_label(daemon, frontend_images, uniq):
    """BuildKit adds no label of its own: an image FROM scratch with no LABEL
    has none, whatever the engine committed on the way."""
    img, _ = gateway_build(daemon, uniq, ["FROM scratch", "COPY f.txt /f.txt", 'CMD ["/f.txt"]'],
                           extra={"f.txt": "only file\n"}, name="gw-scratch")
    cfg = daemon.image_inspect(img)["OCIv1"]
    assert not (cfg["config"].get("Labels") or {}), cfg["config"]
    assert cfg["config"]["Cmd"] == ["/f.txt"]
    assert daemon.image_file(img, "/f.txt") == b"only file\n"
