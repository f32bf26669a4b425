"""LLB definitions sent to POST /solve run on buildah: sources, exec and
file ops become committed images vertex by vertex, reported in the NDJSON
stream, cached by content, and exported like a Dockerfile build's image.
What the executor cannot run yet is a 501 naming the op before anything
runs."""

import io
import json
import tarfile
from pathlib import Path

import podsolve_testlib as lib

import llbgen as llb  # noqa: E402
from llb_solve import errors as _errors, image as _image, logs as _logs, solve as _solve, vertexes as _vertexes  # noqa: E402,E501
from session_peer import SessionPeer  # noqa: E402

BUSYBOX = "docker-image://" + lib.BASE_IMAGE






def _final(vertexes, op):
    """The last state the stream reported for op's vertex."""
    return vertexes[op.ref][-1]




def _result(events):
    res = [e["result"] for e in events if "result" in e]
    errs = [e["error"] for e in events if "error" in e]
    assert res and not errs, events[-5:]
    return res[-1]["exporterResponse"]


def _image_id(resp):
    return resp["containerimage.config.digest"].split(":", 1)[1]


def test_scratch_file_op_mkdir_mkfile_exports_the_file_as_tar(daemon, uniq):
    f = llb.file([llb.mkdir("/etc/app", 0o750, parents=True),
                  llb.mkfile("/etc/app/conf", b"key=value\n", 0o640)])
    ref = f"llb-tar-{uniq}"
    status, events = _solve(daemon, [f], names={f: "write conf"}, exporters=[{"type": "tar"}], ref=ref)
    assert status == 200
    _result(events)
    v = _final(_vertexes(events), f)
    assert v["name"] == "write conf" and v.get("completed") and not v.get("error")
    st, _, data = daemon.request("GET", f"/solve/{ref}/outputs/0")
    assert st == 200
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        conf = t.getmember("etc/app/conf")
        assert t.extractfile(conf).read() == b"key=value\n"
        assert conf.mode & 0o7777 == 0o640
        assert t.getmember("etc/app").mode & 0o7777 == 0o750


def test_exec_on_busybox_writes_a_file_into_the_image_and_streams_its_stdout(daemon, uniq):
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", "echo hi > /out; echo from-stdout; echo from-stderr >&2"], root=img)
    name = f"localhost/llb-exec-{uniq}:latest"
    status, events = _solve(daemon, [img, run], names={run: "run echo"},
                            exporters=[{"type": "image", "attrs": {"name": name}}])
    assert status == 200
    resp = _result(events)
    assert resp["image.name"] == name
    assert daemon.image_id(name) == _image_id(resp)
    assert daemon.image_file(name, "/out") == b"hi\n"
    vs = _vertexes(events)
    assert vs[run.ref][-1]["inputs"] == [img.ref]
    logs = _logs(events, run)
    assert b"from-stdout" in logs and b"from-stderr" in logs
    streams = {l["stream"] for e in events for l in e.get("status", {}).get("logs", []) if l["vertex"] == run.ref}
    assert streams == {1, 2}


def test_failing_exec_names_the_vertex_and_exit_code_and_leaves_no_container(daemon, uniq):
    before = daemon.working_containers()
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"echo {uniq}; exit 3"], root=img)
    status, events = _solve(daemon, [img, run], names={run: "run fails"})
    assert status == 200
    errs = [e["error"] for e in events if "error" in e]
    assert len(errs) == 1, events
    assert errs[0]["vertex"] == run.ref and errs[0]["exitCode"] == 3
    assert "run fails" in errs[0]["message"] and "exit code: 3" in errs[0]["message"]
    assert _final(_vertexes(events), run).get("error")
    assert daemon.working_containers() == before


def test_exit_code_listed_in_valid_exit_codes_succeeds(daemon, uniq):
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"echo {uniq} > /v; exit 3"], root=img, valid_exit_codes=(0, 3))
    status, events = _solve(daemon, [img, run])
    assert status == 200
    assert daemon.image_file(_image_id(_result(events)), "/v") == f"{uniq}\n".encode()


def test_identical_resubmission_is_all_cached_with_the_same_image(daemon, uniq):
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"echo {uniq} > /once"], root=img)
    f = llb.file([llb.mkfile("/second", b"2")], inputs=[run], base=0)
    first = _solve(daemon, [img, run, f])
    second = _solve(daemon, [img, run, f])
    assert first[0] == second[0] == 200
    assert _image_id(_result(first[1])) == _image_id(_result(second[1]))
    vs = _vertexes(second[1])
    for op in (img, run, f):
        assert _final(vs, op).get("cached") is True, vs[op.ref]
    assert not _logs(second[1], run)
    # no-cache runs everything again
    third = _solve(daemon, [img, run, f], attrs={"no-cache": ""})
    assert not _final(_vertexes(third[1]), run).get("cached")
    assert _image_id(_result(third[1])) != _image_id(_result(first[1]))


def test_a_cached_result_whose_image_was_removed_runs_again(daemon, uniq):
    """A vertex's record counts only while its image is in storage (the
    store's image list, read again when it changes): after `buildah rmi`
    of the exec's image, the next solve runs the exec again and the file
    op after it too, both correct."""
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"echo {uniq} > /once"], root=img)
    f = llb.file([llb.mkfile("/second", b"2")], inputs=[run], base=0)
    first = _solve(daemon, [img, run, f])
    final = _image_id(_result(first[1]))
    again = _solve(daemon, [img, run, f])
    assert all(_final(_vertexes(again[1]), op).get("cached") is True for op in (img, run, f))
    daemon.buildah("rmi", "-f", final)
    parent = daemon.buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", final, check=False)
    assert parent.returncode != 0, "the final image is gone"
    third = _solve(daemon, [img, run, f])
    vs = _vertexes(third[1])
    assert _final(vs, img).get("cached") is True
    assert not _final(vs, f).get("cached"), vs[f.ref]
    out = _image_id(_result(third[1]))
    assert daemon.image_file(out, "/once") == f"{uniq}\n".encode()
    assert daemon.image_file(out, "/second") == b"2"


def test_same_local_content_from_another_session_keeps_the_copy_cached(daemon, uniq):
    """The local source names a different session each time (as a gateway
    frontend run through /solve does: a new stand-in session id per build)
    but carries the same files: the source and the copy built on it are
    cached, the image is the same.  Before cache keys left local.session
    out, every such COPY ran again."""
    img = llb.source(BUSYBOX)
    ctx = lib.tar_context({"app.txt": f"same {uniq}\n"})   # one tar: same bytes, same mtimes

    def solve(session):
        src = llb.source("local://ctx", {"local.session": session, "local.sharedkeyhint": "ctx"})
        cp = llb.file([llb.copy("/app.txt", "/srv/app.txt", create_dest_path=True)], inputs=[img, src],
                      base=0, secondary=1)
        status, events = _solve(daemon, [img, src, cp], sources={"ctx": ctx})
        assert status == 200, events
        return _image_id(_result(events)), _vertexes(events), src, cp

    image1, _, _, _ = solve(f"session-a-{uniq}")
    assert daemon.image_file(image1, "/srv/app.txt") == f"same {uniq}\n".encode()
    image2, vs, src, cp = solve(f"session-b-{uniq}")
    assert _final(vs, src).get("cached") is True, vs[src.ref]
    assert _final(vs, cp).get("cached") is True, vs[cp.ref]
    assert image2 == image1


def test_local_source_copied_into_busybox_and_only_downstream_reruns_on_change(daemon, uniq):
    img = llb.source(BUSYBOX)
    src = llb.source("local://ctx")
    marker = llb.exec_(["sh", "-c", f"echo {uniq} > /marker"], root=img)
    cp = llb.file([llb.copy("/app.txt", "/srv/app.txt", create_dest_path=True)], inputs=[marker, src],
                  base=0, secondary=1)
    ops = [img, src, marker, cp]

    def solve(content):
        ctx = lib.tar_context({"app.txt": content})
        status, events = _solve(daemon, ops, sources={"ctx": ctx})
        assert status == 200
        return _image_id(_result(events)), _vertexes(events)

    image1, _ = solve("one\n")
    assert daemon.image_file(image1, "/srv/app.txt") == b"one\n"
    assert daemon.image_file(image1, "/marker") == f"{uniq}\n".encode()
    image2, vs = solve("two\n")
    assert daemon.image_file(image2, "/srv/app.txt") == b"two\n"
    assert _final(vs, marker).get("cached") is True  # does not depend on the part
    assert not _final(vs, src).get("cached") and not _final(vs, cp).get("cached")


def test_cache_mount_contents_survive_between_solves(daemon, uniq):
    img = llb.source(BUSYBOX)
    cache = llb.mount(-1, "/cache", type=llb.CACHE, cache_id=f"llb-test-{uniq}")
    write = llb.exec_(["sh", "-c", f"echo {uniq} > /cache/seen"], root=img, mounts=[cache])
    status, events = _solve(daemon, [img, write])
    assert status == 200
    _result(events)
    read = llb.exec_(["sh", "-c", "cp /cache/seen /copied"], root=img, mounts=[cache])
    status, events = _solve(daemon, [img, read])
    assert status == 200
    resp = _result(events)
    assert daemon.image_file(_image_id(resp), "/copied") == f"{uniq}\n".encode()
    assert not daemon.image_has_file(_image_id(resp), "/cache/seen")


def test_ssh_mount_forwards_the_sessions_agent_at_dest_with_its_owner_and_mode(daemon, ssh_agent, tmp_path, uniq):
    """An exec with an ssh mount at /run/agent.sock (SSHOpt id "mykey", uid
    1000, gid 1001, mode 0640) and a session forwarding "mykey" to a real
    ssh-agent: the command finds a socket with that owner and mode at dest
    and lists the agent's key through it (SSH.ForwardAgent with
    buildkit.ssh.id "mykey"); an optional ssh mount of an id the session
    lacks is skipped."""
    probe = lib.agent_probe(tmp_path / "agent-probe").read_bytes()
    img = llb.source(BUSYBOX)
    with_probe = llb.file([llb.mkfile("/agent-probe", probe, 0o755)], inputs=[img], base=0)
    run = llb.exec_(["sh", "-c", "stat -c '%a %u %g %F' /run/agent.sock > /meta; "
                                 "/agent-probe /run/agent.sock > /keys; "
                                 f"test -S /run/other.sock || echo skipped-{uniq} > /optional"],
                    root=with_probe,
                    mounts=[llb.mount(-1, "/run/agent.sock", type=llb.SSH, ssh="mykey", ssh_uid=1000, ssh_gid=1001,
                                      ssh_mode=0o640),
                            llb.mount(-1, "/run/other.sock", type=llb.SSH, ssh="other", optional=True)])
    before = daemon.working_containers()
    with SessionPeer(daemon.sock, {}, ssh_agents={"mykey": ssh_agent.sock}) as peer:
        status, events = _solve(daemon, [img, with_probe, run], session=peer.uuid)
        assert status == 200, events
        image = _image(events)
        assert sorted(peer.ssh_checks) == ["mykey", "other"], peer.ssh_checks
        assert peer.ssh_forwards == ["mykey"], peer.log
    assert daemon.image_file(image, "/meta") == b"640 1000 1001 socket\n"
    assert daemon.image_file(image, "/keys") == f"key: {ssh_agent.comment}\nkeys: 1\n".encode()
    assert daemon.image_file(image, "/optional") == f"skipped-{uniq}\n".encode()
    assert daemon.working_containers() == before


def test_ssh_mount_of_an_id_the_client_lacks_fails_naming_it(daemon, uniq):
    """A required ssh mount whose id the session does not forward: the
    exec's vertex fails with BuildKit's 'no SSH key "deploy" forwarded from
    the client' and nothing is left; without a session at all the solve is
    refused (400) before anything runs."""
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"echo {uniq}"], root=img,
                    mounts=[llb.mount(-1, "/run/ssh", type=llb.SSH, ssh="deploy")])
    before = daemon.working_containers()
    with SessionPeer(daemon.sock, {}, ssh_agents={}) as peer:
        status, events = _solve(daemon, [img, run], session=peer.uuid)
        errs = _errors(events)
        assert errs and 'no SSH key "deploy" forwarded from the client' in errs[0]["message"], events[-3:]
        assert errs[0]["vertex"] == run.ref
        assert peer.ssh_forwards == []
    assert daemon.working_containers() == before
    req = {"definition": llb.definition_json([img, run])}
    st, _, body = daemon.request("POST", "/solve", json.dumps(req).encode(), {"Content-Type": "application/json"})
    assert st == 400, body
    msg = json.loads(body)["message"]
    assert run.ref in msg and 'ssh mount /run/ssh: no SSH key "deploy" forwarded from the client' in msg, msg
    assert daemon.working_containers() == before


def test_file_op_paths_cannot_escape_the_rootfs_through_symlinks(daemon, uniq):
    """A symlink /escape -> /../../../.. made by the op resolves to the
    rootfs root, never the host's: writes through it land in the image."""
    link = llb.symlink("/../../../../..", "/escape")
    f = llb.file([llb.mkdir("/d"), link, llb.mkfile(f"/escape/tmp/llb-escape-{uniq}", b"x", 0o644)])
    img = llb.source(BUSYBOX)
    # the mkfile's parent /escape/tmp resolves to <rootfs>/tmp, which scratch lacks
    status, events = _solve(daemon, [f])
    assert status == 200
    assert any("error" in e for e in events)
    assert not Path(f"/tmp/llb-escape-{uniq}").exists()
    g = llb.file([link, llb.mkfile(f"/escape/tmp/llb-escape-{uniq}", b"x", 0o644)], inputs=[img], base=0)
    status, events = _solve(daemon, [img, g])
    assert status == 200
    image = _image_id(_result(events))
    assert not Path(f"/tmp/llb-escape-{uniq}").exists()
    assert daemon.image_file(image, f"/tmp/llb-escape-{uniq}") == b"x"


def test_secret_and_ssh_mounts_as_buildkits_llb_writes_them_and_no_mount_stubs_left(daemon, uniq):
    """BuildKit's llb package leaves Mount.input and Mount.output unset (0)
    on secret and ssh mounts: such an op is valid.  The mount points `buildah
    run` made for mounts (/run/secrets/tok, /run/secrets, /mnt/t, /mnt) are gone
    from the result, as BuildKit's executor removes its mount stubs; a
    mount point that existed (/tmp) and what the command wrote stay."""
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"cat /run/secrets/tok > /seen && echo {uniq} > /tmp/kept"], root=img,
                    mounts=[llb.mount(0, "/run/secrets/tok", 0, type=llb.SECRET, secret="tok"),
                            llb.mount(-1, "/mnt/t", type=llb.TMPFS),
                            llb.mount(-1, "/tmp/cache", type=llb.CACHE, cache_id=f"stub-{uniq}")])
    with SessionPeer(daemon.sock, {}, secrets={"tok": b"value\n"}) as peer:
        status, events = _solve(daemon, [img, run], session=peer.uuid)
    assert status == 200, events
    image = _image(events)
    assert daemon.image_file(image, "/seen") == b"value\n"
    assert daemon.image_file(image, "/tmp/kept") == f"{uniq}\n".encode()
    assert daemon.image_paths(image, "/run/secrets/tok", "/run/secrets", "/mnt/t", "/tmp/cache") == {
        "/run/secrets/tok": False, "/run/secrets": False, "/mnt/t": False, "/tmp/cache": False}
    # the base has /run and /tmp, not /mnt: the whole chain /mnt/t went
    assert daemon.image_paths(image, "/run", "/mnt", "/tmp") == {"/run": True, "/mnt": False, "/tmp": True}


def test_cache_mount_seeded_from_an_input_at_a_selector(daemon, uniq):
    """A cache mount with an input and a selector (BuildKit's Dockerfile
    frontend for `--mount=type=cache,uid=,gid=,mode=`: a scratch mkdir
    /cache, mounted at selector /cache): the first use starts from the
    input's directory with its owner and mode, later uses see what earlier
    ones wrote."""
    img = llb.source(BUSYBOX)
    seed = llb.file([llb.mkdir("/cache", 0o750, chown=llb.owner(1000, 1001))])
    cache = llb.mount(1, "/var/cache/app", selector="/cache", type=llb.CACHE, cache_id=f"seeded-{uniq}")
    first = llb.exec_(["sh", "-c", "stat -c '%a %u %g' /var/cache/app > /meta && echo one >> /var/cache/app/log"],
                      inputs=[seed], root=img, mounts=[cache])
    image = _image(_solve(daemon, [img, seed, first])[1])
    assert daemon.image_file(image, "/meta") == b"750 1000 1001\n"
    second = llb.exec_(["sh", "-c", "cp /var/cache/app/log /log"], inputs=[seed], root=img, mounts=[cache])
    image = _image(_solve(daemon, [img, seed, second])[1])
    assert daemon.image_file(image, "/log") == b"one\n"


def test_a_base_image_with_onbuild_triggers_does_not_run_them(daemon, uniq):
    """ONBUILD triggers are the frontend's business in LLB (BuildKit's
    Dockerfile frontend makes ops of them); `buildah from` would run them
    when the engine takes the image as a rootfs.  It must not."""
    base = f"localhost/onbuild-{uniq}:latest"
    r = daemon.build({"Dockerfile": f"FROM {lib.BASE_IMAGE}\nONBUILD RUN touch /triggered\n"},
                     params={"t": base})
    assert r.status == 200 and daemon.image_exists(base), r
    img = llb.source("docker-image://" + base)
    run = llb.exec_(["sh", "-c", f"echo {uniq} > /ran; test ! -e /triggered"], root=img)
    status, events = _solve(daemon, [img, run])
    assert status == 200, events
    image = _image(events)
    assert daemon.image_paths(image, "/ran", "/triggered") == {"/ran": True, "/triggered": False}


def test_secret_env_sets_the_variable_without_it_on_any_command_line(daemon, uniq):
    """ExecOp.secretenv (RUN --mount=type=secret,env=NAME): the command sees
    the secret in $TOKEN, also as a non-root user; an optional one the
    session lacks is unset; the secret is on no command line (the exec's own
    argv included) and nothing of the mechanism is left in the image."""
    secret = f"env-secret-{uniq}"
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", 'printf %s "$TOKEN" > /tmp/seen; echo "${MISSING-unset}" > /tmp/missing; '
                                 'tr "\\0" " " < /proc/$$/cmdline > /tmp/cmdline'],
                    root=img, user="1000:1000", secret_env=[("tok", "TOKEN", False), ("absent", "MISSING", True)])
    with SessionPeer(daemon.sock, {}, secrets={"tok": secret.encode()}) as peer:
        status, events = _solve(daemon, [img, run], session=peer.uuid)
    assert status == 200, events
    image = _image(events)
    assert daemon.image_file(image, "/tmp/seen") == secret.encode()
    assert daemon.image_file(image, "/tmp/missing") == b"unset\n"
    assert secret.encode() not in daemon.image_file(image, "/tmp/cmdline")
    assert daemon.image_paths(image, "/.podsolve-env-exec", "/.podsolve-secret-env") == {
        "/.podsolve-env-exec": False, "/.podsolve-secret-env": False}
    assert secret not in daemon.log_tail(400000)
