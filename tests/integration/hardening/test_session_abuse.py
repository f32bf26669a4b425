"""BuildKit-mode builds against a session peer that misbehaves.

The docker CLI's side of `POST /session` is played by session_peer.SessionPeer
(an h2 server answering the daemon's FileSync/DiffCopy calls as the fsutil
sender, buildkit-protocols.md §2.3, §3.5).  For each way a client can break
the transfer we check what a user and an operator would see:

* the /build stream ends with an errorDetail line that names the problem;
* nothing half-written stays behind: no `.podsolve-diffcopy-*` temporary in
  the context caches under <state-dir>/contexts, no file there whose content
  is only part of what the peer sent, nothing written outside the cache;
* no working container remains;
* the very next build through a well-behaved peer succeeds and its image
  holds every byte that peer sent -- run as the user's retry from the same
  directory (same X-Docker-Expose-Session-Sharedkey, so into the same,
  possibly half-synced, context cache).

Plus the happy path: the image content is what the peer sent, and a second
build whose context changed in one file of 50 makes the daemon REQ exactly
that one file (the cache keyed by the shared key); a symlink in the cache is
replaced, never written through, when the next listing makes it a directory.

Three tests pin daemon bugs this suite found, now fixed:
the whole-build result cache matching on metadata across clients,
--max-context-bytes not applied to session transfers, and the misleading
error for a build naming a session that already died.
"""

import hashlib
import os
import re
import secrets
import time
from pathlib import Path

import pytest

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, COMPAT_BUILD, containerfile, wait_for
from session_peer import SessionPeer, Symlink, file_spec

TMP_PREFIX = ".podsolve-diffcopy-"   # session/diffcopy.c DC_TMP_PREFIX


# --------------------------------------------------------------------------
# helpers


image_ref = lib.image_ref


def both(files):
    """The docker CLI exposes the same directory as "context" and "dockerfile"."""
    return {"context": files, "dockerfile": files}


def v2_params(peer, tag, **extra):
    params = {"version": "2", "remote": "client-session", "session": peer.uuid, "dockerfile": "Dockerfile",
              "t": tag, "buildid": secrets.token_hex(32)}
    params.update(extra)
    return params


V2_HEADERS = {"Content-Type": "application/x-tar", "X-Registry-Config": "bnVsbA=="}


def v2_build(daemon, peer, tag, timeout=60):
    """POST /v1.41/build?version=2&remote=client-session... (empty body),
    streamed to the end -> BuildResult."""
    return daemon.build(body=b"", params=v2_params(peer, tag), headers=V2_HEADERS, timeout=timeout)


def explain(daemon, peer, r=None):
    text = ""
    if r is not None:
        text += r.describe() + "\n"
    text += f"--- peer trace:\n{peer.trace()}\n--- peer calls: {peer.calls}\n"
    text += f"--- podsolved log tail:\n{daemon.log_tail(4000)}"
    return text


def cache_dir(daemon, peer, dir_name, variant):
    """solver/session_io.c session_cache_dir(): <state>/contexts/<sha256(key\\ndir\\nvariant)[:32]>."""
    material = f"{peer.shared_key}\n{dir_name}\n{variant}".encode()
    return daemon.state / "contexts" / hashlib.sha256(material).hexdigest()[:32]


def peer_cache_dirs(daemon, peer):
    return {
        "dockerfile": (cache_dir(daemon, peer, "dockerfile", "followpaths:Dockerfile"), peer.dirs["dockerfile"]),
        "dockerignore": (cache_dir(daemon, peer, "context", "followpaths:.dockerignore"), peer.dirs["context"]),
        "context": (cache_dir(daemon, peer, "context", "context"), peer.dirs["context"]),
    }


def temporaries(daemon):
    """Every temporary-looking name under the context caches."""
    found = []
    root = daemon.state / "contexts"
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            if n.startswith(TMP_PREFIX) or n.endswith(".tmp") or n.endswith(".partial"):
                found.append(os.path.join(dirpath, n))
    return found


def partial_files(daemon, peer):
    """Files in this peer's caches that are not exactly what the peer sent
    (a final name must only ever show a complete file)."""
    bad = []
    for kind, (d, files) in peer_cache_dirs(daemon, peer).items():
        if not d.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(d):
            for n in dirnames + filenames:
                p = Path(dirpath) / n
                rel = str(p.relative_to(d))
                spec = files.get(rel)
                if p.is_symlink():
                    if not isinstance(spec, Symlink) or os.readlink(p) != spec.target:
                        bad.append(f"{kind}:{rel}: unexpected symlink to {os.readlink(p)}")
                    continue
                if n in dirnames:
                    continue
                if spec is None or isinstance(spec, Symlink):
                    bad.append(f"{kind}:{rel}: not something the peer sent")
                    continue
                want = file_spec(spec)[0]
                got = p.read_bytes()
                if got != want:
                    bad.append(f"{kind}:{rel}: {len(got)} bytes, the peer sent {len(want)}")
    return bad


def evil_outside(daemon):
    """Files a path-escape would have created."""
    candidates = [Path("/etc/evil"), daemon.state / "evil", daemon.state / "contexts" / "evil", daemon.tmp / "evil"]
    return [str(p) for p in candidates if os.path.lexists(p)]


def error_message(r):
    e = r.error
    if e is None:
        return None
    return (e.get("errorDetail") or {}).get("message") or e.get("error")


def abuse_context(uniq):
    """Dockerfile, a subdirectory and a file big enough to be sent in chunks."""
    big = (f"big-{uniq}-".encode() * 20000)[:300 * 1024]
    return {
        "Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY . /ctx/"),
        "a.txt": f"a {uniq}\n",
        "sub/big.bin": big,
        "sub/c.txt": "c\n",
    }


def image_files(daemon, image, paths):
    """{path: bytes} for several files of an image, with one mount."""
    def read(mnt):
        out = {}
        for p in paths:
            f = mnt / p.lstrip("/")
            out[p] = None if f.is_symlink() or not f.is_file() else f.read_bytes()
        return out
    return daemon._with_mounted(image, read)


def retry_build(daemon, failed, label, uniq):
    """The user runs the build again from the same directory: a well-behaved
    peer with the failed one's shared key (so the same, possibly half-synced,
    context cache), files and mtimes.  It must succeed and the image must
    hold every byte.  Returns the new peer (closed)."""
    files = failed.dirs["context"]
    tag = f"abuse-retry-{label}-{uniq}"
    with SessionPeer(daemon.sock, failed.dirs, shared_key=failed.shared_key, mtime_ns=failed.mtime_ns) as peer:
        r = v2_build(daemon, peer, tag)
        assert r.status == 200 and r.error is None, explain(daemon, peer, r)
        assert r.aux_ids, explain(daemon, peer, r)
    got = image_files(daemon, image_ref(tag), [f"/ctx/{p}" for p in files])
    want = {f"/ctx/{p}": file_spec(spec)[0] for p, spec in files.items()}
    assert got == want, {k: (len(v) if v is not None else None, len(want[k])) for k, v in got.items()}
    return peer


def assert_clean(daemon, peer):
    assert temporaries(daemon) == [], explain(daemon, peer)
    assert partial_files(daemon, peer) == [], explain(daemon, peer)
    assert evil_outside(daemon) == [], explain(daemon, peer)
    assert wait_for(lambda: daemon.working_containers() == [], 5), daemon.working_containers()


# --------------------------------------------------------------------------
# happy path


def test_peer_build_image_has_what_the_peer_sent(daemon, uniq):
    files = {
        "Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY . /ctx/", "RUN cat /ctx/dir/nested/n.txt"),
        "top.txt": f"top {uniq}\n",
        "run.sh": ("#!/bin/sh\necho hi\n", 0o755),
        "dir/nested/n.txt": f"nested {uniq}\n",
        "dir/bin.dat": bytes(range(256)) * 300,   # 75 KiB: several 32 KiB DATA chunks
    }
    tag = f"abuse-happy-{uniq}"
    with SessionPeer(daemon.sock, both(files)) as peer:
        r = v2_build(daemon, peer, tag)
        assert r.status == 200 and r.error is None, explain(daemon, peer, r)
        kinds = [c.kind for c in peer.transfers()]
        assert kinds == ["dockerfile", "dockerignore", "context"], explain(daemon, peer, r)
        for c in peer.transfers():
            assert c.fin_from_daemon and c.err_from_daemon is None and c.reset_by_daemon is None, c
            # every REQ names a regular file of the listing, once
            assert len(c.reqs) == len(set(c.reqs)) and set(c.reqs) <= set(c.files), c
        ctx = peer.transfers("context")[0]
        assert sorted(ctx.files[i].path for i in ctx.reqs) == sorted(files), ctx
        assert peer.error is None, explain(daemon, peer, r)
    img = image_ref(tag)
    for path, spec in files.items():
        want = file_spec(spec)[0]
        assert daemon.image_file(img, f"/ctx/{path}") == want, path
    modes = daemon._with_mounted(img, lambda m: {p: os.stat(m / "ctx" / p).st_mode & 0o7777
                                                 for p in ("run.sh", "top.txt")})
    assert modes == {"run.sh": 0o755, "top.txt": 0o644}, modes
    assert_clean(daemon, peer)


def test_second_build_requests_only_the_changed_file(daemon, uniq):
    """Same X-Docker-Expose-Session-Sharedkey, new session: the daemon syncs
    into the cache of the first build and asks for the one file whose size
    and mtime changed (§3.5 "change detection")."""
    key = "incr" + secrets.token_hex(12)
    mtime = time.time_ns() - 3600 * 10**9
    files = {f"f{i:02d}.txt": f"file {i} {uniq}\n" for i in range(50)}
    files["Dockerfile"] = containerfile(f"FROM {BASE_IMAGE}", "COPY . /ctx/")
    tag = f"abuse-incr-{uniq}"

    with SessionPeer(daemon.sock, both(files), shared_key=key, mtime_ns=mtime) as peer:
        r = v2_build(daemon, peer, tag)
        assert r.status == 200 and r.error is None, explain(daemon, peer, r)
        first = peer.transfers("context")[0]
        assert sorted(first.files[i].path for i in first.reqs) == sorted(files), explain(daemon, peer, r)

    changed = dict(files)
    changed["f17.txt"] = (f"changed {uniq}, and longer than before\n", 0o644, mtime + 10**9)
    with SessionPeer(daemon.sock, both(changed), shared_key=key, mtime_ns=mtime) as peer2:
        r = v2_build(daemon, peer2, tag)
        assert r.status == 200 and r.error is None, explain(daemon, peer2, r)
        ctx = peer2.transfers("context")[0]
        assert len(ctx.files) == 51, ctx
        assert [ctx.files[i].path for i in ctx.reqs] == ["f17.txt"], explain(daemon, peer2, r)
        assert ctx.fin_from_daemon and ctx.err_from_daemon is None, ctx
    assert daemon.image_file(image_ref(tag), "/ctx/f17.txt") == file_spec(changed["f17.txt"])[0]
    assert daemon.image_file(image_ref(tag), "/ctx/f03.txt") == files["f03.txt"].encode()
    assert_clean(daemon, peer2)


def test_two_clients_with_same_metadata_different_content_get_their_own_image(daemon, uniq):
    """Two unrelated clients (different shared keys, so different context
    caches: each transfer is a full one) send the same Dockerfile and a
    file with the same name, size and mtime but other bytes — as happens
    with reproducible-build trees (SOURCE_DATE_EPOCH, mtime 0/1) or two
    checkouts unpacked from archives.  Each image must hold its own bytes."""
    mtime = 315532800 * 10**9   # 1980-01-01, a typical normalised mtime
    df = containerfile(f"FROM {BASE_IMAGE}", "COPY config.txt /config.txt")
    images = {}
    for who in ("alice", "bobby"):          # same length on purpose
        files = {"Dockerfile": (df, 0o644, mtime), "config.txt": (f"owner={who} {uniq}\n", 0o644, mtime)}
        tag = f"abuse-same-meta-{who}-{uniq}"
        with SessionPeer(daemon.sock, both(files), mtime_ns=mtime) as peer:
            r = v2_build(daemon, peer, tag)
            assert r.status == 200 and r.error is None, explain(daemon, peer, r)
            # the daemon did receive this client's bytes
            ctx = peer.transfers("context")[0]
            assert "config.txt" in [ctx.files[i].path for i in ctx.reqs], ctx
        images[who] = daemon.image_file(image_ref(tag), "/config.txt")
    assert images == {"alice": f"owner=alice {uniq}\n".encode(), "bobby": f"owner=bobby {uniq}\n".encode()}


def test_symlink_replaced_by_a_directory_is_never_written_through(daemon, uniq):
    """Build 1 syncs "sub" as a symlink to a host directory into the context
    cache; build 2 (same shared key) lists "sub" as a directory with a file
    in it.  The daemon must replace the symlink, not write through it (nor
    empty the directory it points to)."""
    victim = daemon.tmp / f"victim-{uniq}"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep\n")
    key = "swap" + secrets.token_hex(12)
    df = containerfile(f"FROM {BASE_IMAGE}", "COPY Dockerfile /Dockerfile")
    first = {"Dockerfile": df, "sub": Symlink(str(victim))}
    with SessionPeer(daemon.sock, both(first), shared_key=key) as peer:
        r = v2_build(daemon, peer, f"abuse-swap1-{uniq}")
        assert r.status == 200 and r.error is None, explain(daemon, peer, r)
    link = cache_dir(daemon, peer, "context", "context") / "sub"
    assert link.is_symlink() and os.readlink(link) == str(victim)

    second = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY sub/evil.txt /evil.txt"),
              "sub/evil.txt": f"evil {uniq}\n"}
    tag = f"abuse-swap2-{uniq}"
    with SessionPeer(daemon.sock, both(second), shared_key=key) as peer2:
        r = v2_build(daemon, peer2, tag)
        assert r.status == 200 and r.error is None, explain(daemon, peer2, r)
    assert sorted(os.listdir(victim)) == ["keep.txt"]
    assert (victim / "keep.txt").read_text() == "keep\n"
    assert not link.is_symlink() and link.is_dir()
    assert daemon.image_file(image_ref(tag), "/evil.txt") == f"evil {uniq}\n".encode()
    assert_clean(daemon, peer2)


# --------------------------------------------------------------------------
# misbehaving peers


ABUSES = [
    # mode, pattern the errorDetail message must match
    ("bad_path", r'path "\.\./evil" (escapes|is invalid)'),
    ("abs_path", r'absolute path "/etc/evil"'),
    ("symlink_parent", r'"zlink/evil" arrived without its parent directory'),
    ("unrequested_data", r"invalid file request \d+"),
    ("close_mid_file", r"connection (closed|lost|reset)"),
    ("err_packet", r"error from sender: boom"),
    # the session is dropped right after the 101
    ("garbage", r"session"),
    ("garbage_mid", r"(HTTP/2|protocol error)"),
    # a client over its own stream limit refuses the call (RST_STREAM REFUSED_STREAM)
    ("refuse_stream", r"UNAVAILABLE\): the client refused the stream"),
]


@pytest.mark.parametrize("mode,pattern", ABUSES, ids=[a[0] for a in ABUSES])
def test_misbehaving_peer_fails_the_build_cleanly(daemon, uniq, mode, pattern):
    files = abuse_context(uniq)
    label = mode.replace("_", "-")
    tag = f"abuse-{label}-{uniq}"
    peer = SessionPeer(daemon.sock, both(files), mode=mode)
    peer.start()
    try:
        started = time.monotonic()
        r = v2_build(daemon, peer, tag, timeout=40)
        took = time.monotonic() - started
        assert r.error is not None, explain(daemon, peer, r)
        msg = error_message(r)
        assert msg and re.search(pattern, msg), f"error {msg!r} does not match {pattern!r}\n" + explain(daemon, peer, r)
        assert took < lib.scaled(20), f"the failure took {took:.1f}s\n" + explain(daemon, peer, r)
        if mode != "garbage":
            t = peer.target_call()
            assert t is not None and t.misbehaved, explain(daemon, peer, r)
        if mode in ("bad_path", "abs_path", "symlink_parent", "unrequested_data"):
            # §3.5 step 7: the daemon tells the sender why (ERR) and/or cancels the call
            t = peer.target_call()
            assert wait_for(lambda: t.err_from_daemon is not None or t.reset_by_daemon is not None, 5), \
                explain(daemon, peer, r)
        assert not daemon.image_exists(image_ref(tag))
    finally:
        peer.close()
    assert_clean(daemon, peer)
    again = retry_build(daemon, peer, label, uniq)
    if mode in ("unrequested_data", "close_mid_file", "err_packet"):
        # the half-received file was dropped, so it is asked for again
        ctx = again.transfers("context")[0]
        assert "sub/big.bin" in [ctx.files[i].path for i in ctx.reqs], ctx
    assert_clean(daemon, again)


def test_build_naming_a_session_that_died_says_so(daemon, uniq):
    peer = SessionPeer(daemon.sock, both(abuse_context(uniq)), mode="garbage")
    peer.start()
    try:
        assert peer.eof.wait(lib.scaled(5)), explain(daemon, peer)   # the daemon dropped the session
        started = time.monotonic()
        r = v2_build(daemon, peer, f"abuse-dead-{uniq}", timeout=30)
        took = time.monotonic() - started
        msg = error_message(r)
        assert msg and "must open POST /session" not in msg and re.search(r"ended|closed|protocol", msg), \
            explain(daemon, peer, r)
        assert took < lib.scaled(4), f"{took:.1f}s to report a session the daemon knows is gone"
    finally:
        peer.close()


def test_stalled_transfer_holds_a_temporary_that_cancel_removes(daemon, uniq):
    """Half a file, then silence: the daemon is writing the file to a
    temporary in the context cache (the leak check above is not vacuous).
    The client drops /build: the transfer is cancelled, the temporary goes."""
    files = abuse_context(uniq)
    tag = f"abuse-stall-{uniq}"
    peer = SessionPeer(daemon.sock, both(files), mode="stall_mid_file")
    peer.start()
    try:
        status, _, it = daemon.stream("POST", lib.with_query(COMPAT_BUILD, v2_params(peer, tag)), b"",
                                      V2_HEADERS, timeout=30)
        assert status == 200, explain(daemon, peer)
        assert wait_for(lambda: peer.target_call() is not None and peer.target_call().misbehaved, 10), \
            explain(daemon, peer)
        ctx_cache = peer_cache_dirs(daemon, peer)["context"][0]
        assert wait_for(lambda: any(t.startswith(str(ctx_cache) + "/") for t in temporaries(daemon)), 5), \
            f"no temporary under {ctx_cache}: {temporaries(daemon)}\n" + explain(daemon, peer)
        assert not peer.target_over.is_set(), explain(daemon, peer)
        it.close()   # the client goes away
        assert peer.target_over.wait(lib.scaled(10)), "the daemon did not cancel the transfer\n" + explain(daemon, peer)
        assert wait_for(lambda: temporaries(daemon) == [], 5), temporaries(daemon)
    finally:
        peer.close()
    assert_clean(daemon, peer)
    retry_build(daemon, peer, "stall", uniq)


def test_peer_that_never_answers_is_cancelled_when_the_client_goes(daemon, uniq):
    """DiffCopy call accepted, headers sent, then silence.  The client drops
    /build after a few seconds: the daemon cancels the transfer (ERR and/or
    RST_STREAM on the call) at once, leaves no container, and serves the
    next build."""
    files = abuse_context(uniq)
    tag = f"abuse-silent-{uniq}"
    peer = SessionPeer(daemon.sock, both(files), mode="never_answer")
    peer.start()
    try:
        status, _, it = daemon.stream("POST", lib.with_query(COMPAT_BUILD, v2_params(peer, tag)), b"",
                                      V2_HEADERS, timeout=30)
        assert status == 200, explain(daemon, peer)
        assert peer.target_seen.wait(lib.scaled(10)), explain(daemon, peer)
        time.sleep(2)
        t = peer.target_call()
        assert not peer.target_over.is_set(), "the daemon gave up on a silent peer within 2 s?\n" + explain(daemon, peer)
        it.close()   # the client goes away
        gone = time.monotonic()
        assert peer.target_over.wait(lib.scaled(10)), "the daemon did not cancel the transfer\n" + explain(daemon, peer)
        assert t.err_from_daemon is not None or t.reset_by_daemon is not None, explain(daemon, peer)
        assert time.monotonic() - gone < lib.scaled(5), explain(daemon, peer)
        assert wait_for(lambda: re.search(r"job \S+: cancelling: the client disconnected", daemon.log_tail(20000)),
                        10), explain(daemon, peer)
        assert not daemon.image_exists(image_ref(tag))
    finally:
        peer.close()
    assert_clean(daemon, peer)
    retry_build(daemon, peer, "silent", uniq)


def test_peer_that_never_answers_then_build_cancel(daemon, uniq):
    """Same silent peer, but the client asks POST /build/cancel?id=: the
    stream ends with an error line saying the build was cancelled."""
    files = abuse_context(uniq)
    tag = f"abuse-cancel-{uniq}"
    peer = SessionPeer(daemon.sock, both(files), mode="never_answer")
    peer.start()
    try:
        params = v2_params(peer, tag)
        status, _, it = daemon.stream("POST", lib.with_query(COMPAT_BUILD, params), b"", V2_HEADERS, timeout=30)
        assert status == 200, explain(daemon, peer)
        assert peer.target_seen.wait(lib.scaled(10)), explain(daemon, peer)
        time.sleep(1)
        cst, _, cbody = daemon.request("POST", f"/v1.41/build/cancel?id={params['buildid']}", timeout=10)
        assert cst == 200, (cst, cbody)
        events = []
        try:
            for ev in it:
                events.append(ev)
        finally:
            it.close()
        r = lib.BuildResult(200, {}, events, it.raw)
        msg = error_message(r)
        assert msg and "cancel" in msg, explain(daemon, peer, r)
        t = peer.target_call()
        assert wait_for(lambda: t.err_from_daemon is not None or t.reset_by_daemon is not None, 5), \
            explain(daemon, peer, r)
        assert not daemon.image_exists(image_ref(tag))
    finally:
        peer.close()
    assert_clean(daemon, peer)


def test_max_context_bytes_applies_to_session_transfers(spawn_daemon, uniq):
    """podsolved --max-context-bytes 1048576: a 2 MiB context over the
    session is refused like a 2 MiB tar upload is (413 there)."""
    d = spawn_daemon("--max-context-bytes", "1048576")
    files = {"Dockerfile": containerfile(f"FROM {BASE_IMAGE}", "COPY big.bin /big.bin"),
             "big.bin": os.urandom(2 * 1024 * 1024)}
    with SessionPeer(d.sock, both(files)) as peer:
        r = v2_build(d, peer, f"abuse-big-{uniq}")
        msg = error_message(r)
        assert msg and re.search(r"larger than|exceeds|max-context-bytes", msg), explain(d, peer, r)
        assert not d.image_exists(image_ref(f"abuse-big-{uniq}"))
        assert temporaries(d) == []
