"""Control.Solve (direct mode) and Control.Session over a real gRPC client
(grpcio): an LLB definition exported as an image, a Dockerfile whose context
comes through a Control.Session tunnel served by the Python session peer, a
failing RUN, a cancelled Solve, malformed requests."""

import contextlib
import io
import shutil
import tarfile
import tempfile
import time
import types

import grpc
import pytest

import grpc_testlib as glib
import llbgen as llb
import podsolve_testlib as lib
from conftest import _start_daemon, _stop_daemon
from session_peer import SessionPeer

SOLVE = "/moby.buildkit.v1.Control/Solve"
SESSION = "/moby.buildkit.v1.Control/Session"


@contextlib.contextmanager
def channel(d):
    ch = glib.listen_channel(d.buildkit_sock)
    try:
        yield ch
    finally:
        ch.close()


@pytest.fixture(scope="module")
def gd():
    """A podsolved with --buildkit-listen (its own storage; module-wide)."""
    sockdir = tempfile.mkdtemp(prefix="podsolve-bk-")
    path = f"{sockdir}/buildkitd.sock"
    d = _start_daemon(["--buildkit-listen", f"unix://{path}"], prefix="podsolve-it-grpcsolve-")
    d.buildkit_sock = path
    yield d
    problem = _stop_daemon(d)
    shutil.rmtree(sockdir, ignore_errors=True)
    assert problem is None, problem


@pytest.fixture(scope="module")
def pb():
    return types.SimpleNamespace(control=glib.pb("control"), ops=glib.pb("ops"))


def solve_stub(channel, pb):
    return channel.unary_unary(SOLVE, request_serializer=pb.control.SolveRequest.SerializeToString,
                               response_deserializer=pb.control.SolveResponse.FromString)


def llb_definition(pb, ops):
    ops = list(ops) + [llb.terminal(ops[-1])]
    return pb.ops.Definition(**{"def": [op.data for op in ops]})


def image_exporter(pb, name, type_="image"):
    return pb.control.Exporter(Type=type_, Attrs={"name": name})


# kept under this name: test_grpc_gateway.py imports it from here
Tunnel = glib.SessionTunnel


def test_solve_definition_image_exporter(gd, pb, uniq):
    name = f"localhost/grpc-llb-{uniq}:latest"
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(root=img, args=["sh", "-c", f"echo {uniq} > /out.txt"])
    req = pb.control.SolveRequest(Ref=f"llb{uniq}", Definition=llb_definition(pb, [img, run]),
                                  Exporters=[image_exporter(pb, name)])
    with channel(gd) as ch:
        resp = solve_stub(ch, pb)(req, timeout=lib.scaled(300))
    r = dict(resp.ExporterResponse)
    assert r["image.name"] == name, r
    assert gd.image_exists(name)
    assert r["containerimage.config.digest"] == "sha256:" + gd.image_id(name), r
    assert gd.image_file(name, "/out.txt").strip() == uniq.encode()


def test_solve_dockerfile_through_session_tunnel(gd, pb, uniq):
    name = f"localhost/grpc-df-{uniq}:latest"
    dockerfile = f"FROM {lib.BASE_IMAGE}\nCOPY hello.txt /hello.txt\nRUN echo built-{uniq} > /built.txt\n"
    files = {"Dockerfile": dockerfile, "hello.txt": f"hello {uniq}\n"}
    # buildx's shared key: "<builder>:<node identifier>"
    peer = SessionPeer(gd.sock, {"context": files, "dockerfile": files}, shared_key=f"builder{uniq}:node0")
    with channel(gd) as ch:
        tunnel = Tunnel(ch, pb, peer)
        try:
            req = pb.control.SolveRequest(
                Ref=f"df{uniq}", Frontend="dockerfile.v0", Session=peer.uuid,
                FrontendAttrs={"filename": "Dockerfile", "frontend.caps": "moby.buildkit.frontend.inputs"},
                Exporters=[pb.control.Exporter(Type="moby", Attrs={"name": name, "prefer-image-digest": "true"})])
            resp = solve_stub(ch, pb)(req, timeout=lib.scaled(300))
        finally:
            tunnel.close()
    assert peer.error is None, peer.trace()
    assert peer.transfers(), "the context never came through the tunnel:\n" + peer.trace()
    r = dict(resp.ExporterResponse)
    assert r["image.name"] == name, r
    assert r["containerimage.config.digest"] == "sha256:" + gd.image_id(name), r
    digest = gd.buildah("inspect", "--type=image", "--format={{.FromImageDigest}}", name).stdout.strip()
    assert r.get("containerimage.digest") == digest, (r, digest)
    assert gd.image_file(name, "/hello.txt") == f"hello {uniq}\n".encode()
    assert gd.image_file(name, "/built.txt").strip() == f"built-{uniq}".encode()
    # the call ended: the session leaves the registry
    lib.wait_for(lambda: f"session {peer.uuid}: Control.Session ended" in gd.log_tail(200000), 10)


def test_solve_failing_run_is_a_grpc_error(gd, pb, uniq):
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(root=img, args=["sh", "-c", f"echo nope-{uniq} >&2; exit 3"])
    req = pb.control.SolveRequest(Ref=f"fail{uniq}", Definition=llb_definition(pb, [img, run]))
    with channel(gd) as ch, pytest.raises(grpc.RpcError) as ei:
        solve_stub(ch, pb)(req, timeout=lib.scaled(300))
    e = ei.value
    assert e.code() == grpc.StatusCode.UNKNOWN, (e.code(), e.details())
    assert "exit code: 3" in e.details(), e.details()


def test_cancelling_solve_cancels_the_job(gd, pb, uniq):
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(root=img, args=["sh", "-c", f"echo start-{uniq}; sleep 60; echo never-{uniq}"])
    ref = f"cancel{uniq}"
    req = pb.control.SolveRequest(Ref=ref, Definition=llb_definition(pb, [img, run]))
    with channel(gd) as ch:
        fut = solve_stub(ch, pb).future(req, timeout=lib.scaled(300))
        # wait until the job runs its RUN
        assert lib.wait_for(lambda: gd.working_containers(), 60), gd.log_tail()
        time.sleep(1)
        fut.cancel()
    st = None
    deadline = time.monotonic() + lib.scaled(30)
    while time.monotonic() < deadline:
        status, _, body = gd.request("GET", f"/solve/{ref}")
        if status == 200 and '"state":"cancelled"' in body.decode().replace(" ", ""):
            st = "cancelled"
            break
        time.sleep(0.3)
    assert st == "cancelled", gd.log_tail()
    lib.wait_for(lambda: not gd.working_containers(), 15)
    assert gd.working_containers() == []


@pytest.mark.parametrize("body,expect", [
    (b"\xff\xff\xff", "not a valid protobuf"),
    (None, "Frontend"),                                   # Frontend "gateway.v0" without FrontendAttrs source
    ("bad-exporter", "bogus"),
    ("bad-ref", "ref"),
])
def test_malformed_solve_request_is_invalid_argument(gd, pb, body, expect):
    if body is None:
        raw = pb.control.SolveRequest(Frontend="gateway.v0").SerializeToString()
        expect = "gateway.v0"
    elif body == "bad-exporter":
        raw = pb.control.SolveRequest(Frontend="dockerfile.v0",
                                      Exporters=[pb.control.Exporter(Type="bogus")]).SerializeToString()
    elif body == "bad-ref":
        raw = pb.control.SolveRequest(Ref="../x", Frontend="dockerfile.v0").SerializeToString()
    else:
        raw = body
    with channel(gd) as ch:
        call = ch.unary_unary(SOLVE, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as ei:
            call(raw, timeout=lib.scaled(30))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (ei.value.code(), ei.value.details())
    assert expect in ei.value.details(), ei.value.details()
    assert gd.alive()


def test_session_without_uuid_is_invalid_argument(gd, pb):
    with channel(gd) as ch:
        stream = ch.stream_stream(SESSION, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        call = stream(iter([]), metadata=[("x-docker-expose-session-sharedkey", "k")])
        with pytest.raises(grpc.RpcError) as ei:
            list(call)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (ei.value.code(), ei.value.details())


def test_solve_tar_exporter_goes_over_filesend(gd, pb, uniq):
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(root=img, args=["sh", "-c", f"echo {uniq} > /tarred.txt"])
    peer = SessionPeer(gd.sock, {}, filesend=True)
    with channel(gd) as ch:
        tunnel = Tunnel(ch, pb, peer)
        try:
            req = pb.control.SolveRequest(Ref=f"tar{uniq}", Definition=llb_definition(pb, [img, run]),
                                          Session=peer.uuid, Exporters=[pb.control.Exporter(Type="tar")])
            solve_stub(ch, pb)(req, timeout=lib.scaled(300))
        finally:
            tunnel.close()
    assert len(peer.received_files) == 1, peer.trace()
    with tarfile.open(fileobj=io.BytesIO(peer.received_files[0])) as tf:
        names = {m.name.lstrip("./") for m in tf.getmembers()}
        assert "tarred.txt" in names, sorted(names)[:20]
        assert tf.extractfile([m for m in tf.getmembers() if m.name.lstrip("./") == "tarred.txt"][0]).read() \
            == f"{uniq}\n".encode()


def raw_session(ch, metadata):
    stream = ch.stream_stream(SESSION, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return stream(iter([]), metadata=metadata, timeout=lib.scaled(30))


def test_session_uuid_is_taken_while_open_and_free_after(gd, pb):
    peer = SessionPeer(gd.sock, {})
    with channel(gd) as ch:
        tunnel = Tunnel(ch, pb, peer)
        try:
            assert lib.wait_for(lambda: f"session {peer.uuid}: tunnelled" in gd.log_tail(200000), 10), gd.log_tail()
            with pytest.raises(grpc.RpcError) as ei:
                list(raw_session(ch, peer.metadata()))
            assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS, (ei.value.code(), ei.value.details())
        finally:
            tunnel.close()

        def free_again():
            try:
                list(raw_session(ch, peer.metadata()))
                return True
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.ALREADY_EXISTS, (e.code(), e.details())
                return False
        # the call ended: the session left the registry, its uuid can be used again
        assert lib.wait_for(free_again, 10)


def test_solve_over_the_grpc_upgrade(gd, pb, uniq):
    name = f"localhost/grpc-up-{uniq}:latest"
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(root=img, args=["sh", "-c", f"echo {uniq} > /up.txt"])
    req = pb.control.SolveRequest(Ref=f"up{uniq}", Definition=llb_definition(pb, [img, run]),
                                  Exporters=[image_exporter(pb, name, "moby")])
    with glib.upgrade_channel(gd) as ch:
        resp = solve_stub(ch, pb)(req, timeout=lib.scaled(300))
    assert dict(resp.ExporterResponse)["image.name"] == name
    assert gd.image_file(name, "/up.txt").strip() == uniq.encode()


def test_dockerfile_failing_run_through_the_tunnel(gd, pb, uniq):
    files = {"Dockerfile": f"FROM {lib.BASE_IMAGE}\nRUN echo failing-{uniq} && exit 7\n"}
    peer = SessionPeer(gd.sock, {"context": files, "dockerfile": files})
    with channel(gd) as ch:
        tunnel = Tunnel(ch, pb, peer)
        try:
            req = pb.control.SolveRequest(Ref=f"dff{uniq}", Frontend="dockerfile.v0", Session=peer.uuid,
                                          Exporters=[pb.control.Exporter(Type="moby", Attrs={"name": f"x{uniq}"})])
            with pytest.raises(grpc.RpcError) as ei:
                solve_stub(ch, pb)(req, timeout=lib.scaled(300))
        finally:
            tunnel.close()
    e = ei.value
    assert e.code() == grpc.StatusCode.UNKNOWN, (e.code(), e.details())
    assert f"failing-{uniq}" in e.details() and "7" in e.details(), e.details()


def test_solve_docker_archive_goes_over_filesend(gd, pb, uniq):
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(root=img, args=["sh", "-c", f"echo {uniq} > /d.txt"])
    peer = SessionPeer(gd.sock, {}, filesend=True)
    with channel(gd) as ch:
        tunnel = Tunnel(ch, pb, peer)
        try:
            req = pb.control.SolveRequest(
                Ref=f"dock{uniq}", Definition=llb_definition(pb, [img, run]), Session=peer.uuid,
                Exporters=[pb.control.Exporter(Type="docker", Attrs={"name": f"localhost/arch-{uniq}:1"})])
            solve_stub(ch, pb)(req, timeout=lib.scaled(300))
        finally:
            tunnel.close()
    assert len(peer.received_files) == 1, peer.trace()
    with tarfile.open(fileobj=io.BytesIO(peer.received_files[0])) as tf:
        names = set(tf.getnames())
        assert "manifest.json" in names, sorted(names)
        assert f"localhost/arch-{uniq}:1" in tf.extractfile("manifest.json").read().decode()


def test_push_as_buildx_sends_it(gd, pb, uniq):
    """buildx --push with the docker driver: an image exporter with
    push=true,unpack=false, then moby, the same name in both."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry (Debian package docker-registry) is not installed")
    from test_solve_e2e import Registry
    reg = Registry()
    try:
        name = f"{reg.host}/grpcpush:{uniq}"
        img = llb.source("docker-image://" + lib.BASE_IMAGE)
        run = llb.exec_(root=img, args=["sh", "-c", f"echo {uniq} > /pushed.txt"])
        req = pb.control.SolveRequest(
            Ref=f"push{uniq}", Definition=llb_definition(pb, [img, run]),
            Exporters=[pb.control.Exporter(Type="image", Attrs={"name": name, "push": "true", "unpack": "false",
                                                                "registry.insecure": "true"}),
                       pb.control.Exporter(Type="moby", Attrs={"name": name})])
        with channel(gd) as ch:
            resp = solve_stub(ch, pb)(req, timeout=lib.scaled(300))
        r = dict(resp.ExporterResponse)
        assert r["image.name"] == name, r
        status, headers, body = reg.manifest("grpcpush", uniq)
        assert status == 200, (status, body[:300])
        assert r["containerimage.digest"] == headers.get("Docker-Content-Digest"), (r, dict(headers))
        assert gd.image_file(name, "/pushed.txt").strip() == uniq.encode()
    finally:
        reg.stop()
