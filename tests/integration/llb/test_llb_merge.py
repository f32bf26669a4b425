"""LLB MergeOp and DiffOp with BuildKit's meaning (docs/merge+diff.md):
a merge stacks its inputs' filesystems like layers (later wins,
directories merge, deletions carried by a diff delete); a diff holds what
changed from lower to upper, and merged over another base it applies that
change there, deletions included."""

import io
import tarfile
from pathlib import Path

import podsolve_testlib as lib

import llbgen as llb  # noqa: E402
from llb_solve import solve_ok as _solve, final as _final, image as _image  # noqa: E402

BUSYBOX = "docker-image://" + lib.BASE_IMAGE


def _tar(daemon, ops, uniq, tag):
    """Solve with the tar exporter -> {path: TarInfo or bytes of a file}."""
    ref = f"llb-merge-{tag}-{uniq}"
    _solve(daemon, ops, exporters=[{"type": "tar"}], ref=ref)
    st, _, data = daemon.request("GET", f"/solve/{ref}/outputs/0")
    assert st == 200
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        for m in t.getmembers():
            name = m.name.lstrip("./").rstrip("/")
            if name:
                out[name] = t.extractfile(m).read() if m.isfile() else m
    return out


def test_merge_of_two_scratch_file_results_merges_directories_and_the_later_wins(daemon, uniq):
    a = llb.file([llb.mkdir("/dir", 0o755), llb.mkfile("/dir/a", b"a"), llb.mkfile("/dir/shared", b"from a"),
                  llb.mkfile("/replaced", b"a file in a")])
    b = llb.file([llb.mkdir("/dir", 0o700), llb.mkfile("/dir/b", b"b"), llb.mkfile("/dir/shared", b"from b"),
                  llb.mkdir("/otherdir"), llb.mkdir("/replaced"), llb.mkfile("/replaced/inner", uniq.encode())])
    m = llb.merge([a, b])
    files = _tar(daemon, [a, b, m], uniq, "scratch")
    assert files["dir/a"] == b"a" and files["dir/b"] == b"b"
    assert files["dir/shared"] == b"from b"
    assert files["dir"].mode & 0o7777 == 0o700  # the later directory's metadata
    assert files["otherdir"].isdir()
    assert files["replaced"].isdir() and files["replaced/inner"] == uniq.encode()  # a dir replaces a file


def test_merge_of_busybox_and_a_file_result_is_a_usable_rootfs(daemon, uniq):
    img = llb.source(BUSYBOX)
    f = llb.file([llb.mkdir("/etc/app", 0o750, parents=True), llb.mkfile("/etc/app/conf", uniq.encode(), 0o640),
                  llb.mkfile("/etc/group", b"app:x:1000:\n")])
    m = llb.merge([img, f])
    run = llb.exec_(["sh", "-c", "cat /etc/app/conf /etc/group > /seen; head -1 /etc/passwd >> /seen"], root=m)
    events = _solve(daemon, [img, f, m, run])
    image = _image(events)
    passwd_first = daemon.image_file(lib.BASE_IMAGE, "/etc/passwd").splitlines()[0]
    # /etc holds busybox's passwd and the file op's conf; its /etc/group won
    assert daemon.image_file(image, "/seen") == uniq.encode() + b"app:x:1000:\n" + passwd_first + b"\n"
    assert _final(events, m)["inputs"] == [img.ref, f.ref]


def _exec_changes(uniq):
    """busybox, and busybox after an exec adding, modifying and deleting."""
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"echo {uniq} > /added; echo extra >> /etc/passwd; rm /etc/group;"
                                 f" mkdir -p /opt/new && echo deep > /opt/new/f"], root=img)
    return img, run


def test_diff_of_busybox_and_an_exec_holds_only_the_changes(daemon, uniq):
    img, run = _exec_changes(uniq)
    d = llb.diff(img, run)
    files = _tar(daemon, [img, run, d], uniq, "diff")
    assert files["added"] == f"{uniq}\n".encode()
    assert files["etc/passwd"].endswith(b"extra\n")
    assert files["opt/new/f"] == b"deep\n"
    assert files["etc"].isdir() and files["opt/new"].isdir()  # the directories holding changes
    # unchanged files are not in the diff, the deleted one is simply absent
    for unchanged in ("bin/busybox", "bin/sh", "tmp", "root"):
        assert unchanged not in files, unchanged
    assert "etc/group" not in files


def test_merging_a_diff_over_another_base_applies_its_change_and_deletion(daemon, uniq):
    img, run = _exec_changes(uniq)
    d = llb.diff(img, run)
    base2 = llb.file([llb.mkfile("/base2-marker", b"base2"), llb.mkdir("/opt", 0o755)], inputs=[img], base=0)
    m = llb.merge([base2, d])
    image = _image(_solve(daemon, [img, run, d, base2, m]))
    assert daemon.image_file(image, "/base2-marker") == b"base2"
    assert daemon.image_file(image, "/added") == f"{uniq}\n".encode()
    assert daemon.image_file(image, "/opt/new/f") == b"deep\n"
    assert daemon.image_file(image, "/etc/passwd").endswith(b"extra\n")
    present = daemon.image_paths(image, "/etc/group", "/bin/busybox")
    assert present == {"/etc/group": False, "/bin/busybox": True}

    # the merge result carries the deletion on: merged again over busybox,
    # /etc/group goes there too (merge is associative)
    again = llb.merge([img, m])
    image2 = _image(_solve(daemon, [img, run, d, base2, m, again]))
    assert not daemon.image_has_file(image2, "/etc/group")

    # a later input that has the path again brings it back
    back = llb.merge([m, img])
    image3 = _image(_solve(daemon, [img, run, d, base2, m, back]))
    assert daemon.image_has_file(image3, "/etc/group")


def test_diff_with_scratch_lower_is_upper_and_with_scratch_upper_deletes_everything(daemon, uniq):
    f = llb.file([llb.mkdir("/app"), llb.mkfile("/app/main", uniq.encode()), llb.mkfile("/top", b"top")])
    d = llb.diff(None, f)
    files = _tar(daemon, [f, d], uniq, "scratch-lower")
    assert files["app/main"] == uniq.encode() and files["top"] == b"top"

    # Diff(f, scratch) deletes f's top-level entries: merged over a tree
    # that has some of them, only what f did not have survives
    other = llb.file([llb.mkdir("/app"), llb.mkfile("/app/other", b"o"), llb.mkfile("/keep", b"k")])
    wipe = llb.diff(f, None)
    m = llb.merge([other, wipe])
    files = _tar(daemon, [f, other, wipe, m], uniq, "scratch-upper")
    assert files["keep"] == b"k"
    assert "app" not in files and "app/other" not in files and "top" not in files


def test_identical_resubmission_of_merge_and_diff_is_all_cached(daemon, uniq):
    img, run = _exec_changes(uniq)
    d = llb.diff(img, run)
    base2 = llb.file([llb.mkfile("/base2-marker", b"base2")], inputs=[img], base=0)
    m = llb.merge([base2, d])
    ops = [img, run, d, base2, m]
    first = _solve(daemon, ops)
    second = _solve(daemon, ops)
    assert _image(first) == _image(second)
    for op in ops:
        assert _final(second, op).get("cached") is True, op
    assert not daemon.image_has_file(_image(second), "/etc/group")


def test_merge_replaces_a_symlink_by_the_later_directory_never_writing_through_it(daemon, uniq):
    """An earlier input's /escape -> /tmp (host /tmp if it were followed) is
    replaced by the later input's directory /escape; nothing lands on the
    host."""
    host = Path(f"/tmp/llb-merge-escape-{uniq}")
    a = llb.file([llb.symlink("/tmp", "/escape"), llb.symlink("../../../../../../tmp", "/up")])
    b = llb.file([llb.mkdir("/escape"), llb.mkfile(f"/escape/{host.name}", b"x"),
                  llb.mkdir("/up"), llb.mkfile(f"/up/{host.name}", b"y")])
    m = llb.merge([a, b])
    files = _tar(daemon, [a, b, m], uniq, "escape")
    assert files["escape"].isdir() and files[f"escape/{host.name}"] == b"x"
    assert files["up"].isdir() and files[f"up/{host.name}"] == b"y"
    assert not host.exists()
