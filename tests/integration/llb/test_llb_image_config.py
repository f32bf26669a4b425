"""An LLB result is a filesystem; the image config a frontend wants for it
(Env, Cmd, Entrypoint, WorkingDir, User, Labels, ports, volumes, stop
signal, platform) comes as the exporter attr `containerimage.config`, an
OCI image config document.  podsolve applies it to the result before
exporting, caches the configured image like a vertex, and refuses a bad
document with a 400 naming the attr before anything runs."""

import io
import json
import tarfile

import podsolve_testlib as lib

import llbgen as llb  # noqa: E402
from llb_solve import solve_ok  # noqa: E402

BUSYBOX = "docker-image://" + lib.BASE_IMAGE

CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/app/bin:/bin", "MODE=production"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo \"hello from $MODE\""],
        "WorkingDir": "/srv/app",
        "User": "1000:1000",
        "Labels": {"org.opencontainers.image.title": "demo", "tier": "web"},
        "ExposedPorts": {"8080/tcp": {}, "9090/udp": {}},
        "Volumes": {"/data": {}},
        "StopSignal": "SIGINT",
    },
    "rootfs": {"type": "layers", "diff_ids": []},
    "history": [],
}


def graph(uniq):
    img = llb.source(BUSYBOX)
    run = llb.exec_(["sh", "-c", f"echo {uniq} > /marker"], root=img)
    return [img, run]


def solve_request(ops, exporters, ref=None):
    req = {"definition": llb.definition_json(ops), "exporters": exporters}
    if ref:
        req["ref"] = ref
    return lib.multipart({"request": json.dumps(req).encode()}, {})


def solve(daemon, ops, exporters, ref=None):
    return solve_ok(daemon, ops, exporters=exporters, ref=ref)


def response(events):
    return [e["result"] for e in events if "result" in e][-1]["exporterResponse"]


def config_vertex(events):
    states = [v for e in events for v in e.get("status", {}).get("vertexes", [])
              if v["name"] == "applying containerimage.config"]
    assert states, "no 'applying containerimage.config' vertex in the stream"
    return states[-1]


def test_image_exporter_applies_the_config_and_a_resubmission_reuses_the_image(daemon, uniq):
    name = f"localhost/llb-config-{uniq}:1"
    exporters = [{"type": "image", "attrs": {"name": name, "containerimage.config": json.dumps(CONFIG)}}]
    events = solve(daemon, graph(uniq), exporters)
    resp = response(events)
    image = daemon.image_id(name)
    assert resp["containerimage.config.digest"] == f"sha256:{image}"
    v = config_vertex(events)
    assert v.get("completed") and not v.get("cached") and not v.get("error")

    inspect = daemon.image_inspect(name)
    cfg = inspect["OCIv1"]["config"]
    # Env is the document's, not busybox's PATH added to it.
    assert cfg["Env"] == ["PATH=/app/bin:/bin", "MODE=production"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["Cmd"] == ["echo \"hello from $MODE\""]
    assert cfg["WorkingDir"] == "/srv/app"
    assert cfg["User"] == "1000:1000"
    assert cfg["Labels"] == {"org.opencontainers.image.title": "demo", "tier": "web"}
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "9090/udp"}
    assert set(cfg["Volumes"]) == {"/data"}
    assert cfg["StopSignal"] == "SIGINT"
    assert inspect["OCIv1"]["architecture"] == "amd64" and inspect["OCIv1"]["os"] == "linux"
    # The filesystem is the LLB result's.
    assert daemon.image_file(name, "/marker") == f"{uniq}\n".encode()

    again = solve(daemon, graph(uniq), exporters)
    assert config_vertex(again).get("cached")
    assert response(again)["containerimage.config.digest"] == f"sha256:{image}"
    assert daemon.image_id(name) == image


def test_fields_left_out_keep_what_the_result_had(daemon, uniq):
    name = f"localhost/llb-config-partial-{uniq}:1"
    cfg = {"config": {"Cmd": ["cat", "/marker"], "Labels": {"only": "this"}}}
    solve(daemon, graph(uniq), [{"type": "image", "attrs": {"name": name, "containerimage.config": json.dumps(cfg)}}])
    got = daemon.image_inspect(name)["OCIv1"]["config"]
    assert got["Cmd"] == ["cat", "/marker"]
    assert got["Labels"] == {"only": "this"}
    base_env = daemon.image_inspect(lib.BASE_IMAGE)["OCIv1"]["config"]["Env"]
    assert got["Env"] == base_env


def test_oci_exporter_writes_the_configured_image_into_the_archive(daemon, uniq):
    ref = f"llb-config-oci-{uniq}"
    solve(daemon, graph(uniq), [{"type": "oci", "attrs": {"containerimage.config": json.dumps(CONFIG)}}], ref=ref)
    status, _, data = daemon.request("GET", f"/solve/{ref}/outputs/0")
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        def blob(digest):
            return json.loads(t.extractfile("blobs/sha256/" + digest.split(":", 1)[1]).read())
        index = json.loads(t.extractfile("index.json").read())
        manifest = blob(index["manifests"][0]["digest"])
        cfg = blob(manifest["config"]["digest"])["config"]
    assert cfg["Env"] == CONFIG["config"]["Env"]
    assert cfg["Cmd"] == CONFIG["config"]["Cmd"]
    assert cfg["WorkingDir"] == "/srv/app" and cfg["User"] == "1000:1000"


def test_bad_image_config_is_400_naming_the_attr_and_nothing_runs(daemon, uniq):
    before = daemon.working_containers()
    cases = [
        ("image", "{not json", "not a JSON object"),
        ("image", json.dumps({"config": {"Env": ["NOEQUALS"]}}), "config.Env[0]"),
        ("image", json.dumps({"config": {"Cmd": "echo hi"}}), "config.Cmd"),
        ("oci", json.dumps({"config": {"Healthcheck": "true"}}), "config.Healthcheck"),
        ("image", json.dumps({"config": {"ExposedPorts": {"http": {}}}}), "config.ExposedPorts"),
        ("image", json.dumps({"config": {"Labels": {"a": 1}}}), "config.Labels.a"),
        ("image", json.dumps({"platform": "linux/amd64"}), "platform"),
    ]
    for i, (etype, text, word) in enumerate(cases):
        ref = f"llb-bad-config-{uniq}-{i}"
        body, ctype = solve_request(graph(f"{uniq}-{i}"), [{"type": etype, "attrs": {"containerimage.config": text}}],
                                    ref=ref)
        status, _, raw = daemon.request("POST", "/solve", body, {"Content-Type": ctype})
        assert status == 400, (text, raw)
        msg = json.loads(raw)["message"]
        assert "exporters[0].attrs.containerimage.config" in msg and word in msg, (text, msg)
        assert daemon.request("GET", f"/solve/{ref}")[0] == 404, "a job was started"
    assert daemon.working_containers() == before


def test_a_local_exporter_refuses_containerimage_config(daemon, uniq):
    body, ctype = solve_request(graph(uniq), [{"type": "local", "attrs": {"containerimage.config": "{}"}}])
    status, _, raw = daemon.request("POST", "/solve", body, {"Content-Type": ctype})
    assert status == 400
    assert "containerimage.config" in json.loads(raw)["message"]


def test_a_dockerfile_solve_refuses_containerimage_config(daemon, uniq):
    ctx = lib.tar_context({"Dockerfile": f"FROM {lib.BASE_IMAGE}\n"})
    req = {"frontend": "dockerfile.v0", "exporters": [{"type": "image", "attrs": {"containerimage.config": "{}"}}]}
    body, ctype = lib.multipart({"request": json.dumps(req).encode()}, {"context": ctx})
    status, _, raw = daemon.request("POST", "/solve", body, {"Content-Type": ctype})
    assert status == 400
    assert "containerimage.config" in json.loads(raw)["message"]
