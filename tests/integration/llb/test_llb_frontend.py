"""The reference frontend (examples/llb-frontend) builds an image from an
app description with no Dockerfile: it emits LLB, sends it to a real
podsolved with curl, and the image has the described files, owners, modes
and run-step results; its config comes from the description through the
containerimage.config exporter attr (or, from a podsolved without that attr,
the frontend says loudly what it could not apply).  Resubmitting is fully
cached; a file the app does not copy is not even sent."""

import json
import os
import re
import stat
import subprocess
import tarfile

import pytest

import podsolve_testlib as lib

FRONTEND = lib.REPO_ROOT / "examples" / "llb-frontend" / "frontend.py"

APP_TOML = """
name = "it-app"
base = "{base}"
workdir = "/srv/app"
user = "1000:1000"
entrypoint = ["/srv/app/bin/run"]
cmd = ["--serve"]
expose = [8080, "53/udp"]

[env]
APP_MODE = "test"

[labels]
"org.example.test" = "{uniq}"

[[steps]]
mkdir = "/srv/app/data"
owner = "1000:1000"
mode = "0750"

[[steps]]
copy = "bin/"
to = "bin/"
mode = "0755"

[[steps]]
copy = "conf/app.conf"
to = "/etc/app/app.conf"
owner = "1000:100"
mode = "0640"

[[steps]]
copy = "static"
to = "/srv/app/static/"
owner = "33:33"

[[steps]]
file = "/srv/app/VERSION"
content = "2.0\\n"
mode = "0600"
owner = "1000"

[[steps]]
symlink = "/srv/app/current"
target = "/srv/app/bin"

[[steps]]
name = "record mode and uid"
run = "echo \\"$APP_MODE\\" > /srv/app/data/mode && id -u > /srv/app/data/uid"
user = "1000:1000"

[[steps]]
run = ["sh", "-c", "pwd > /cwd"]
"""

FILES = {
    "bin/run": "#!/bin/sh\necho running \"$@\"\n",
    "conf/app.conf": "port = 8080\n",
    "static/index.html": "<h1>it-app</h1>\n",
    "NOTES.txt": "not copied by any step\n",
}


def make_app(root, uniq, toml=APP_TOML, files=FILES):
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.toml").write_text(toml.format(base=lib.BASE_IMAGE, uniq=uniq))
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(0o644)  # a copy keeps the mode: not the umask of whoever runs the tests
    return root


def frontend(daemon, appdir, *args, cache_dir):
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_dir))
    return subprocess.run([str(FRONTEND), "--socket", str(daemon.sock), *args, str(appdir)],
                          capture_output=True, text=True, env=env, timeout=lib.scaled(600))


def multipart(parts):
    """[(name, content type, bytes)] -> (body, Content-Type)."""
    boundary = "frontendtest" + os.urandom(8).hex()
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\nContent-Type: {t}\r\n\r\n'
                    .encode() + data + b"\r\n" for n, t, data in parts)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def stream_vertexes(stdout):
    """Last state of every vertex in a --progress rawjson stream, by name."""
    last, order = {}, []
    for line in stdout.splitlines():
        ev = json.loads(line)
        for v in ev.get("status", {}).get("vertexes", []):
            if v["name"] not in last:
                order.append(v["name"])
            last[v["name"]] = v
    return [last[n] for n in order]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("frontend-cache")


@pytest.fixture(scope="module")
def built(daemon, tmp_path_factory, cache_dir):
    """The test app, built once for the module: (app dir, image name, process)."""
    uniq = os.urandom(4).hex()
    app = make_app(tmp_path_factory.mktemp("app"), uniq)
    name = f"localhost/it-frontend-{uniq}:latest"
    p = frontend(daemon, app, "--tag", name, cache_dir=cache_dir)
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}\ndaemon:\n{daemon.log_tail(2000)}"
    return app, name, p, uniq


def config_was_refused(p):
    return "does not take the containerimage.config exporter attr" in p.stderr


def test_app_without_dockerfile_builds_an_image_with_files_owners_and_modes(daemon, built):
    _, name, p, _ = built
    assert "image: " + name in p.stdout
    # plain progress, names from the frontend (the base and the local context
    # start together, so either may be numbered #1)
    assert re.search(r"^#\d+ \[1/10\] FROM " + re.escape(lib.BASE_IMAGE) + "$", p.stdout, re.M), p.stdout
    assert daemon.image_file(name, "/srv/app/bin/run") == FILES["bin/run"].encode()
    assert daemon.image_file(name, "/etc/app/app.conf") == b"port = 8080\n"
    assert daemon.image_file(name, "/srv/app/static/index.html") == FILES["static/index.html"].encode()
    assert daemon.image_file(name, "/srv/app/VERSION") == b"2.0\n"
    # the run steps: as user 1000, with the description's env, in the workdir
    assert daemon.image_file(name, "/srv/app/data/mode") == b"test\n"
    assert daemon.image_file(name, "/srv/app/data/uid") == b"1000\n"
    assert daemon.image_file(name, "/cwd") == b"/srv/app\n"
    st = daemon.image_stat(name, "/srv/app/data", "/srv/app/bin/run", "/etc/app/app.conf",
                           "/srv/app/static/index.html", "/srv/app/VERSION", "/srv/app/current")
    want = {  # path: (uid, gid, mode)
        "/srv/app/data": (1000, 1000, 0o750),
        "/srv/app/bin/run": (0, 0, 0o755),
        "/etc/app/app.conf": (1000, 100, 0o640),
        "/srv/app/static/index.html": (33, 33, 0o644),
        "/srv/app/VERSION": (1000, 1000, 0o600),
    }
    for path, (uid, gid, mode) in want.items():
        s = st[path]
        assert (s.st_uid, s.st_gid, stat.S_IMODE(s.st_mode)) == (uid, gid, mode), path
    assert stat.S_ISLNK(st["/srv/app/current"].st_mode)
    assert not daemon.image_has_file(name, "/srv/app/NOTES.txt")


def test_image_config_comes_from_the_description(daemon, built):
    _, name, p, uniq = built
    if config_was_refused(p):
        pytest.skip("this podsolved answers 400 for the containerimage.config exporter attr")
    cfg = daemon.image_inspect(name)["OCIv1"]["config"]
    assert "APP_MODE=test" in cfg["Env"]
    assert any(e.startswith("PATH=") for e in cfg["Env"])
    assert cfg["Entrypoint"] == ["/srv/app/bin/run"]
    assert cfg["Cmd"] == ["--serve"]
    assert cfg["WorkingDir"] == "/srv/app"
    assert cfg["User"] == "1000:1000"
    assert cfg["Labels"]["org.example.test"] == uniq
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "53/udp"}


def test_without_containerimage_config_the_frontend_warns_and_still_builds(daemon, built):
    _, name, p, _ = built
    if not config_was_refused(p):
        pytest.skip("this podsolved takes the containerimage.config exporter attr")
    assert "WARNING" in p.stderr and "NOT in the image config" in p.stderr
    for setting in ("env", "cmd", "entrypoint", "workdir", "user", "labels"):
        assert setting in p.stderr
    # the image is the base image's config plus the files
    cfg = daemon.image_inspect(name)["OCIv1"]["config"]
    base = daemon.image_inspect(lib.BASE_IMAGE)["OCIv1"]["config"]
    assert cfg.get("Cmd") == base.get("Cmd")
    assert "APP_MODE=test" not in (cfg.get("Env") or [])
    assert daemon.image_file(name, "/srv/app/data/mode") == b"test\n"


def test_resubmission_is_cached_and_only_copied_files_count(daemon, built, cache_dir, tmp_path):
    app, _, first, uniq = built
    name = f"localhost/it-frontend-cache-{uniq}:latest"
    p = frontend(daemon, app, "--tag", name, "--progress", "rawjson", cache_dir=cache_dir)
    assert p.returncode == 0, p.stderr
    vs = stream_vertexes(p.stdout)
    # 10 steps + the local source (+ the image config, when the daemon applies it)
    expected = 11 if config_was_refused(first) else 12
    assert len(vs) == expected and all(v.get("cached") for v in vs), vs
    assert json.loads(p.stdout.splitlines()[-1])["result"]["exporterResponse"]["image.name"] == name

    # The context holds just what the steps copy: NOTES.txt is not sent, so
    # changing it changes nothing.
    assert frontend(daemon, app, "--emit", str(tmp_path / "emit"), cache_dir=cache_dir).returncode == 0
    with tarfile.open(tmp_path / "emit" / "context.tar") as t:
        assert sorted(t.getnames()) == ["bin", "bin/run", "conf", "conf/app.conf", "static",
                                        "static/index.html"]
        assert all(m.uid == 0 and m.gid == 0 for m in t.getmembers())
    (app / "NOTES.txt").write_text("changed\n")
    p = frontend(daemon, app, "--tag", name, "--progress", "rawjson", cache_dir=cache_dir)
    assert p.returncode == 0 and all(v.get("cached") for v in stream_vertexes(p.stdout))

    # A copied file changes: what does not read the context stays cached.
    (app / "conf" / "app.conf").write_text("port = 9090\n")
    p = frontend(daemon, app, "--tag", name, "--progress", "rawjson", cache_dir=cache_dir)
    assert p.returncode == 0, p.stderr
    cached = {v["name"].split("] ", 1)[-1]: bool(v.get("cached")) for v in stream_vertexes(p.stdout)}
    assert cached["FROM " + lib.BASE_IMAGE] and cached["WORKDIR /srv/app"] and cached["MKDIR /srv/app/data"]
    assert not cached["load local context"] and not cached["COPY conf/app.conf /etc/app/app.conf"]
    assert not cached["record mode and uid"]
    assert daemon.image_file(name, "/etc/app/app.conf") == b"port = 9090\n"
    (app / "conf" / "app.conf").write_text("port = 8080\n")


def test_the_local_source_names_what_it_takes_so_the_daemon_ignores_the_rest(daemon, built, cache_dir, tmp_path):
    """A client that sends the whole directory (here curl with a tar of it)
    still gets a cached build when only an uncopied file changed: the
    definition's local source carries the copy paths as include patterns."""
    app, _, _, _ = built
    out = tmp_path / "emit"
    assert frontend(daemon, app, "--emit", str(out), "--output", "tar", cache_dir=cache_dir).returncode == 0
    llb = subprocess.run([str(FRONTEND), "--print-llb", str(app)], capture_output=True, text=True,
                         env=dict(os.environ, XDG_CACHE_HOME=str(cache_dir))).stdout
    assert 'key: "local.includepatterns"' in llb and r'value: "[\"bin\",\"conf/app.conf\",\"static\"]"' in llb

    def solve(note):
        (app / "NOTES.txt").write_text(note)
        whole = tmp_path / "whole.tar"
        subprocess.run(["tar", "-C", str(app), "-cf", str(whole), "."], check=True)
        body, ctype = multipart([("request", "application/json", (out / "request.json").read_bytes()),
                                 ("definition", "application/x-protobuf", (out / "definition.pb").read_bytes()),
                                 ("context", "application/x-tar", whole.read_bytes())])
        status, _, it = daemon.stream("POST", "/solve", body, {"Content-Type": ctype})
        events = list(it)
        assert status == 200 and "result" in events[-1], events[-3:]
        return {v["name"]: v for e in events for v in e.get("status", {}).get("vertexes", [])}

    solve("first\n")
    vs = solve("second: a file no step copies\n")
    assert vs["[internal] load local context"].get("cached") is True
    assert all(v.get("cached") for n, v in vs.items() if not n.startswith("exporting")), vs


def test_failing_run_step_names_its_vertex_and_exits_1(daemon, cache_dir, tmp_path, uniq):
    app = make_app(tmp_path / "failing", uniq, toml=f"""
base = "{lib.BASE_IMAGE}"
[[steps]]
file = "/marker"
content = "{uniq}"
[[steps]]
name = "this step fails"
run = "echo boom-{uniq} >&2; exit 3"
""", files={})
    p = frontend(daemon, app, cache_dir=cache_dir)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "#3 [3/3] this step fails" in p.stdout
    assert f"#3 boom-{uniq}" in p.stdout                      # its stderr, in the plain progress
    assert "#3 ERROR:" in p.stdout and "exit code: 3" in p.stderr


@pytest.mark.parametrize("toml,key", [
    ('name = "x"\n', "base"),
    ('base = "b"\n[[steps]]\ncopy = "a"\nrun = "true"\n', "steps[0]"),
    ('base = "b"\n[[steps]]\ncopy = "../outside"\nto = "/x"\n', "steps[0].copy"),
    ('base = "b"\n[[steps]]\ncopy = "missing.txt"\nto = "/x"\n', "copy missing.txt"),
    ('base = "b"\n[[steps]]\nmkdir = "relative"\n', "steps[0].mkdir"),
    ('base = "b"\n[[steps]]\nrun = "true"\nnetwork = "bridge"\n', "steps[0].network"),
    ('base = "b"\nuser = "a b"\n', "user"),
    ('base = "b"\n[[steps\n', "app.toml"),
])
def test_bad_description_is_exit_2_naming_the_key_and_sends_nothing(tmp_path, cache_dir, toml, key):
    (tmp_path / "app.toml").write_text(toml)
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_dir))
    # no daemon at this socket: a request would be a different error
    p = subprocess.run([str(FRONTEND), "--socket", str(tmp_path / "none.sock"), str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=lib.scaled(60))
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("frontend: ") and key in p.stderr, p.stderr


def test_owner_names_are_sent_as_buildkit_byname(tmp_path, cache_dir):
    (tmp_path / "app.toml").write_text(
        'base = "b"\n[[steps]]\nmkdir = "/d"\nowner = "nobody:nogroup"\n[[steps]]\nfile = "/f"\nowner = "0:5"\n')
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_dir))
    p = subprocess.run([str(FRONTEND), "--print-llb", str(tmp_path)], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    text = " ".join(p.stdout.split())
    assert 'user { byName { name: "nobody" } } group { byName { name: "nogroup" } }' in text
    assert "user { byID: 0 } group { byID: 5 }" in text
