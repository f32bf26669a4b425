"""POST /build/prune (what `docker builder prune` sends) and POST /solve/prune
remove podsolve's build cache — LLB vertex results, whole-build results, LLB
cache mounts, session context caches, untagged intermediate images — by age
and by size, report what was freed, never remove a tagged image, and wait
for running builds instead of pulling files from under them.

Every test runs its own podsolved (its own storage and state), so what a
prune removes is exactly what the test built."""

import fcntl
import json
import os
import subprocess
import threading
import time

import pytest

import podsolve_testlib as lib

import llbgen as llb  # noqa: E402
from llb_solve import image as result_image, solve_ok as solve  # noqa: E402

BUSYBOX = "docker-image://" + lib.BASE_IMAGE


@pytest.fixture
def d(spawn_daemon):
    return spawn_daemon()


def cached(events, op):
    """Whether the last state the stream gave op's vertex was `cached`."""
    states = [v for e in events for v in e.get("status", {}).get("vertexes", []) if v["digest"] == op.ref]
    assert states, f"no vertex {op.ref} in the stream"
    return bool(states[-1].get("cached"))


def blob_graph(tag, kib):
    """busybox -> exec writing `kib` KiB of random bytes and a marker file."""
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"head -c {kib * 1024} /dev/urandom > /blob; echo {tag} > /marker"], root=img)
    return img, run


def prune(daemon, path="/v1.41/build/prune", query=None, body=None):
    headers = {"Content-Type": "application/json"} if body is not None else None
    status, _, raw = daemon.request("POST", lib.with_query(path, query or {}),
                                    json.dumps(body).encode() if body is not None else None, headers,
                                    timeout=600)
    return status, json.loads(raw) if raw else None


def records(daemon, kind="llb-results"):
    d = daemon.state / kind
    return sorted(p.name for p in d.iterdir() if ".tmp" not in p.name) if d.exists() else []


def types_of(report):
    return sorted({r["Type"] for r in report["Records"]})


# --------------------------------------------------------------------------


def test_prune_removes_llb_results_and_the_next_identical_solve_runs_again(d, uniq):
    img, run = blob_graph(uniq, 512)
    first = solve(d, [img, run], exporters=[{"type": "tar"}])
    image = result_image(first)
    assert d.image_exists(image)
    assert cached(solve(d, [img, run], exporters=[{"type": "tar"}]), run)
    keys = records(d)
    assert keys, "the exec vertex left no result record"

    status, report = prune(d)
    assert status == 200, report
    assert set(keys) <= set(report["CachesDeleted"])
    assert types_of(report) == ["llb.result"]
    # The exec's layer (512 KiB of random bytes) is what was freed.
    assert report["SpaceReclaimed"] >= 512 * 1024
    assert report["SpaceReclaimed"] == sum(r["Size"] for r in report["Records"])
    assert records(d) == []
    assert not d.image_exists(image)
    assert d.image_exists(lib.BASE_IMAGE), "the tagged base image was removed"

    again = solve(d, [img, run], exporters=[{"type": "tar"}])
    assert not cached(again, run)
    assert d.image_file(result_image(again), "/marker") == f"{uniq}\n".encode()

    # Nothing left to free: an empty report, not an error.
    status, report = prune(d, query={"filters": json.dumps({"type": ["exec.cachemount"]})})
    assert status == 200 and report["CachesDeleted"] == [] and report["SpaceReclaimed"] == 0


def test_tagged_result_image_survives_prune_but_its_record_goes(d, uniq):
    img, run = blob_graph(uniq, 64)
    name = f"localhost/prune-keep-{uniq}:1"
    image = result_image(solve(d, [img, run], exporters=[{"type": "image", "attrs": {"name": name}}]))
    assert d.image_id(name) == image

    status, report = prune(d, "/solve/prune", body={"all": True})
    assert status == 200, report
    assert image not in report["CachesDeleted"]
    assert records(d) == []
    assert d.image_id(name) == image
    assert d.image_file(name, "/marker") == f"{uniq}\n".encode()
    assert d.image_exists(lib.BASE_IMAGE)
    # The record is gone, so the vertex runs again (and may reuse nothing).
    assert not cached(solve(d, [img, run]), run)


def test_until_keeps_recently_used_records_and_a_cache_hit_counts_as_use(d, uniq):
    img, run = blob_graph(uniq, 64)
    solve(d, [img, run])
    keys = records(d)

    status, report = prune(d, query={"filters": json.dumps({"until": ["1h"]})})
    assert status == 200 and report["CachesDeleted"] == []
    assert records(d) == keys

    # Last used two hours ago ...
    old = time.time() - 2 * 3600
    for k in keys:
        os.utime(d.state / "llb-results" / k, (old, old))
    # ... until a cache hit touches it again.
    assert cached(solve(d, [img, run]), run)
    status, report = prune(d, query={"filters": json.dumps({"until": {"1h": True}})})
    assert status == 200 and report["CachesDeleted"] == [], report

    for k in keys:
        os.utime(d.state / "llb-results" / k, (old, old))
    status, report = prune(d, query={"filters": json.dumps({"until": ["1h30m"]})})
    assert status == 200
    assert set(keys) <= set(report["CachesDeleted"])
    assert records(d) == []


def test_keep_storage_removes_the_oldest_entries_first(d, uniq):
    old_img, old_run = blob_graph(f"old-{uniq}", 2048)
    new_img, new_run = blob_graph(f"new-{uniq}", 256)
    solve(d, [old_img, old_run])
    old_keys = records(d)
    solve(d, [new_img, new_run])
    new_keys = [k for k in records(d) if k not in old_keys]
    then = time.time() - 600
    for k in old_keys:
        os.utime(d.state / "llb-results" / k, (then, then))

    # 1 MiB budget: the 2 MiB entry (used longest ago) must go, the 256 KiB
    # one fits and stays.
    status, report = prune(d, "/solve/prune", query={"keep-storage": str(1024 * 1024)})
    assert status == 200, report
    assert set(old_keys) <= set(report["CachesDeleted"])
    assert not set(new_keys) & set(report["CachesDeleted"])
    assert report["SpaceReclaimed"] >= 2048 * 1024
    assert records(d) == sorted(new_keys)
    assert cached(solve(d, [new_img, new_run]), new_run)
    assert not cached(solve(d, [old_img, old_run]), old_run)


def test_cache_mounts_are_pruned_with_their_size(d, uniq):
    img = llb.source(BUSYBOX)
    cache = llb.mount(-1, "/cache", type=llb.CACHE, cache_id=f"prune-{uniq}")
    run = llb.exec_(["sh", "-c", "head -c 300000 /dev/urandom > /cache/data"], root=img, mounts=[cache])
    solve(d, [img, run])
    mounts = records(d, "llb-cache-mounts")
    assert len(mounts) == 1

    status, report = prune(d, query={"filters": json.dumps({"type": ["exec.cachemount"]})})
    assert status == 200
    assert report["CachesDeleted"] == mounts
    assert report["Records"][0]["Type"] == "exec.cachemount"
    assert report["Records"][0]["Size"] >= 300000
    assert records(d, "llb-cache-mounts") == []
    assert records(d), "a type=exec.cachemount prune removed LLB results too"


def test_prune_waits_for_a_running_build_and_then_removes_what_it_made(d, uniq):
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"sleep 3; echo {uniq} > /slow"], root=img)
    done = {}

    def build():
        done["events"] = solve(d, [img, run])

    t = threading.Thread(target=build)
    t.start()
    # Wait until the exec vertex has started: the build holds the cache lock.
    deadline = time.monotonic() + lib.scaled(60)
    while not d.working_containers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.working_containers(), "the build never started its exec"
    status, report = prune(d)
    t.join(lib.scaled(120))
    assert status == 200, report
    events = done["events"]  # the build succeeded: nothing vanished under it
    assert d.image_exists(lib.BASE_IMAGE)
    # Its exec's record only existed once the build was over: the prune ran after it.
    assert any(r["Type"] == "llb.result" for r in report["Records"]), report
    assert not d.image_exists(result_image(events))


def test_a_build_started_during_a_prune_waits_for_it_then_runs(d, uniq):
    # Hold the prune gate as a prune does while it works.
    gate = os.open(d.state / "cache-prune.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(gate, fcntl.LOCK_EX)
    img, run = blob_graph(uniq, 16)
    req = {"definition": llb.definition_json([img, run]), "exporters": []}
    body, ctype = lib.multipart({"request": json.dumps(req).encode()}, {})
    status, _, it = d.stream("POST", "/solve", body, {"Content-Type": ctype})
    assert status == 200
    seen = []
    try:
        for line in it:
            seen.append(line)
            statuses = line.get("status", {}).get("statuses", [])
            if any(s["id"] == "waiting for a build cache prune to finish" for s in statuses):
                break
        else:
            raise AssertionError(f"the stream ended without saying it waits for the prune: {seen}")
        # Nothing ran while the prune held the gate.
        assert not any(line.get("status", {}).get("vertexes") for line in seen), seen
        assert d.working_containers() == []
    finally:
        fcntl.flock(gate, fcntl.LOCK_UN)
        os.close(gate)
    rest = list(it)
    assert [e for e in rest if "result" in e], rest[-3:]
    assert not cached(seen + rest, run)


def test_docker_cli_builder_prune_with_filter_keep_storage_and_all(d, docker_cli, tmp_path, uniq):
    env = d.env()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {lib.BASE_IMAGE}\nCOPY f /f\n"
                                    f"RUN head -c 400000 /dev/urandom > /blob\nRUN echo {uniq} > /done\n")
    (ctx / "f").write_text(uniq)
    tag = f"prune-cli-{uniq}"
    bk = dict(env, DOCKER_BUILDKIT="1")
    r = subprocess.run([docker_cli, "build", "-t", tag, "."], cwd=ctx, env=bk, capture_output=True, text=True,
                       timeout=lib.scaled(300))
    assert r.returncode == 0, r.stdout + r.stderr
    assert records(d, "results"), "the BuildKit-mode build left no result record"
    assert records(d, "contexts"), "the BuildKit-mode build left no context cache"

    def cli(*args):
        p = subprocess.run([docker_cli, "builder", "prune", "-f", *args], env=env, capture_output=True,
                           text=True, timeout=lib.scaled(600))
        assert p.returncode == 0, p.stdout + p.stderr
        assert "Total reclaimed space:" in p.stdout, p.stdout
        return p.stdout

    # Everything was used just now; a big budget keeps everything too.
    assert "Deleted build cache objects" not in cli("--filter", "until=24h")
    assert "Deleted build cache objects" not in cli("--keep-storage", "10GB")
    assert records(d, "results")

    # Without --all: the build's record and buildah's intermediate images
    # go; the client's context cache and the tagged image stay.
    out = cli()
    assert "Deleted build cache objects:" in out
    assert records(d, "results") == []
    assert records(d, "contexts")
    assert d.image_file(f"docker.io/library/{tag}:latest", "/done") == f"{uniq}\n".encode()
    untagged = [i for i in json.loads(d.buildah("images", "--all", "--json").stdout or "[]") or []
                if not i.get("names")]
    assert untagged == [], untagged

    out = cli("--all")
    assert "Deleted build cache objects:" in out
    assert records(d, "contexts") == []
    assert d.image_exists(f"docker.io/library/{tag}:latest")


def test_bad_prune_options_are_400_naming_the_problem(d):
    cases = [
        ({"filters": "{not json"}, "filters"),
        ({"filters": json.dumps({"label": ["a=b"]})}, "label"),
        ({"filters": json.dumps({"until": ["yesterday"]})}, "duration"),
        ({"filters": json.dumps({"type": ["everything"]})}, "everything"),
        ({"keep-storage": "10GB"}, "keep-storage"),
        ({"min-free-space": "100"}, "min-free-space"),
        ({"all": "maybe"}, "all"),
    ]
    for query, word in cases:
        status, body = prune(d, query=query)
        assert status == 400, (query, body)
        assert word in body["message"], (query, body)
    status, body = prune(d, "/solve/prune", body={"keepStorage": 1, "everything": True})
    assert status == 400 and "everything" in body["message"]
    status, body = prune(d, "/solve/prune", body={"all": "yes"})
    assert status == 400 and "all" in body["message"]
    # a size is a whole number of bytes: a fraction was truncated and the
    # prune ran (schemathesis sent minFreeSpace 2.5890419884777833e-42)
    # ... and one a double holds exactly: 2**53 + 1 would be read as 2**53
    for field, value in (("minFreeSpace", 2.5890419884777833e-42), ("keepStorage", 1.5), ("reservedSpace", -1),
                         ("reservedSpace", 2**53), ("maxUsedSpace", 9000000000000000001)):
        status, body = prune(d, "/solve/prune", body={field: value})
        assert status == 400, (field, value, body)
        assert body["message"] == f"{field}: expected a byte count (a non-negative integer)", body
    status, body = prune(d, "/solve/prune", body={"keepStorage": 2**53 - 1})
    assert status == 200, body
    # filters as JSON text must be some: "" is not "no filters" in a body
    status, body = prune(d, "/solve/prune", body={"filters": ""})
    assert status == 400 and "not a JSON object" in body["message"], body
