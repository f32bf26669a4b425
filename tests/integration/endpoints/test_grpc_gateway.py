"""The client-side gateway (issue #13 item 3): Control.Solve with no frontend
and no definition, driven over LLBBridge exactly as buildx and buildctl do
it (BuildKit's client.Build, grpc-clients.md §3): the Solve waits on one
stream while the client calls Ping, Solve, ReadFile/StatFile/ReadDir on the
result and Return on others, every call tagged with the metadata
``buildkit-controlapi-buildid``; then the Solve exports the returned ref.

A real client: Debian's python3-grpcio with modules generated from
schema/gateway.proto and schema/control.proto (grpc_testlib)."""

import concurrent.futures
import time
import types

import grpc
import pytest

import grpc_testlib as glib
import llbgen as llb
import podsolve_testlib as lib

SOLVE = "/moby.buildkit.v1.Control/Solve"
BRIDGE = "/moby.buildkit.v1.frontend.LLBBridge/"
BUILD_ID = "buildkit-controlapi-buildid"
GO_MODE_DIR = 0x80000000


@pytest.fixture(scope="module")
def gd():
    """A podsolved with --buildkit-listen (its own storage; module-wide)."""
    with lib.private_daemon("podsolve-it-grpcgw-", buildkit_listen=True) as d:
        yield d


@pytest.fixture(scope="module")
def pb():
    return types.SimpleNamespace(control=glib.pb("control"), gw=glib.pb("gateway"), ops=glib.pb("ops"))


@pytest.fixture
def ch(gd):
    c = glib.listen_channel(gd.buildkit_sock)
    yield c
    c.close()


def bridge(ch, method, req, resp_class, build_id, timeout=60):
    return glib.unary(ch, BRIDGE + method, req, resp_class, timeout=timeout, metadata=[(BUILD_ID, build_id)])


def definition(pb, ops):
    ops = list(ops) + [llb.terminal(ops[-1])]
    return pb.ops.Definition(**{"def": [op.data for op in ops]})


def start_gateway_solve(ch, pb, ref, exporters=(), **kw):
    """Control.Solve in gateway mode on a stream of its own (a future)."""
    stub = ch.unary_unary(SOLVE, request_serializer=pb.control.SolveRequest.SerializeToString,
                          response_deserializer=pb.control.SolveResponse.FromString)
    req = pb.control.SolveRequest(Ref=ref, Frontend="", Exporters=list(exporters), **kw)
    return stub.future(req, timeout=lib.scaled(300))


def test_gateway_build_as_buildx_drives_it(gd, pb, ch, uniq):
    ref = f"gw{uniq}"
    name = f"localhost/grpc-gw-{uniq}:latest"
    solve = start_gateway_solve(ch, pb, ref, [pb.control.Exporter(Type="moby", Attrs={"name": name})])

    # Ping: the caps podsolve has (and none it has not)
    pong = bridge(ch, "Ping", pb.gw.PingRequest(), pb.gw.PongResponse, ref)
    caps = {c.ID for c in pong.FrontendAPICaps if c.Enabled}
    assert {"solve.base", "return", "readfile", "readdir", "statfile", "proto.refarray",
            "source.metaresolver", "frontend.inputs"} <= caps, caps
    assert not caps & {"gateway.exec", "returnmap", "solve.inlinereturn"}, caps
    assert {c.ID for c in pong.LLBCaps} >= {"source.image", "exec.meta.base", "file.base", "exec.mount.ssh"}

    # Solve a definition: a ref
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(root=img, args=["sh", "-c", f"mkdir -p /w/sub && echo {uniq} > /w/hello.txt && "
                                                f"ln -s /etc/passwd /w/link && echo x > /w/sub/y"])
    resp = bridge(ch, "Solve", pb.gw.SolveRequest(Definition=definition(pb, [img, run]), allowResultReturn=True,
                                                  allowResultArrayRef=True), pb.gw.SolveResponse, ref, timeout=300)
    assert resp.result.WhichOneof("result") == "ref", resp
    rid = resp.result.ref.id
    assert rid
    assert len(getattr(getattr(resp.result.ref, "def"), "def")) == 3  # the definition it came from

    # ReadFile (whole and a range), StatFile, ReadDir on the ref
    data = bridge(ch, "ReadFile", pb.gw.ReadFileRequest(Ref=rid, FilePath="/w/hello.txt"), pb.gw.ReadFileResponse,
                  ref).Data
    assert data == f"{uniq}\n".encode()
    part = bridge(ch, "ReadFile", pb.gw.ReadFileRequest(Ref=rid, FilePath="w/hello.txt",
                                                        Range=pb.gw.FileRange(Offset=1, Length=3)),
                  pb.gw.ReadFileResponse, ref).Data
    assert part == f"{uniq}\n".encode()[1:4]
    st = bridge(ch, "StatFile", pb.gw.StatFileRequest(Ref=rid, Path="/w/hello.txt"), pb.gw.StatFileResponse,
                ref).stat
    assert st.path == "hello.txt" and st.size == len(uniq) + 1 and st.mode & 0o777 and not st.mode & GO_MODE_DIR
    st = bridge(ch, "StatFile", pb.gw.StatFileRequest(Ref=rid, Path="/w/sub"), pb.gw.StatFileResponse, ref).stat
    assert st.mode & GO_MODE_DIR
    entries = bridge(ch, "ReadDir", pb.gw.ReadDirRequest(Ref=rid, DirPath="/w"), pb.gw.ReadDirResponse,
                     ref).entries
    by_name = {e.path: e for e in entries}
    assert sorted(by_name) == ["hello.txt", "link", "sub"], sorted(by_name)
    assert by_name["link"].linkname == "/etc/passwd"
    only = bridge(ch, "ReadDir", pb.gw.ReadDirRequest(Ref=rid, DirPath="/w", IncludePattern="*.txt"),
                  pb.gw.ReadDirResponse, ref).entries
    assert [e.path for e in only] == ["hello.txt"]
    # Evaluate: the ref is solved
    bridge(ch, "Evaluate", pb.gw.EvaluateRequest(Ref=rid), pb.gw.EvaluateResponse, ref)
    # an unknown ref is NOT_FOUND
    with pytest.raises(grpc.RpcError) as ei:
        bridge(ch, "ReadFile", pb.gw.ReadFileRequest(Ref="nope", FilePath="/w/hello.txt"), pb.gw.ReadFileResponse,
               ref)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND, ei.value.details()

    # Return: the Solve exports the ref
    bridge(ch, "Return", pb.gw.ReturnRequest(result=pb.gw.Result(ref=pb.gw.Ref(id=rid))), pb.gw.ReturnResponse, ref)
    out = solve.result(timeout=lib.scaled(300))
    r = dict(out.ExporterResponse)
    assert r.get("image.name") == name, r
    assert r["containerimage.config.digest"] == "sha256:" + gd.image_id(name), r
    assert gd.image_file(name, "/w/hello.txt") == f"{uniq}\n".encode()

    # the build is gone: later calls are NOT_FOUND (after BuildKit's wait)
    with pytest.raises(grpc.RpcError) as ei:
        bridge(ch, "Ping", pb.gw.PingRequest(), pb.gw.PongResponse, ref)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def test_paths_stay_inside_the_ref(gd, pb, ch, uniq, tmp_path):
    """"..", absolute and relative symlinks resolve inside the ref's rootfs:
    a file on the host beside it is never reached."""
    outside = tmp_path / f"escape-{uniq}"
    outside.write_text("host secret")
    ref = f"gwpath{uniq}"
    solve = start_gateway_solve(ch, pb, ref)
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(root=img, args=["sh", "-c", f"ln -s ../../../../../../../..{tmp_path} /up && "
                                                f"ln -s {tmp_path} /abs && ln -s /proc/self/root /me"])
    rid = bridge(ch, "Solve", pb.gw.SolveRequest(Definition=definition(pb, [img, run]), allowResultReturn=True,
                                                 allowResultArrayRef=True), pb.gw.SolveResponse, ref,
                 timeout=300).result.ref.id
    name = outside.name
    for path in (f"/../../../../../../..{tmp_path}/{name}", f"/up/{name}", f"/abs/{name}",
                 f"/me{tmp_path}/{name}"):
        for method, req, resp in (("ReadFile", pb.gw.ReadFileRequest(Ref=rid, FilePath=path), pb.gw.ReadFileResponse),
                                  ("StatFile", pb.gw.StatFileRequest(Ref=rid, Path=path), pb.gw.StatFileResponse)):
            with pytest.raises(grpc.RpcError) as ei:
                bridge(ch, method, req, resp, ref)
            assert ei.value.code() == grpc.StatusCode.NOT_FOUND, (method, path, ei.value.details())
    bridge(ch, "Return", pb.gw.ReturnRequest(), pb.gw.ReturnResponse, ref)
    solve.result(timeout=lib.scaled(60))


def test_probe_build_returns_nothing(gd, pb, ch, uniq):
    """buildx's internal probe: Control.Solve{Internal}, Ping, an empty Return."""
    ref = f"gwprobe{uniq}"
    solve = start_gateway_solve(ch, pb, ref, Internal=True)
    bridge(ch, "Ping", pb.gw.PingRequest(), pb.gw.PongResponse, ref)
    bridge(ch, "Return", pb.gw.ReturnRequest(result=pb.gw.Result()), pb.gw.ReturnResponse, ref)
    out = solve.result(timeout=lib.scaled(60))
    assert "containerimage.config.digest" not in dict(out.ExporterResponse)


def test_returned_error_fails_the_solve(gd, pb, ch, uniq):
    ref = f"gwerr{uniq}"
    solve = start_gateway_solve(ch, pb, ref)
    status = glib.pb("rpc_status").Status(code=3, message=f"frontend says no {uniq}")
    bridge(ch, "Return", pb.gw.ReturnRequest(error=status), pb.gw.ReturnResponse, ref)
    with pytest.raises(grpc.RpcError) as ei:
        solve.result(timeout=lib.scaled(60))
    assert f"frontend says no {uniq}" in ei.value.details()


def test_calls_arriving_before_the_solve_wait_for_it(gd, pb, ch, uniq):
    ref = f"gwearly{uniq}"
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        ping = ex.submit(bridge, ch, "Ping", pb.gw.PingRequest(), pb.gw.PongResponse, ref)
        time.sleep(1)
        solve = start_gateway_solve(ch, pb, ref)
        assert ping.result(timeout=lib.scaled(30)).FrontendAPICaps
    bridge(ch, "Return", pb.gw.ReturnRequest(), pb.gw.ReturnResponse, ref)
    solve.result(timeout=lib.scaled(60))


def test_unknown_build_id_is_not_found(gd, pb, ch, uniq):
    t0 = time.monotonic()
    for method, req, resp in (("Ping", pb.gw.PingRequest(), pb.gw.PongResponse),
                              ("Solve", pb.gw.SolveRequest(), pb.gw.SolveResponse),
                              ("Return", pb.gw.ReturnRequest(), pb.gw.ReturnResponse)):
        with pytest.raises(grpc.RpcError) as ei:
            bridge(ch, method, req, resp, f"nobuild{uniq}")
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND, (method, ei.value.code(), ei.value.details())
        assert f"nobuild{uniq}" in ei.value.details()
    assert time.monotonic() - t0 >= 3 * 2.9  # BuildKit's 3 s wait for a late build, each call


def test_missing_build_id_is_invalid_argument(gd, pb, ch):
    with pytest.raises(grpc.RpcError) as ei:
        glib.unary(ch, BRIDGE + "Ping", pb.gw.PingRequest(), pb.gw.PongResponse)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value.details()
    assert BUILD_ID in ei.value.details()


@pytest.mark.parametrize("method", ["Ping", "Solve", "Return", "ReadFile", "ReadDir", "StatFile", "Evaluate",
                                    "ResolveImageConfig", "Inputs", "Warn"])
def test_malformed_request_is_invalid_argument(gd, ch, method):
    with pytest.raises(grpc.RpcError) as ei:
        glib.unary_raw(ch, BRIDGE + method, b"\xff\xff\xff", metadata=[(BUILD_ID, "whatever")])
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, ei.value.code(), ei.value.details())
    assert gd.alive()


@pytest.mark.parametrize("method", ["NewContainer", "ReleaseContainer", "ReadFileContainer"])
def test_container_rpcs_are_unimplemented(gd, ch, method):
    with pytest.raises(grpc.RpcError) as ei:
        glib.unary_raw(ch, BRIDGE + method, b"", metadata=[(BUILD_ID, "whatever")])
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED, (method, ei.value.code())


def test_client_vanishing_mid_solve_cancels_the_build(gd, pb, uniq):
    ref = f"gwgone{uniq}"
    c1 = glib.listen_channel(gd.buildkit_sock)
    solve = start_gateway_solve(c1, pb, ref)
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(root=img, args=["sh", "-c", f"echo start-{uniq}; sleep 120; echo never-{uniq}"])
    fn = c1.unary_unary(BRIDGE + "Solve", request_serializer=pb.gw.SolveRequest.SerializeToString,
                        response_deserializer=pb.gw.SolveResponse.FromString)
    fut = fn.future(pb.gw.SolveRequest(Definition=definition(pb, [img, run]), allowResultReturn=True,
                                       allowResultArrayRef=True),
                    timeout=lib.scaled(300), metadata=[(BUILD_ID, ref)])
    assert lib.wait_for(lambda: gd.working_containers(), 60), gd.log_tail()
    time.sleep(1)
    c1.close()  # the client goes away: connection gone, every call cancelled
    for f in (fut, solve):
        with pytest.raises((grpc.RpcError, grpc.FutureCancelledError)):
            f.result(timeout=lib.scaled(30))
    deadline = time.monotonic() + lib.scaled(30)
    state = None
    while time.monotonic() < deadline:
        status, _, body = gd.request("GET", f"/solve/{ref}")
        state = body.decode().replace(" ", "") if status == 200 else None
        if state and '"state":"cancelled"' in state:
            break
        time.sleep(0.3)
    assert state and '"state":"cancelled"' in state, (state, gd.log_tail())
    assert lib.wait_for(lambda: not gd.working_containers(), 30), gd.working_containers()
    assert gd.alive()


def test_gateway_dockerfile_with_context_from_a_session(gd, pb, ch, uniq):
    """buildx's docker-driver build: the context comes over a Control.Session
    tunnel named by local-sessionid:*, the Dockerfile frontend runs as
    LLBBridge.Solve{Frontend: dockerfile.v0} with buildx's FrontendOpt."""
    from session_peer import SessionPeer
    from test_grpc_solve import Tunnel

    name = f"localhost/grpc-gwdf-{uniq}:latest"
    dockerfile = f"FROM {lib.BASE_IMAGE}\nARG X\nCOPY hello.txt /hello.txt\nRUN echo built-$X > /built.txt\n"
    files = {"Dockerfile": dockerfile, "hello.txt": f"hello {uniq}\n"}
    # buildx's shared key: the context path and the node
    peer = SessionPeer(gd.sock, {"context": files, "dockerfile": files}, shared_key=f"/home/u/my app {uniq}:node0")
    tunnel = Tunnel(ch, pb, peer)
    ref = f"gwdf{uniq}"
    try:
        solve = start_gateway_solve(ch, pb, ref, [pb.control.Exporter(Type="moby", Attrs={"name": name})],
                                    Session=peer.uuid)
        opt = {"filename": "Dockerfile", "build-arg:X": uniq, "image-resolve-mode": "local",
               "frontend.caps": "moby.buildkit.frontend.inputs,moby.buildkit.frontend.subrequests",
               "local-sessionid:context": peer.uuid, "local-sessionid:dockerfile": peer.uuid}
        resp = bridge(ch, "Solve", pb.gw.SolveRequest(Frontend="dockerfile.v0", FrontendOpt=opt,
                                                      allowResultReturn=True, allowResultArrayRef=True),
                      pb.gw.SolveResponse, ref, timeout=300)
        rid = resp.result.ref.id
        assert bridge(ch, "ReadFile", pb.gw.ReadFileRequest(Ref=rid, FilePath="/built.txt"),
                      pb.gw.ReadFileResponse, ref).Data == f"built-{uniq}\n".encode()
        bridge(ch, "Return", pb.gw.ReturnRequest(result=pb.gw.Result(ref=pb.gw.Ref(id=rid))), pb.gw.ReturnResponse,
               ref)
        out = solve.result(timeout=lib.scaled(300))
    finally:
        tunnel.close()
    assert peer.error is None, peer.trace()
    assert peer.transfers(), "the context never came through the tunnel:\n" + peer.trace()
    r = dict(out.ExporterResponse)
    assert r.get("image.name") == name, r
    assert gd.image_file(name, "/hello.txt") == f"hello {uniq}\n".encode()
    assert gd.image_file(name, "/built.txt") == f"built-{uniq}\n".encode()


def test_warn_reaches_the_build_status(gd, pb, ch, uniq):
    """LLBBridge.Warn is a warning of the build's job: its status streams
    carry it (/solve/{ref}/status as SolveStatus "warnings", Control.Status
    as StatusResponse.warnings)."""
    ref = f"gwwarn{uniq}"
    solve = start_gateway_solve(ch, pb, ref)
    bridge(ch, "Warn", pb.gw.WarnRequest(digest="sha256:" + "ab" * 32, level=1, short=f"mind {uniq}".encode(),
                                         detail=[b"line one"], url="https://example.invalid/w"),
           pb.gw.WarnResponse, ref)
    bridge(ch, "Return", pb.gw.ReturnRequest(), pb.gw.ReturnResponse, ref)
    solve.result(timeout=lib.scaled(60))
    status, _, body = gd.request("GET", f"/solve/{ref}/status")
    assert status == 200, body
    assert b'"warnings"' in body and f"mind {uniq}".encode() not in body  # base64 in SolveStatus JSON
    import base64
    import json
    warns = [w for line in body.decode().splitlines() if line.strip()
             for w in json.loads(line).get("status", {}).get("warnings", [])]
    assert [base64.b64decode(w["short"]).decode() for w in warns] == [f"mind {uniq}"], warns
    assert warns[0]["level"] == 1 and warns[0]["url"] == "https://example.invalid/w"
    # and Control.Status, as buildx reads it: StatusResponse.warnings
    got = [w for resp in glib.unary_stream(ch, "/moby.buildkit.v1.Control/Status", pb.control.StatusRequest(Ref=ref),
                                           pb.control.StatusResponse)
           for w in resp.warnings]
    assert [(w.short, list(w.detail), w.level) for w in got] == [(f"mind {uniq}".encode(), [b"line one"], 1)], got


def test_resolve_image_config_and_inputs(gd, pb, ch, uniq):
    import json
    ref = f"gwres{uniq}"
    solve = start_gateway_solve(ch, pb, ref)
    r = bridge(ch, "ResolveImageConfig", pb.gw.ResolveImageConfigRequest(Ref=lib.BASE_IMAGE, ResolveMode="local"),
               pb.gw.ResolveImageConfigResponse, ref)
    cfg = json.loads(r.Config)
    assert cfg["os"] == "linux" and cfg["rootfs"]["type"] == "layers", cfg
    assert r.Digest.startswith("sha256:"), r.Digest
    with pytest.raises(grpc.RpcError) as ei:
        bridge(ch, "ResolveImageConfig", pb.gw.ResolveImageConfigRequest(Ref=f"localhost/absent-{uniq}:latest",
                                                                         ResolveMode="local"),
               pb.gw.ResolveImageConfigResponse, ref)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND, ei.value.details()
    with pytest.raises(grpc.RpcError) as ei:
        bridge(ch, "ResolveImageConfig", pb.gw.ResolveImageConfigRequest(Ref="-rf", ResolveMode="local"),
               pb.gw.ResolveImageConfigResponse, ref)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value.details()
    # ResolveSourceMeta: an image's digest and config as ResolveImageConfig
    # gives them (NoConfig leaves the config out); another source comes back
    # as sent, with no metadata (what BuildKit's client does without the call)
    src = pb.ops.SourceOp(identifier="docker-image://" + lib.BASE_IMAGE)
    m = bridge(ch, "ResolveSourceMeta", pb.gw.ResolveSourceMetaRequest(Source=src, ResolveMode="local"),
               pb.gw.ResolveSourceMetaResponse, ref)
    assert m.Source.identifier == "docker-image://" + lib.BASE_IMAGE
    assert m.Image.Digest == r.Digest and json.loads(m.Image.Config) == cfg
    m = bridge(ch, "ResolveSourceMeta", pb.gw.ResolveSourceMetaRequest(
        Source=src, ResolveMode="local", Image=pb.gw.ResolveSourceImageRequest(NoConfig=True)),
        pb.gw.ResolveSourceMetaResponse, ref)
    assert m.Image.Digest == r.Digest and m.Image.Config == b""
    git = pb.ops.SourceOp(identifier="git://127.0.0.1/none.git#main", attrs={"git.keepgitdir": "true"})
    m = bridge(ch, "ResolveSourceMeta", pb.gw.ResolveSourceMetaRequest(Source=git), pb.gw.ResolveSourceMetaResponse,
               ref)
    assert m.Source == git and not m.HasField("Image") and not m.HasField("Git"), m
    with pytest.raises(grpc.RpcError) as ei:
        bridge(ch, "ResolveSourceMeta", pb.gw.ResolveSourceMetaRequest(
            Source=pb.ops.SourceOp(identifier=f"docker-image://localhost/absent-{uniq}:latest"), ResolveMode="local"),
            pb.gw.ResolveSourceMetaResponse, ref)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND, ei.value.details()
    assert dict(bridge(ch, "Inputs", pb.gw.InputsRequest(), pb.gw.InputsResponse, ref).Definitions) == {}
    bridge(ch, "Return", pb.gw.ReturnRequest(), pb.gw.ReturnResponse, ref)
    solve.result(timeout=lib.scaled(60))


def test_gateway_cache_export_reaches_the_registry(gd, pb, ch, uniq):
    """--cache-to type=registry with buildx: Control.SolveRequest.Cache goes
    with the gateway to the Dockerfile ref the client solves."""
    from session_peer import SessionPeer
    from test_grpc_solve import Tunnel
    from test_solve_e2e import Registry
    import json
    import shutil as sh
    if sh.which("docker-registry") is None:
        pytest.skip("docker-registry (Debian package docker-registry) is not installed")
    registry = Registry()
    try:
        cache_ref = f"{registry.host}/gwcache-{uniq}"
        dockerfile = f"FROM {lib.BASE_IMAGE}\nRUN echo cached-{uniq} > /c.txt\n"
        files = {"Dockerfile": dockerfile}
        peer = SessionPeer(gd.sock, {"context": files, "dockerfile": files})
        tunnel = Tunnel(ch, pb, peer)
        ref = f"gwcache{uniq}"
        try:
            cache = pb.control.CacheOptions(Exports=[pb.control.CacheOptionsEntry(
                Type="registry", Attrs={"ref": cache_ref, "mode": "max", "registry.insecure": "true"})])
            solve = start_gateway_solve(ch, pb, ref, Session=peer.uuid, Cache=cache)
            opt = {"filename": "Dockerfile", "local-sessionid:context": peer.uuid,
                   "local-sessionid:dockerfile": peer.uuid}
            rid = bridge(ch, "Solve", pb.gw.SolveRequest(Frontend="dockerfile.v0", FrontendOpt=opt,
                                                         allowResultReturn=True, allowResultArrayRef=True),
                         pb.gw.SolveResponse, ref, timeout=300).result.ref.id
            bridge(ch, "Return", pb.gw.ReturnRequest(result=pb.gw.Result(ref=pb.gw.Ref(id=rid))),
                   pb.gw.ReturnResponse, ref)
            solve.result(timeout=lib.scaled(300))
        finally:
            tunnel.close()
        status, _, body = registry.get(f"/v2/gwcache-{uniq}/tags/list")
        assert status == 200 and json.loads(body).get("tags"), f"{status} {body[:300]!r}"
    finally:
        registry.stop()


def test_read_file_over_the_message_limit(gd, pb, ch, uniq):
    ref = f"gwbig{uniq}"
    solve = start_gateway_solve(ch, pb, ref)
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(root=img, args=["sh", "-c", "dd if=/dev/zero of=/big bs=1048576 count=17 2>/dev/null; "
                                                "printf tail >> /big"])
    rid = bridge(ch, "Solve", pb.gw.SolveRequest(Definition=definition(pb, [img, run]), allowResultReturn=True,
                                                 allowResultArrayRef=True), pb.gw.SolveResponse, ref,
                 timeout=300).result.ref.id
    with pytest.raises(grpc.RpcError) as ei:
        bridge(ch, "ReadFile", pb.gw.ReadFileRequest(Ref=rid, FilePath="/big"), pb.gw.ReadFileResponse, ref)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value.details()
    # a range of it is fine, and reading past the end gives what there is
    data = bridge(ch, "ReadFile", pb.gw.ReadFileRequest(Ref=rid, FilePath="/big", Range=pb.gw.FileRange(
        Offset=17 * 1048576, Length=100)), pb.gw.ReadFileResponse, ref).Data
    assert data == b"tail"
    st = bridge(ch, "StatFile", pb.gw.StatFileRequest(Ref=rid, Path="/big"), pb.gw.StatFileResponse, ref).stat
    assert st.size == 17 * 1048576 + 4
    bridge(ch, "Return", pb.gw.ReturnRequest(), pb.gw.ReturnResponse, ref)
    solve.result(timeout=lib.scaled(60))


def test_returned_image_config_is_applied(gd, pb, ch, uniq):
    """A client-side frontend sets the image config in the result's metadata
    (containerimage.config), as BuildKit's exporter takes it."""
    import json
    ref = f"gwcfg{uniq}"
    name = f"localhost/grpc-gwcfg-{uniq}:latest"
    solve = start_gateway_solve(ch, pb, ref, [pb.control.Exporter(Type="moby", Attrs={"name": name})])
    img = llb.source("docker-image://" + lib.BASE_IMAGE)
    run = llb.exec_(root=img, args=["sh", "-c", f"echo {uniq} > /cfg.txt"])
    rid = bridge(ch, "Solve", pb.gw.SolveRequest(Definition=definition(pb, [img, run]), allowResultReturn=True,
                                                 allowResultArrayRef=True), pb.gw.SolveResponse, ref,
                 timeout=300).result.ref.id
    bad = pb.gw.Result(ref=pb.gw.Ref(id=rid), metadata={"containerimage.config": b'{"config":{"Env":["NOEQUALS"]}}'})
    with pytest.raises(grpc.RpcError) as ei:
        bridge(ch, "Return", pb.gw.ReturnRequest(result=bad), pb.gw.ReturnResponse, ref)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value.details()
    cfg = {"architecture": "amd64", "os": "linux",
           "config": {"Env": [f"MARK={uniq}"], "Cmd": ["cat", "/cfg.txt"], "Labels": {"gw": uniq}}}
    good = pb.gw.Result(ref=pb.gw.Ref(id=rid), metadata={"containerimage.config": json.dumps(cfg).encode()})
    bridge(ch, "Return", pb.gw.ReturnRequest(result=good), pb.gw.ReturnResponse, ref)
    out = solve.result(timeout=lib.scaled(300))
    assert dict(out.ExporterResponse)["containerimage.config.digest"] == "sha256:" + gd.image_id(name)
    inspect = json.loads(gd.buildah("inspect", "--type=image", name).stdout)
    c = inspect["OCIv1"]["config"]
    assert f"MARK={uniq}" in c["Env"] and c["Cmd"] == ["cat", "/cfg.txt"] and c["Labels"]["gw"] == uniq, c
    assert gd.image_file(name, "/cfg.txt") == f"{uniq}\n".encode()
