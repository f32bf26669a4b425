"""LLB FileOps as BuildKit runs them, done natively on buildah mounts:
owners by name from the image's own /etc/passwd and /etc/group, wildcard
copies and removals, include/exclude patterns, modes and timestamps, one
FileOp working on several rootfs, and a FileOp with several outputs each
used by a later op.  Malformed options are a 400 and unsupported ones a
501 before anything runs."""

import json
import os
import stat

import podsolve_testlib as lib

import llbgen as llb  # noqa: E402
from llb_solve import errors as _errors, image as _image, solve as _solve, vertexes as _vertexes  # noqa: E402

BUSYBOX = "docker-image://" + lib.BASE_IMAGE
act = llb.act








def _build(daemon, ops, names=None):
    status, events = _solve(daemon, ops, names)
    assert status == 200
    return _image(events)




def _stat(daemon, image, *paths):
    """{path: os.stat_result (not following a final symlink) or None}."""
    def look(mnt):
        return {p: os.lstat(mnt / p.lstrip("/")) if os.path.lexists(mnt / p.lstrip("/")) else None for p in paths}
    return daemon._with_mounted(image, look)


def _refused(daemon, ops):
    """POST /solve as JSON -> (status, message) for a definition checked before anything runs."""
    req = {"definition": llb.definition_json(ops)}
    st, _, body = daemon.request("POST", "/solve", json.dumps(req).encode(), {"Content-Type": "application/json"})
    return st, json.loads(body)["message"]


def _busybox_with_app_user(uniq):
    """busybox + an exec adding user app (1234:1235) and groups appgrp, staff (50)."""
    img = llb.source(BUSYBOX)
    add = llb.exec_(["sh", "-c", f"echo 'app:x:1234:1235:{uniq}:/home/app:/bin/sh' >> /etc/passwd && "
                                 "echo 'appgrp:x:1235:' >> /etc/group && echo 'staff:x:50:app' >> /etc/group"],
                    root=img)
    return img, add


def test_owner_by_name_is_resolved_in_the_images_own_passwd_and_group(daemon, uniq):
    img, add = _busybox_with_app_user(uniq)
    seed = llb.file([llb.mkfile("/seed", uniq)])
    # action 0 looks names up in its own base (input 0); action 1 continues
    # action 0 but still names input 0; the copy and symlink too
    f = llb.file([llb.mkdir("/home/app", 0o750, parents=True, chown=llb.owner("app", input=0)),
                  llb.mkfile("/home/app/conf", b"k=v\n", 0o640, chown=llb.owner("app", "staff", input=0)),
                  llb.copy("/seed", "/home/app/seed", chown=llb.owner("nobody", input=0)),
                  llb.symlink("conf", "/home/app/link", chown=llb.owner(1234, "appgrp", input=0))],
                 inputs=[add, seed], base=0, secondary=1)
    image = _build(daemon, [img, add, seed, f])
    st = _stat(daemon, image, "/home/app", "/home/app/conf", "/home/app/seed", "/home/app/link")
    assert (st["/home/app"].st_uid, st["/home/app"].st_gid) == (1234, 1235)
    assert stat.S_IMODE(st["/home/app"].st_mode) == 0o750
    assert (st["/home/app/conf"].st_uid, st["/home/app/conf"].st_gid) == (1234, 50)
    assert (st["/home/app/seed"].st_uid, st["/home/app/seed"].st_gid) == (65534, 65534)
    assert stat.S_ISLNK(st["/home/app/link"].st_mode)
    assert (st["/home/app/link"].st_uid, st["/home/app/link"].st_gid) == (1234, 1235)
    assert daemon.image_file(image, "/home/app/seed") == uniq.encode()


def test_owner_names_from_passwd_written_earlier_in_the_same_file_op(daemon, uniq):
    """A scratch rootfs gets /etc/passwd and /etc/group; a second scratch
    rootfs in the same FileOp takes its owner names from the first."""
    f = llb.file_graph([
        act(llb.mkdir("/etc")),
        act(llb.mkfile("/etc/passwd", f"svc:x:700:701:{uniq}:/:/bin/false\n"), input=0),
        act(llb.mkfile("/etc/group", b"svcgrp:x:702:\n"), input=1),
        # names in its own base (action 2's result) ...
        act(llb.mkdir("/data", 0o700, chown=llb.owner("svc", "svcgrp", input=2)), input=2, output=1),
        # ... and in another rootfs than its own
        act(llb.mkfile("/other", b"x", chown=llb.owner("svc", input=2)), output=0),
    ])
    status, events = _solve(daemon, [f])
    image = _image(events)
    st = _stat(daemon, image, "/other", "/etc/passwd")
    assert (st["/other"].st_uid, st["/other"].st_gid) == (700, 701)
    assert st["/etc/passwd"] is None  # output 0 is the second rootfs only

    # output 1 of the same op, used by a later op
    g = llb.file([llb.copy("/data", "/data")], inputs=[(f, 1)], base=-1, secondary=0)
    image = _build(daemon, [f, g])
    st = _stat(daemon, image, "/data")
    assert (st["/data"].st_uid, st["/data"].st_gid) == (700, 702)


def test_unknown_owner_name_fails_naming_the_user_and_the_op(daemon, uniq):
    before = daemon.working_containers()
    img = llb.source(BUSYBOX)
    f = llb.file([llb.mkfile("/x", uniq, chown=llb.owner(f"ghost{uniq[:6]}", input=0))], inputs=[img], base=0)
    status, events = _solve(daemon, [img, f])
    assert status == 200
    errs = _errors(events)
    assert len(errs) == 1 and errs[0]["vertex"] == f.ref, errs
    msg = errs[0]["message"]
    assert f'"ghost{uniq[:6]}" not found in /etc/passwd' in msg and f.ref in msg, msg
    assert daemon.working_containers() == before
    assert daemon.request("GET", "/_ping")[0] == 200


def _tree(uniq):
    return llb.file([llb.mkdir("/app/sub", parents=True), llb.mkfile("/app/a.txt", f"a{uniq}"),
                     llb.mkfile("/app/b.txt", b"b"), llb.mkfile("/app/c.md", b"c"),
                     llb.mkfile("/app/sub/d.txt", b"d"), llb.mkfile("/app/sub/e.log", b"e")])


def test_wildcard_copy_copies_each_match(daemon, uniq):
    src = _tree(uniq)
    f = llb.file([llb.copy("/app/*.txt", "/out/", allow_wildcard=True, create_dest_path=True),
                  llb.copy("/app/s?b", "/dirs/", allow_wildcard=True, create_dest_path=True)],
                 inputs=[src], secondary=0)
    image = _build(daemon, [src, f])
    assert daemon.image_file(image, "/out/a.txt") == f"a{uniq}".encode()
    assert daemon.image_paths(image, "/out/b.txt", "/out/c.md", "/out/d.txt", "/dirs/sub/d.txt") == {
        "/out/b.txt": True, "/out/c.md": False, "/out/d.txt": False, "/dirs/sub/d.txt": True}


def test_wildcard_without_match_fails_unless_empty_is_allowed(daemon, uniq):
    src = _tree(uniq)
    ok = llb.file([llb.mkfile("/marker", uniq),
                   llb.copy("/app/*.none", "/out/", allow_wildcard=True, allow_empty_wildcard=True)],
                  inputs=[src], secondary=0)
    image = _build(daemon, [src, ok])
    assert daemon.image_paths(image, "/marker", "/out") == {"/marker": True, "/out": False}

    bad = llb.file([llb.mkfile("/marker", uniq), llb.copy("/app/*.none", "/out/", allow_wildcard=True)],
                   inputs=[src], secondary=0)
    status, events = _solve(daemon, [src, bad])
    errs = _errors(events)
    assert len(errs) == 1 and errs[0]["vertex"] == bad.ref
    assert "/app/*.none: no source matches" in errs[0]["message"], errs


def test_copy_include_and_exclude_patterns(daemon, uniq):
    src = _tree(uniq)
    f = llb.file([llb.copy("/app", "/out", include=["*.txt", "sub"], exclude=["sub/*.log"])],
                 inputs=[src], secondary=0)
    image = _build(daemon, [src, f])
    assert daemon.image_paths(image, "/out/a.txt", "/out/b.txt", "/out/c.md", "/out/sub/d.txt",
                              "/out/sub/e.log") == {"/out/a.txt": True, "/out/b.txt": True, "/out/c.md": False,
                                                    "/out/sub/d.txt": True, "/out/sub/e.log": False}


def test_rm_with_wildcard_removes_every_match(daemon, uniq):
    img = llb.source(BUSYBOX)
    f = llb.file([llb.mkfile("/marker", uniq), llb.rm("/bin/s*", allow_wildcard=True),
                  llb.rm("/bin/c*", allow_not_found=True)], inputs=[img], base=0)
    image = _build(daemon, [img, f])
    assert daemon.image_paths(image, "/bin/sh", "/bin/sleep", "/bin/sed", "/bin/cat", "/bin/busybox") == {
        "/bin/sh": False, "/bin/sleep": False, "/bin/sed": False, "/bin/cat": True, "/bin/busybox": True}


def test_one_file_op_works_on_several_rootfs(daemon, uniq):
    """Two scratch rootfs built side by side, then copied into busybox:
    actions start from op inputs, scratch and non-previous results."""
    img = llb.source(BUSYBOX)
    # index 0 is busybox; action k's result is index 1 + k
    f = llb.file_graph([
        act(llb.mkdir("/a", parents=True)),                                     # scratch
        act(llb.mkfile("/b", f"b{uniq}")),                                      # another scratch
        act(llb.mkfile("/a/f", b"af"), input=1),                                # continues action 0
        act(llb.copy("/a", "/from-a", create_dest_path=True), input=0, secondary=3),  # busybox + action 2's
        act(llb.copy("/b", "/from-b"), input=4, secondary=2, output=0),         # + action 1's result
    ], inputs=[img])
    image = _build(daemon, [img, f])
    assert daemon.image_file(image, "/from-a/f") == b"af"
    assert daemon.image_file(image, "/from-b") == f"b{uniq}".encode()
    assert daemon.image_has_file(image, "/bin/busybox")


def test_copy_from_the_rootfs_it_changes_reads_it_as_it_was(daemon, uniq):
    """input and secondaryInput both name action 0's result: the copy
    reads a snapshot, so /snap does not end up inside itself."""
    f = llb.file_graph([
        act(llb.mkfile("/x", uniq)),
        act(llb.copy("/", "/snap", dir_contents=True, create_dest_path=True), input=0, secondary=0, output=0),
    ])
    image = _build(daemon, [f])
    assert daemon.image_file(image, "/snap/x") == uniq.encode()
    assert daemon.image_paths(image, "/x", "/snap/snap") == {"/x": True, "/snap/snap": False}


def test_file_op_with_two_outputs_each_used_by_a_later_op(daemon, uniq):
    img = llb.source(BUSYBOX)
    f = llb.file_graph([
        act(llb.mkfile("/shared", f"s{uniq}")),
        act(llb.mkfile("/left", b"L"), input=0, output=0),
        act(llb.mkfile("/right", b"R"), input=0, output=1),
    ])
    # output 1 read by an exec through a bind mount
    check = llb.exec_(["sh", "-c", "test ! -e /mnt/left && cat /mnt/shared /mnt/right > /r"], inputs=[(f, 1)],
                      mounts=[llb.mount(1, "/mnt", readonly=True)], root=img)
    # output 0 continued by a FileOp that also takes the exec's result
    join = llb.file([llb.copy("/r", "/r")], inputs=[(f, 0), check], base=0, secondary=1)
    ops = [img, f, check, join]
    status, events = _solve(daemon, ops)
    assert status == 200
    image = _image(events)
    assert daemon.image_file(image, "/r") == f"s{uniq}R".encode()
    assert daemon.image_paths(image, "/left", "/shared", "/right") == {"/left": True, "/shared": True,
                                                                        "/right": False}
    # both outputs are cached: the resubmission runs nothing
    status, events = _solve(daemon, ops)
    assert _image(events) == image
    v = _vertexes(events)
    assert all(v[op.ref][-1].get("cached") for op in (f, check, join)), v


def test_timestamps_and_modes(daemon, uniq):
    t = 1_600_000_000 * 10**9 + 5
    src = llb.file([llb.mkfile("/tool", f"#!/bin/sh\n# {uniq}\n", 0o644)])
    f = llb.file([llb.mkdir("/d", 0o711, timestamp=t),
                  llb.mkfile("/d/f", b"x", 0o600, timestamp=t + 10**9),
                  llb.symlink("f", "/d/l", timestamp=t + 2 * 10**9),
                  llb.copy("/tool", "/d/tool", mode_str="+x", timestamp=t + 3 * 10**9),
                  llb.copy("/tool", "/d/tool2", mode=0o4755)],
                 inputs=[src], secondary=0)
    image = _build(daemon, [src, f])
    st = _stat(daemon, image, "/d", "/d/f", "/d/l", "/d/tool", "/d/tool2")
    assert stat.S_IMODE(st["/d/f"].st_mode) == 0o600 and st["/d/f"].st_mtime_ns // 10**9 == 1_600_000_001
    assert st["/d/l"].st_mtime_ns // 10**9 == 1_600_000_002
    assert stat.S_IMODE(st["/d/tool"].st_mode) == 0o755 and st["/d/tool"].st_mtime_ns // 10**9 == 1_600_000_003
    assert stat.S_IMODE(st["/d/tool2"].st_mode) == 0o4755
    assert stat.S_IMODE(st["/d"].st_mode) == 0o711


def test_malformed_options_are_400_and_unsupported_ones_501_before_anything_runs(daemon, uniq):
    before = daemon.working_containers()
    src = llb.file([llb.mkfile("/f", uniq)])
    cases = [
        (llb.copy("/f", "/g", mode_str="u+q"), 400, 'modeStr "u+q" is not a chmod mode'),
        (llb.copy("/f[", "/g", allow_wildcard=True), 400, "malformed wildcard pattern"),
        (llb.copy("/f", "/g", include=["[z-a]"]), 400, "include patterns"),
        (llb.copy("/f", "/g", exclude=["a["]), 400, "exclude patterns"),
    ]
    for action, want, text in cases:
        f = llb.file([action], inputs=[src], secondary=0)
        st, msg = _refused(daemon, [src, f])
        assert st == want and text in msg and f.ref in msg, (st, msg)
    rm = llb.file([llb.rm("/x[", allow_wildcard=True)])
    st, msg = _refused(daemon, [rm])
    assert st == 400 and "malformed wildcard pattern" in msg and rm.ref in msg, msg
    assert daemon.working_containers() == before
