"""LLB execs kept as snapshots (solver/llb/snapshot.h): on the direct runc
path each exec runs on an overlay of podsolved's own over its input, and
its result stays a directory (<state>/llb-snapshots/<id>) the next exec of
a chain stacks on — no `buildah from`, `mount` or `commit` between the
steps.  An image is made only where one is needed (an export, a file op,
a bind mount), once.  Each test checks the files the result holds (added,
changed, deleted, directories replaced), which buildah processes ran
(podsolved's debug log), the records a resubmission reuses, and what a
prune removes."""

import json
import re

import pytest

import podsolve_testlib as lib

import llbgen as llb  # noqa: E402
from llb_solve import errors, image, solve  # noqa: E402

BUSYBOX = "docker-image://" + lib.BASE_IMAGE


@pytest.fixture(scope="module")
def hostnet():
    """A daemon whose LLB execs all take the direct runc path."""
    d = lib.start_private_daemon(["--sandbox-network", "host"], prefix="podsolve-it-snap-")
    yield d
    status, msg = d.stop(timeout=20)
    d.cleanup_storage()
    assert msg is None and status == 0, (status, msg)


def _buildah_calls(d, verb):
    """How many `buildah … VERB` processes podsolved has spawned so far."""
    pat = re.compile(r"spawned pid \d+: \S*buildah .*? " + verb + r"( |$)")
    return sum(1 for l in d.log_path.read_text().splitlines() if pat.search(l))


def _skopeo_copies(d):
    return sum(1 for l in d.log_path.read_text().splitlines() if re.search(r"spawned pid \d+: skopeo copy ", l))


def _layers(d, img):
    """(diff_ids, history) of an image's OCI config."""
    oci = d.image_inspect(img)["OCIv1"]
    return oci["rootfs"]["diff_ids"], oci.get("history", [])


def _ok(d, ops, **kw):
    status, events = solve(d, ops, **kw)
    assert status == 200 and not errors(events), (status, errors(events), d.log_tail())
    return events


def _cached(events, op):
    states = [v for e in events for v in e.get("status", {}).get("vertexes", []) if v["digest"] == op.ref]
    assert states, f"no vertex {op.ref} in the stream"
    return bool(states[-1].get("cached"))


def _snapshots(d):
    top = d.state / "llb-snapshots"
    return sorted(p.name for p in top.iterdir() if not p.name.startswith(".")) if top.exists() else []


def _chain(uniq):
    """busybox, then three execs: the second deletes what the first made and
    replaces a directory; the third reads both."""
    img = llb.source(BUSYBOX)
    one = llb.exec_(["sh", "-c", f"echo one-{uniq} > /a; rm /etc/group; mkdir -p /d/sub; echo x > /d/sub/f; "
                                 "echo gone > /gone; head -c 1048576 /dev/urandom > /blob"], root=img)
    two = llb.exec_(["sh", "-c", "echo two > /b; rm -rf /d; mkdir /d; echo y > /d/g; rm /gone; "
                                 "echo changed >> /a"], root=one)
    three = llb.exec_(["sh", "-c", "cat /a /b > /c; ls /d > /dlist; sha256sum /blob > /blob.sum"], root=two)
    return img, one, two, three


def test_a_chain_of_execs_commits_once_and_keeps_every_change(hostnet, uniq):
    img, one, two, three = _chain(uniq)
    froms, commits = _buildah_calls(hostnet, "from"), _buildah_calls(hostnet, "commit")
    copies = _skopeo_copies(hostnet)
    snaps_before = set(_snapshots(hostnet))
    events = _ok(hostnet, [img, one, two, three])
    out = image(events)
    # three execs: three snapshots, no working container, no commit: one
    # skopeo copy makes the result image, a layer per exec over busybox's
    assert len(set(_snapshots(hostnet)) - snaps_before) == 3
    assert _buildah_calls(hostnet, "from") == froms, hostnet.log_tail()
    assert _buildah_calls(hostnet, "commit") == commits, hostnet.log_tail()
    assert _skopeo_copies(hostnet) - copies == 1, hostnet.log_tail()
    base_ids, _ = _layers(hostnet, lib.BASE_IMAGE)
    diff_ids, history = _layers(hostnet, out)
    assert diff_ids[:len(base_ids)] == base_ids and len(diff_ids) == len(base_ids) + 3, (base_ids, diff_ids)
    ours = [h for h in history if h.get("comment") == "podsolve LLB exec"]
    assert len(ours) == 3 and not any(h.get("empty_layer") for h in ours), history

    assert hostnet.image_file(out, "/a") == f"one-{uniq}\nchanged\n".encode()
    assert hostnet.image_file(out, "/b") == b"two\n"
    assert hostnet.image_file(out, "/c") == f"one-{uniq}\nchanged\ntwo\n".encode()
    assert hostnet.image_file(out, "/dlist") == b"g\n"
    assert hostnet.image_file(out, "/d/g") == b"y\n"
    blob_sum = hostnet.image_file(out, "/blob.sum").split()[0]
    import hashlib
    assert hashlib.sha256(hostnet.image_file(out, "/blob")).hexdigest().encode() == blob_sum
    present = hostnet.image_paths(out, "/etc/group", "/gone", "/d/sub", "/etc/passwd", "/bin/sh")
    assert present == {"/etc/group": False, "/gone": False, "/d/sub": False, "/etc/passwd": True,
                       "/bin/sh": True}
    # no overlay whiteout or xattr leaked into the image
    st = hostnet.image_stat(out, "/d")["/d"]
    assert oct(st.st_mode & 0o7777) == "0o755"

    # the same definition again: every exec cached, the same image, nothing spawned
    froms, commits, copies = _buildah_calls(hostnet, "from"), _buildah_calls(hostnet, "commit"), _skopeo_copies(hostnet)
    again = _ok(hostnet, [img, one, two, three])
    assert image(again) == out
    assert all(_cached(again, op) for op in (one, two, three))
    assert (_buildah_calls(hostnet, "from"), _buildah_calls(hostnet, "commit"), _skopeo_copies(hostnet)) == \
        (froms, commits, copies)

    # the middle of the chain as the result: an image of busybox + 2 layers, the same first two
    mid = image(_ok(hostnet, [img, one, two]))
    mid_ids, _ = _layers(hostnet, mid)
    assert mid_ids == diff_ids[:len(base_ids) + 2]
    assert hostnet.image_paths(mid, "/c", "/b", "/gone") == {"/c": False, "/b": True, "/gone": False}


def test_a_file_op_reads_a_snapshot_without_an_image_and_a_bind_makes_one(hostnet, uniq):
    img = llb.source(BUSYBOX)
    made = llb.exec_(["sh", "-c", f"mkdir /out; echo made-{uniq} > /out/f; rm /etc/passwd"], root=img)
    # a file op copying from the snapshot reads it through an overlay of its own
    copy = llb.file([llb.copy("/out", "/from-made", dir_contents=True, create_dest_path=True)],
                    inputs=[img, made], base=0, secondary=1)
    copies = _skopeo_copies(hostnet)
    out = image(_ok(hostnet, [img, made, copy]))
    assert hostnet.image_file(out, "/from-made/f") == f"made-{uniq}\n".encode()
    assert hostnet.image_paths(out, "/etc/passwd") == {"/etc/passwd": True}
    assert _skopeo_copies(hostnet) == copies, "the snapshot was made an image for a copy that only reads it"
    assert not list((hostnet.state / "llb-snapshots").glob(".ro-*")), "a read-only mount was left"

    # an exec reading the snapshot through a read-only bind, on a root of its own: that one needs the image
    bind = llb.exec_(["sh", "-c", "cat /m/out/f > /seen; ls /m/etc > /m-etc"], root=copy,
                     mounts=[llb.mount(input=1, dest="/m", readonly=True)], inputs=[made])
    out = image(_ok(hostnet, [img, made, copy, bind]))
    assert hostnet.image_file(out, "/seen") == f"made-{uniq}\n".encode()
    assert b"passwd" not in hostnet.image_file(out, "/m-etc")
    assert _skopeo_copies(hostnet) > copies


def test_prune_removes_snapshots_and_a_resubmission_runs_again(spawn_daemon, uniq):
    d = spawn_daemon("--sandbox-network", "host")
    img, one, two, three = _chain(uniq)
    out = image(_ok(d, [img, one, two, three]))
    want_c = d.image_file(out, "/c")
    assert len(_snapshots(d)) == 3
    status, _, raw = d.request("POST", "/solve/prune", json.dumps({"all": True, "filters": {"type": ["exec.snapshot"]}}).encode(),
                               {"Content-Type": "application/json"}, timeout=600)
    assert status == 200, raw
    report = json.loads(raw)
    assert {r["Type"] for r in report["Records"]} == {"exec.snapshot"}, report
    assert len(report["Records"]) == 3 and all(r["Size"] > 0 for r in report["Records"]), report
    assert _snapshots(d) == []
    # the untagged image made of the last snapshot went with it, as a record's image does
    assert not d.image_exists(out)
    again = _ok(d, [img, one, two, three])
    assert not any(_cached(again, op) for op in (one, two, three))
    assert d.image_file(image(again), "/c") == want_c
    assert len(_snapshots(d)) == 3


def test_a_failed_exec_leaves_no_snapshot_and_a_restart_sweeps_unfinished_ones(spawn_daemon, uniq):
    d = spawn_daemon("--sandbox-network", "host")
    img = llb.source(BUSYBOX)
    ok = llb.exec_(["sh", "-c", "echo ok > /ok"], root=img)
    bad = llb.exec_(["sh", "-c", "echo half > /half; exit 3"], root=ok)
    status, events = solve(d, [img, ok, bad])
    assert status == 200 and errors(events), events
    assert len(_snapshots(d)) == 1  # the first exec's, finished and recorded
    # what a killed daemon leaves: a snapshot without its parent record, mounted or not
    stale = d.state / "llb-snapshots" / ("f" * 32)
    (stale / "diff").mkdir(parents=True)
    (stale / "diff" / "junk").write_text("junk")
    d.stop(timeout=20)
    d.start()
    assert not stale.exists()
    assert len(_snapshots(d)) == 1
    events = _ok(d, [img, ok])
    assert _cached(events, ok)
