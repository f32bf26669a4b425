"""LLB execs run by podsolved itself as one `runc run` (solver/llb/runc_exec.h):
a daemon with --sandbox-network host (and any exec with network NONE) runs
the exec in its mounted working container with the spec buildah would
have written: the user and groups from the image's /etc/passwd and
/etc/group, the op's env and cwd, buildah's capabilities, the seccomp
profile of containers-common, a network namespace with only lo for
network NONE, the op's mounts.  Each test asserts what the process saw or
wrote, and that it ran through runc under podsolved's own root (its
`runc run` line in the log), not `buildah run`."""

import json
import re
import subprocess

import pytest

import podsolve_testlib as lib

import llbgen as llb  # noqa: E402
from llb_solve import errors, image, logs, solve  # noqa: E402
from session_peer import SessionPeer  # noqa: E402

BUSYBOX = "docker-image://" + lib.BASE_IMAGE
# buildah's default capabilities (CHOWN DAC_OVERRIDE FOWNER FSETID KILL
# NET_BIND_SERVICE SETFCAP SETGID SETPCAP SETUID SYS_CHROOT), as `buildah
# run` gives a RUN: the mask /proc/self/status shows.
BUILDAH_CAPS = "00000000800405fb"


@pytest.fixture(scope="module")
def hostnet():
    """A daemon whose LLB execs have no network of their own: every exec
    takes the direct runc path."""
    d = lib.start_private_daemon(["--sandbox-network", "host", "--allow-insecure-entitlement", "security.insecure"],
                                 prefix="podsolve-it-runc-")
    yield d
    status, msg = d.stop(timeout=20)
    d.cleanup_storage()
    assert msg is None and status == 0, (status, msg)


def _run_lines(d):
    """The `runc run` commands podsolved spawned, from its debug log."""
    return [l for l in d.log_path.read_text().splitlines() if re.search(r"spawned pid \d+: \S*runc --root=\S+ run ", l)]


def _ok(d, ops, **kw):
    status, events = solve(d, ops, **kw)
    assert status == 200 and not errors(events), (status, errors(events), d.log_tail())
    return events


def _with_users(img):
    """busybox with a user "app" (1000:1001) in groups wheel (10) and
    audio (29), its primary group "appgrp" (1001)."""
    return llb.file([
        llb.mkfile("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n"),
        llb.mkfile("/etc/group", b"root:x:0:\nwheel:x:10:root,app\naudio:x:29:app\nappgrp:x:1001:\n"),
    ], inputs=[img], base=0)


def test_user_groups_env_and_cwd_come_from_the_op_and_the_images_passwd(hostnet, uniq):
    img = llb.source(BUSYBOX)
    users = _with_users(img)
    before = len(_run_lines(hostnet))
    run = llb.exec_(["sh", "-c", "id > /tmp/id; pwd > /tmp/pwd; echo \"$GREETING\" > /tmp/env; "
                                 "echo $HOSTNAME > /tmp/hostname_env; cat /etc/hostname > /tmp/hostname"],
                    root=users, cwd="/work/made/here", user="app",
                    env=("PATH=/bin:/usr/bin", f"GREETING=hello-{uniq}"), hostname=f"h-{uniq}")
    events = _ok(hostnet, [img, users, run])
    out = image(events)
    assert hostnet.image_file(out, "/tmp/id") == b"uid=1000(app) gid=1001(appgrp) groups=10(wheel),29(audio),1001(appgrp)\n"
    assert hostnet.image_file(out, "/tmp/pwd") == b"/work/made/here\n"
    assert hostnet.image_file(out, "/tmp/env") == f"hello-{uniq}\n".encode()
    assert hostnet.image_file(out, "/tmp/hostname") == f"h-{uniq}\n".encode()
    assert hostnet.image_file(out, "/tmp/hostname_env") == f"h-{uniq}\n".encode()
    # the working directory was made, as buildah makes it
    assert hostnet.image_paths(out, "/work/made/here") == {"/work/made/here": True}
    assert len(_run_lines(hostnet)) == before + 1, "the exec did not run as one `runc run`"


def test_user_with_an_explicit_group_and_an_unknown_user(hostnet, uniq):
    img = llb.source(BUSYBOX)
    users = _with_users(img)
    run = llb.exec_(["sh", "-c", "id > /tmp/id"], root=users, user="app:wheel")
    out = image(_ok(hostnet, [img, users, run]))
    assert hostnet.image_file(out, "/tmp/id") == b"uid=1000(app) gid=10(wheel) groups=10(wheel)\n"
    run = llb.exec_(["sh", "-c", "id > /tmp/id"], root=users, user="4242")
    out = image(_ok(hostnet, [img, users, run]))
    assert hostnet.image_file(out, "/tmp/id") == b"uid=4242 gid=0(root) groups=0(root)\n"
    ghost = llb.exec_(["true"], root=users, user=f"ghost{uniq}")
    status, events = solve(hostnet, [img, users, ghost])
    assert status == 200
    assert any(f"ghost{uniq}" in e["message"] for e in errors(events)), errors(events)


def test_root_has_buildahs_capabilities_under_seccomp_and_insecure_has_all(hostnet, uniq):
    img = llb.source(BUSYBOX)
    script = ("grep -e CapEff -e CapBnd -e Seccomp: -e NoNewPrivs /proc/self/status > /tmp/status; "
              # a syscall the profile refuses without CAP_SYS_ADMIN: unshare(CLONE_NEWNS)
              "unshare -m true 2> /tmp/unshare; echo $? >> /tmp/unshare")
    run = llb.exec_(["sh", "-c", script], root=img)
    out = image(_ok(hostnet, [img, run]))
    status = hostnet.image_file(out, "/tmp/status").decode()
    assert f"CapEff:\t{BUILDAH_CAPS}" in status and f"CapBnd:\t{BUILDAH_CAPS}" in status, status
    assert "Seccomp:\t2" in status and "NoNewPrivs:\t0" in status, status
    unshare = hostnet.image_file(out, "/tmp/unshare").decode()
    assert unshare.rstrip().endswith("1") and "ermitted" in unshare, unshare

    nobody = llb.exec_(["sh", "-c", "grep -e CapEff -e CapBnd /proc/self/status > /tmp/status"], root=img,
                       user="nobody")
    out = image(_ok(hostnet, [img, nobody]))
    status = hostnet.image_file(out, "/tmp/status").decode()
    assert "CapEff:\t0000000000000000" in status and f"CapBnd:\t{BUILDAH_CAPS}" in status, status

    insecure = llb.exec_(["sh", "-c", "grep -e CapEff -e Seccomp: /proc/self/status > /tmp/status; "
                                      "unshare -m true; echo $? > /tmp/unshare"], root=img, insecure=True)
    out = image(_ok(hostnet, [img, insecure], entitlements=["security.insecure"]))
    mine = open("/proc/self/status").read()
    bnd = re.search(r"CapBnd:\t(\w+)", mine).group(1)
    status = hostnet.image_file(out, "/tmp/status").decode()
    # every capability the daemon holds, still under the profile (as buildah --cap-add)
    assert f"CapEff:\t{bnd}" in status and "Seccomp:\t2" in status, (status, bnd)
    assert hostnet.image_file(out, "/tmp/unshare") == b"0\n"


def test_network_none_has_only_lo_and_host_network_has_the_hosts(hostnet, uniq):
    img = llb.source(BUSYBOX)
    none = llb.exec_(["sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /tmp/ifaces; "
                                  "ls /etc/hosts /etc/resolv.conf > /tmp/files 2>&1; true"],
                     root=img, network=2)
    out = image(_ok(hostnet, [img, none]))
    assert hostnet.image_file(out, "/tmp/ifaces") == b"lo\n"
    host = llb.exec_(["sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort > /tmp/ifaces; "
                                  "cat /etc/hosts > /tmp/hosts"],
                     root=img, extra_hosts=[(f"extra-{uniq}.example", "10.9.8.7")])
    out = image(_ok(hostnet, [img, host]))
    mine = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])
    assert hostnet.image_file(out, "/tmp/ifaces").decode().split() == mine
    hosts = hostnet.image_file(out, "/tmp/hosts").decode()
    assert hosts.startswith(f"10.9.8.7\textra-{uniq}.example\n") and "\thost.containers.internal\n" in hosts, hosts


def test_cache_bind_tmpfs_and_secret_mounts(hostnet, uniq):
    img = llb.source(BUSYBOX)
    cache = llb.mount(-1, "/cache", type=llb.CACHE, cache_id=f"direct-{uniq}")
    first = llb.exec_(["sh", "-c", f"echo {uniq} > /cache/seen"], root=img, mounts=[cache])
    _ok(hostnet, [img, first])
    data = llb.file([llb.mkfile("/data.txt", b"from-an-input\n")])
    run = llb.exec_(["sh", "-c", "cat /cache/seen > /tmp/cache; cat /in/data.txt > /tmp/bind; "
                                 "touch /in/ro 2> /tmp/ro; echo x > /t/x && grep ' /t ' /proc/mounts > /tmp/tmpfs; "
                                 "cat /run/secrets/tok > /tmp/secret; ls -ln /run/secrets/tok >> /tmp/secret"],
                    root=img, inputs=[data],
                    mounts=[cache, llb.mount(1, "/in", readonly=True), llb.mount(-1, "/t", type=llb.TMPFS),
                            llb.mount(0, "/run/secrets/tok", 0, type=llb.SECRET, secret="tok", secret_uid=7,
                                      secret_mode=0o440)])
    with SessionPeer(hostnet.sock, {}, secrets={"tok": b"s3cret\n"}) as peer:
        events = _ok(hostnet, [img, data, run], session=peer.uuid)
    out = image(events)
    assert hostnet.image_file(out, "/tmp/cache") == f"{uniq}\n".encode()
    assert hostnet.image_file(out, "/tmp/bind") == b"from-an-input\n"
    assert b"Read-only file system" in hostnet.image_file(out, "/tmp/ro")
    assert hostnet.image_file(out, "/tmp/tmpfs").startswith(b"tmpfs /t tmpfs ")
    secret = hostnet.image_file(out, "/tmp/secret").decode()
    assert secret.startswith("s3cret\n") and re.search(r"-r--r-----\s+1\s+7\s+0\s", secret), secret
    # the mount points the exec needed are gone again, as with buildah run
    assert hostnet.image_paths(out, "/in", "/t", "/cache", "/run/secrets/tok") == {
        "/in": False, "/t": False, "/cache": False, "/run/secrets/tok": False}


def test_exit_code_and_no_runc_record_or_bundle_left(hostnet, uniq):
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"echo out-{uniq}; echo err-{uniq} >&2; exit 3"], root=img)
    status, events = solve(hostnet, [img, run])
    assert status == 200
    errs = errors(events)
    assert errs and errs[-1].get("exitCode") == 3 and "exit code: 3" in errs[-1]["message"], errs
    lg = logs(events, run)
    assert f"out-{uniq}".encode() in lg and f"err-{uniq}".encode() in lg
    root = hostnet.state / "runc"
    assert lib.runc_containers_below(hostnet.tmp, root=str(root)) == []
    assert list((hostnet.state / "runc-bundles").iterdir()) == []
    assert hostnet.working_containers() == []


def test_cancel_kills_the_exec_and_leaves_no_record(hostnet, uniq):
    """A cancelled solve: the running `runc run`'s container (whose init, a
    shell, ignores SIGTERM as a pid 1 does) is killed, its record and
    bundle deleted, the working container removed."""
    img = llb.source(BUSYBOX)
    marker = f"sleep 45.{int(uniq, 16) % 1000:03d}"
    run = llb.exec_(["sh", "-c", f"echo started-{uniq}; {marker}; echo done"], root=img)
    ref = f"direct-cancel-{uniq}"
    req = {"definition": llb.definition_json([img, run]), "ref": ref}
    status, _, it = hostnet.stream("POST", "/solve", json.dumps(req).encode(), {"Content-Type": "application/json"})
    assert status == 200
    root = str(hostnet.state / "runc")
    try:
        assert lib.wait_for(lambda: lib.running(marker), 30, step=0.2), "the exec never started"
        assert lib.runc_containers_below(hostnet.tmp, root=root)
        cstatus, _, cbody = hostnet.request("POST", f"/solve/{ref}/cancel")
        assert cstatus == 200 and json.loads(cbody)["state"] == "cancelled", cbody
        events = list(it)
    finally:
        it.close()
    assert "error" in events[-1] and "cancel" in events[-1]["error"]["message"], events[-3:]
    assert lib.wait_for(lambda: not lib.running(marker), 10), lib.running(marker)
    assert lib.runc_containers_below(hostnet.tmp, root=root) == []
    assert list((hostnet.state / "runc-bundles").iterdir()) == []
    assert lib.wait_for(lambda: hostnet.working_containers() == [], 20), hostnet.working_containers()


def test_the_process_sees_what_buildah_run_gives_it(daemon, hostnet, uniq):
    """The same exec through `buildah run` (the shared daemon: a bridge
    sandbox) and as one `runc run` (hostnet): the same ids, limits,
    capabilities, seccomp mode, environment (but the hostname) and mounts
    (but the network's files, and the bind sources)."""
    img = llb.source(BUSYBOX)
    script = ("{ id; echo nofile $(ulimit -Sn) $(ulimit -Hn); echo nproc $(ulimit -Su) $(ulimit -Hu); "
              "grep -e ^Cap -e ^Seccomp: -e ^NoNewPrivs /proc/self/status; pwd; "
              "env | grep -v -e ^HOSTNAME= -e ^PWD= -e ^SHLVL= | sort; "
              "awk '$2 != \"/etc/hosts\" && $2 != \"/etc/resolv.conf\" {print $2, $3, $4}' /proc/self/mounts "
              "| sed 's/,size=[0-9]*k//; s/,nr_inodes=[0-9]*//' | sort; } > /tmp/seen")
    run = llb.exec_(["sh", "-c", script], root=img, cwd="/srv", user="nobody",
                    env=("PATH=/usr/bin:/bin", f"X=1-{uniq}"), ulimits=[("nofile", 512, 1024)],
                    mounts=[llb.mount(-1, "/t", type=llb.TMPFS)])
    via_buildah = daemon.image_file(image(_ok(daemon, [img, run])), "/tmp/seen").decode()
    direct = hostnet.image_file(image(_ok(hostnet, [img, run])), "/tmp/seen").decode()

    def norm(text):
        # the rootfs line names each daemon's own overlay paths
        return [l for l in text.splitlines() if not l.startswith("/ overlay ")]
    assert norm(direct) == norm(via_buildah), "\n".join(
        [f"- {l}" for l in norm(via_buildah) if l not in norm(direct)]
        + [f"+ {l}" for l in norm(direct) if l not in norm(via_buildah)])
    assert "nofile 512 1024" in direct and "Seccomp:\t2" in direct


def test_runc_run_killed_from_outside_fails_the_exec_and_leaves_nothing(hostnet, uniq):
    """Someone SIGKILLs the exec's `runc run` (the OOM killer, an operator):
    the solve fails at once (exit code 137, 128 + SIGKILL); the process it ran is
    killed with it; runc's record (left `running` or `stopped` by the dead
    runc) and the bundle are removed before the error is sent."""
    import os
    import signal
    img = llb.source(BUSYBOX)
    marker = f"sleep 46.{int(uniq, 16) % 1000:03d}"
    run = llb.exec_(["sh", "-c", f"echo started; {marker}"], root=img)
    req = {"definition": llb.definition_json([img, run]), "ref": f"direct-killed-{uniq}"}
    status, _, it = hostnet.stream("POST", "/solve", json.dumps(req).encode(), {"Content-Type": "application/json"})
    assert status == 200
    root = str(hostnet.state / "runc")
    try:
        assert lib.wait_for(lambda: lib.running(marker), 30, step=0.2), "the exec never started"
        runc = [p for p, cmd in hostnet.descendants() if re.search(r"runc --root=\S+ run ", cmd)]
        assert len(runc) == 1, hostnet.descendants()
        victim = [c["id"] for c in lib.runc_containers_below(hostnet.tmp, root=root)]
        assert len(victim) == 1
        import time
        time.sleep(1)   # seen by the watch of what runs below it (PS_CHILD_BELOW_REFRESH_MS)
        os.kill(runc[0], signal.SIGKILL)
        events = list(it)
    finally:
        it.close()
    errs = [e["error"] for e in events if "error" in e]
    assert errs and "exit code: 137" in errs[-1]["message"], events[-3:]
    assert lib.wait_for(lambda: not lib.running(marker), 10), lib.running(marker)
    assert lib.runc_containers_below(hostnet.tmp, root=root) == []
    assert list((hostnet.state / "runc-bundles").iterdir()) == []
    assert lib.wait_for(lambda: hostnet.working_containers() == [], 20), hostnet.working_containers()
