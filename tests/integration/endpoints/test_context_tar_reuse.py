"""Builds whose context is an uploaded tar (POST /solve multipart, POST
/build v1) are keyed from the stored tar before it is unpacked
(solver/dockerfile/result_cache.h): the same bytes again (the tar made
anew, other mtimes) reuse the whole result without unpacking the context;
a changed byte, a changed base image or layers=false build anew; a bad tar
still gets the extraction's 400.  Real daemon, real buildah storage."""

import json
import re
import time

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, containerfile

NOT_UNPACKED = "build context tar not unpacked"


def solve(d, request, context_tar):
    body, ctype = lib.multipart({"request": json.dumps(request).encode()}, {"context": context_tar})
    status, _, it = d.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=300)
    try:
        lines = list(it)
    finally:
        it.close()
    assert status == 200, f"HTTP {status}: {lines}\n{d.log_tail(3000)}"
    assert lines and "result" in lines[-1], f"no result: {lines[-5:]}\n{d.log_tail(3000)}"
    return lines


def steps_of(lines):
    return [v for v in lib.stream_vertexes(lines) if re.match(r"(\[\d+/\d+\] )?STEP \d+/\d+", v.get("name", ""))
            or re.match(r"\[\d+/\d+\] ", v.get("name", ""))]


def files(uniq, payload="one"):
    return {"a.txt": f"{uniq} {payload}\n", "sub/b.bin": (uniq * 4000).encode()}


def dockerfile(base, uniq):
    return containerfile(f"FROM {base}", "COPY . /ctx", "RUN cat /proc/sys/kernel/random/uuid > /stamp",
                         f"LABEL case={uniq}")


def not_unpacked_count(d):
    return d.log_tail(200000).count(NOT_UNPACKED)


def test_solve_same_tar_bytes_again_reuse_the_result_without_unpacking(daemon, uniq):
    img = f"localhost/tarkey-solve-{uniq}:latest"
    base = f"localhost/tarkey-base-{uniq}:latest"
    daemon.buildah("tag", BASE_IMAGE, base)
    req = {"frontend": "dockerfile.v0", "exporters": [{"type": "image", "attrs": {"name": img}}]}
    ctx = dict(files(uniq), Dockerfile=dockerfile(base, uniq))
    first = solve(daemon, dict(req, ref=f"tk-a-{uniq}"), lib.tar_context(ctx))
    id1, stamp1 = daemon.image_id(img), daemon.image_file(img, "/stamp")
    assert not any(v.get("cached") for v in steps_of(first) if "RUN" in v["name"])
    before = not_unpacked_count(daemon)

    time.sleep(1.1)  # the same bytes in files made again: other mtimes
    again = solve(daemon, dict(req, ref=f"tk-b-{uniq}"), lib.tar_context(ctx))
    steps = steps_of(again)
    assert len(steps) == 4 and all(v.get("cached") is True for v in steps), \
        ([(v["name"], v.get("cached")) for v in steps], daemon.log_tail(3000))
    assert again[-1]["result"]["exporterResponse"]["containerimage.config.digest"] == f"sha256:{id1}"
    assert daemon.image_id(img) == id1
    assert daemon.image_file(img, "/stamp") == stamp1
    assert not_unpacked_count(daemon) == before + 1, daemon.log_tail(3000)

    # one changed byte (same size): built anew with the new content
    changed = dict(ctx, **{"a.txt": f"{uniq} onE\n"})
    third = solve(daemon, dict(req, ref=f"tk-c-{uniq}"), lib.tar_context(changed))
    assert not all(v.get("cached") for v in steps_of(third))
    assert daemon.image_file(img, "/ctx/a.txt") == changed["a.txt"].encode()
    assert daemon.image_file(img, "/stamp") != stamp1
    assert not_unpacked_count(daemon) == before + 1

    # the FROM image re-tagged to another image: built anew
    other = f"localhost/tarkey-other-{uniq}:latest"
    other_ctx = lib.tar_context({"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", f"RUN echo {uniq} > /other")})
    solve(daemon, {"ref": f"tk-o-{uniq}", "frontend": "dockerfile.v0",
                   "exporters": [{"type": "image", "attrs": {"name": other}}]}, other_ctx)
    daemon.buildah("tag", other, base)
    fourth = solve(daemon, dict(req, ref=f"tk-d-{uniq}"), lib.tar_context(ctx))
    assert not all(v.get("cached") for v in steps_of(fourth))
    assert daemon.image_file(img, "/other") == f"{uniq}\n".encode()
    assert daemon.image_id(img) != id1
    assert not_unpacked_count(daemon) == before + 1


def test_solve_bad_context_tar_still_gets_the_extraction_400(daemon, uniq):
    req = {"ref": f"tk-bad-{uniq}", "frontend": "dockerfile.v0", "exporters": []}
    body, ctype = lib.multipart({"request": json.dumps(req).encode()}, {"context": b"this is not a tar" * 100})
    status, _, it = daemon.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=60)
    try:
        answer = b"".join(json.dumps(l).encode() for l in it)
    finally:
        it.close()
    assert status == 400, answer
    assert b"not a tar archive" in answer, answer
    # an entry that escapes the context: the key pass refuses it, the unpack says why
    escaping = lib.tar_entries([("Dockerfile", "file", f"FROM {BASE_IMAGE}\n"), ("../evil", "file", "x")])
    body, ctype = lib.multipart({"request": json.dumps(req).encode()}, {"context": escaping})
    status, _, it = daemon.stream("POST", "/solve", body, {"Content-Type": ctype}, timeout=60)
    try:
        answer = b"".join(json.dumps(l).encode() for l in it)
    finally:
        it.close()
    assert status == 400 and b"escapes the build context" in answer, answer


def test_compat_build_same_tar_bytes_again_is_a_cached_build_without_unpacking(daemon, uniq):
    ctx = dict(files(uniq), Dockerfile=dockerfile(BASE_IMAGE, uniq))
    tag = f"tarkey-compat-{uniq}"
    first = daemon.build(ctx, {"t": tag})
    assert first.status == 200 and first.error is None, first.describe()
    before = not_unpacked_count(daemon)
    time.sleep(1.1)
    second = daemon.build(ctx, {"t": tag})
    assert second.status == 200 and second.error is None, second.describe()
    using = [s for s in second.streams if s.startswith("--> Using cache ")]
    assert len(using) == 3, second.describe()  # COPY, RUN, LABEL (FROM has none)
    assert second.final_id == first.final_id == daemon.image_id(f"docker.io/library/{tag}:latest")
    assert f"Successfully built {first.final_id[:12]}\n" in second.streams, second.describe()
    assert f"Successfully tagged {tag}:latest\n" in second.streams or \
        f"Successfully tagged docker.io/library/{tag}:latest\n" in second.streams, second.describe()
    assert second.aux_ids == first.aux_ids
    assert not_unpacked_count(daemon) == before + 1, daemon.log_tail(3000)


def test_libpod_build_without_layers_is_not_reused(daemon, uniq):
    ctx = dict(files(uniq), Containerfile=dockerfile(BASE_IMAGE, uniq))
    tag = f"localhost/tarkey-nolayers-{uniq}:latest"
    first = daemon.build(ctx, {"t": tag}, endpoint=lib.LIBPOD_BUILD)
    assert first.status == 200 and first.error is None, first.describe()
    stamp1 = daemon.image_file(tag, "/stamp")
    before = not_unpacked_count(daemon)
    second = daemon.build(ctx, {"t": tag}, endpoint=lib.LIBPOD_BUILD)
    assert second.status == 200 and second.error is None, second.describe()
    assert daemon.image_file(tag, "/stamp") != stamp1
    assert not_unpacked_count(daemon) == before


def test_solve_hit_still_feeds_the_tar_exporter(daemon, uniq):
    """The exporters take the reused image as they take a built one: a tar
    exporter's download holds the files the context put there."""
    import io
    import tarfile
    ctx = dict(files(uniq, "tar-exported"), Dockerfile=dockerfile(BASE_IMAGE, uniq))
    solve(daemon, {"ref": f"tk-t1-{uniq}", "frontend": "dockerfile.v0", "exporters": []}, lib.tar_context(ctx))
    before = not_unpacked_count(daemon)
    ref = f"tk-t2-{uniq}"
    lines = solve(daemon, {"ref": ref, "frontend": "dockerfile.v0", "exporters": [{"type": "tar"}]},
                  lib.tar_context(ctx))
    assert all(v.get("cached") is True for v in steps_of(lines)), steps_of(lines)
    assert not_unpacked_count(daemon) == before + 1
    status, _, data = daemon.request("GET", f"/solve/{ref}/outputs/0")
    assert status == 200, (status, data[:300])
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = {n.lstrip("./") for n in tf.getnames()}
        assert "ctx/a.txt" in names and "stamp" in names, sorted(names)[:40]
        member = next(m for m in tf.getmembers() if m.name.lstrip("./") == "ctx/a.txt")
        assert tf.extractfile(member).read() == ctx["a.txt"].encode()
