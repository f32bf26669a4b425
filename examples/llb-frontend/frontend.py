#!/usr/bin/python3
"""frontend.py — podsolve's reference LLB frontend: builds an image from a
small app description (app.toml or app.json), with no Dockerfile anywhere.

It reads the description, turns it into a BuildKit LLB graph (llb.py),
tars the context files the description copies, and submits everything to
podsolved's POST /solve with curl as one multipart request:

    request     the SolveRequest JSON (exporters, the image config)
    definition  the marshalled pb.Definition (application/x-protobuf)
    context     a tar of the files the copy steps name (local://context)

then renders the NDJSON progress stream.  See README.md beside this file
for the description format, and api-docs/guide.md, "Writing a frontend".

    frontend.py [OPTIONS] APPDIR
"""

import argparse
import base64
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llb  # noqa: E402

DEFAULT_SOCK = "/run/podsolve/podsolve.sock"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTEXT_PART = "context"          # the local://NAME source and its multipart part
IMAGE_CONFIG_ATTR = "containerimage.config"
# The local source's include patterns, a JSON list, under the key podsolve's
# executor reads (solver/llb/local.h).  BuildKit's Go client calls the same
# list "local.includepattern" (pb.AttrIncludePatterns).
INCLUDE_ATTR = "local.includepatterns"
STEP_KINDS = ("copy", "mkdir", "file", "symlink", "run")
NETWORKS = {"sandbox": llb.NET_SANDBOX, "none": llb.NET_NONE, "host": llb.NET_HOST}

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class AppError(Exception):
    """The app description is wrong; the message names the key."""


# ---- the app description ------------------------------------------------------


def load_app(appdir, file=None):
    """The parsed description: APPDIR/app.toml, else APPDIR/app.json."""
    appdir = Path(appdir)
    if file:
        path = Path(file)
    else:
        path = next((appdir / n for n in ("app.toml", "app.json") if (appdir / n).is_file()), None)
        if path is None:
            raise AppError(f"{appdir}: no app.toml or app.json")
    try:
        if path.suffix == ".toml":
            import tomllib
            with open(path, "rb") as f:
                app = tomllib.load(f)
        else:
            with open(path, encoding="utf-8") as f:
                app = json.load(f)
    except (OSError, ValueError) as e:      # TOMLDecodeError is a ValueError
        raise AppError(f"{path}: {e}") from None
    if not isinstance(app, dict):
        raise AppError(f"{path}: the top level must be a table/object")
    return path, app


def _str_map(app, key):
    v = app.get(key, {})
    if not isinstance(v, dict) or not all(isinstance(x, (str, int, float, bool)) for x in v.values()):
        raise AppError(f"{key}: expected a table of strings")
    return {str(k): str(x) for k, x in v.items()}


def _command(v, key):
    """A string is shell form (/bin/sh -c), a list is exec form."""
    if v is None:
        return None
    if isinstance(v, str):
        return ["/bin/sh", "-c", v]
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return list(v)
    raise AppError(f"{key}: expected a string (shell form) or a list of strings")


def _mode(v, key):
    if v is None:
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.fullmatch(r"0?o?[0-7]{1,4}", v):
        return int(v.replace("o", ""), 8)
    raise AppError(f"{key}: expected an octal mode such as \"0755\"")


def _abs(v, key):
    if not isinstance(v, str) or not v.startswith("/"):
        raise AppError(f"{key}: expected an absolute path in the image")
    return v


def _owner(v, key):
    if v is None:
        return None
    v = str(v)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?", v):
        raise AppError(f"{key}: expected USER[:GROUP] (names or numeric IDs)")
    return v


def context_path(src, key):
    """A copy source as a clean path relative to the context directory."""
    if not isinstance(src, str) or not src:
        raise AppError(f"{key}: expected a path in the context directory")
    p = PurePosixPath(src.lstrip("/"))
    if ".." in p.parts:
        raise AppError(f"{key}: \"{src}\" leaves the context directory")
    rel = str(p)
    return "" if rel == "." else rel


# ---- LLB ----------------------------------------------------------------------


class Build:
    """What one description turns into: the LLB graph, its result, the
    context files to send, and the image config for the exporter."""

    def __init__(self, graph, result, context_files, image_config, name):
        self.graph, self.result, self.context_files = graph, result, context_files
        self.image_config, self.name = image_config, name


def plan(app, appdir):
    """The LLB for a description: FROM the base, a mkdir for the workdir,
    then one op per step (file steps are FileOps, run steps ExecOps)."""
    base = app.get("base")
    if not isinstance(base, str) or not base:
        raise AppError("base: the base image is required (e.g. base = \"localhost/busybox:latest\")")
    name = str(app.get("name") or Path(appdir).resolve().name)
    env = {"PATH": DEFAULT_PATH, **_str_map(app, "env")}
    workdir = app.get("workdir")
    if workdir is not None:
        _abs(workdir, "workdir")
    steps = app.get("steps", [])
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise AppError("steps: expected a list of tables ([[steps]])")
    g = llb.Graph()
    total = 1 + (workdir is not None) + len(steps)
    n = [1]

    def title(text):
        n[0] += 1
        return f"[{n[0]}/{total}] {text}"

    state = g.image(base, resolve_mode=app.get("pull") and "pull", name=f"[1/{total}] FROM {base}")
    if workdir is not None:
        state = g.file(state, [g.mkdir(workdir, 0o755, parents=True)], name=title(f"WORKDIR {workdir}"))
    context_files = [context_path(s["copy"], f"steps[{i}].copy") for i, s in enumerate(steps)
                     if isinstance(s, dict) and "copy" in s]
    context = None

    for i, s in enumerate(steps):
        where = f"steps[{i}]"
        kinds = [k for k in STEP_KINDS if k in s]
        if len(kinds) != 1:
            raise AppError(f"{where}: exactly one of {', '.join(STEP_KINDS)} (got {kinds or 'none'})")
        kind = kinds[0]
        label = s.get("name")
        if kind == "copy":
            src = context_path(s["copy"], f"{where}.copy")
            dest = s.get("to")
            if not isinstance(dest, str) or not dest:
                raise AppError(f"{where}.to: where the copy goes is required")
            if not dest.startswith("/"):
                dest = str(PurePosixPath(workdir or "/") / dest) + ("/" if dest.endswith("/") else "")
            if context is None:
                # only what the steps copy: the daemon takes nothing else
                # from the directory (and the frontend sends nothing else)
                patterns = json.dumps(sorted(set(context_files)), separators=(",", ":"))
                attrs = {} if "" in context_files else {INCLUDE_ATTR: patterns}
                context = g.local(CONTEXT_PART, name="[internal] load local context", **attrs)
            action = g.copy(context, "/" + src, dest, owner=_owner(s.get("owner"), f"{where}.owner"),
                            mode=_mode(s.get("mode"), f"{where}.mode") if "mode" in s else llb.KEEP)
            state = g.file(state, [action], name=title(label or f"COPY {s['copy']} {dest}"))
        elif kind == "mkdir":
            path = _abs(s["mkdir"], f"{where}.mkdir")
            mode = _mode(s.get("mode"), f"{where}.mode")
            state = g.file(state, [g.mkdir(path, 0o755 if mode is None else mode, parents=True,
                                           owner=_owner(s.get("owner"), f"{where}.owner"))],
                           name=title(label or f"MKDIR {path}"))
        elif kind == "file":
            path = _abs(s["file"], f"{where}.file")
            content = s.get("content", "")
            if not isinstance(content, str):
                raise AppError(f"{where}.content: expected a string")
            mode = _mode(s.get("mode"), f"{where}.mode")
            state = g.file(state, [g.mkfile(path, content, 0o644 if mode is None else mode,
                                            owner=_owner(s.get("owner"), f"{where}.owner"))],
                           name=title(label or f"FILE {path}"))
        elif kind == "symlink":
            path = _abs(s["symlink"], f"{where}.symlink")
            target = s.get("target")
            if not isinstance(target, str) or not target:
                raise AppError(f"{where}.target: the link's target is required")
            state = g.file(state, [g.symlink(target, path)], name=title(label or f"SYMLINK {path} -> {target}"))
        else:
            args = _command(s["run"], f"{where}.run")
            step_env = {**env, **_str_map(s, "env")}
            network = s.get("network", "sandbox")
            if network not in NETWORKS:
                raise AppError(f"{where}.network: one of {', '.join(NETWORKS)}")
            mounts = []
            for key in ("cache", "tmpfs"):
                if not isinstance(s.get(key, []), list):
                    raise AppError(f"{where}.{key}: expected a list of absolute paths")
            for path in s.get("cache", []):
                # one cache per app and path, kept by podsolved across builds
                mounts.append(llb.mount_cache(_abs(path, f"{where}.cache"), f"{name}:{path}"))
            for path in s.get("tmpfs", []):
                mounts.append(llb.mount_tmpfs(_abs(path, f"{where}.tmpfs")))
            cwd = s.get("workdir", workdir or "/")
            state = g.exec(state, args, env=[f"{k}={v}" for k, v in step_env.items()],
                           cwd=_abs(cwd, f"{where}.workdir"), user=_owner(s.get("user"), f"{where}.user") or "",
                           network=NETWORKS[network], mounts=mounts,
                           name=title(label or "RUN " + (s["run"] if isinstance(s["run"], str)
                                                         else json.dumps(s["run"]))))
    return Build(g, state, context_files, image_config(app, env, workdir, g), name)


def image_config(app, env, workdir, g):
    """The containerimage.config exporter attr: an OCI image config JSON as
    BuildKit's frontends hand it to the exporter (architecture, os, config).
    It is the whole config: the base image's own config is not read."""
    c = {"Env": [f"{k}={v}" for k, v in env.items()]}
    for key, field in (("entrypoint", "Entrypoint"), ("cmd", "Cmd")):
        v = _command(app.get(key), key)
        if v is not None:
            c[field] = v
    if workdir:
        c["WorkingDir"] = workdir
    if app.get("user") is not None:
        c["User"] = _owner(app["user"], "user")
    labels = _str_map(app, "labels")
    if labels:
        c["Labels"] = labels
    ports = app.get("expose", [])
    if not isinstance(ports, list):
        raise AppError("expose: expected a list of ports (8080 or \"53/udp\")")
    if ports:
        c["ExposedPorts"] = {(f"{p}/tcp" if "/" not in str(p) else str(p)): {} for p in ports}
    if app.get("stopsignal"):
        c["StopSignal"] = str(app["stopsignal"])
    return {"architecture": g.arch, "os": g.os, "config": c}


# ---- the context tar ------------------------------------------------------------


def write_context_tar(ctxdir, sources, out):
    """Tar only what the copy steps name (the frontend's own include
    patterns: podsolved hashes and stores what it is sent), with the
    directories above each source, owned by 0:0 as BuildKit's FileSync
    sends them; modes and mtimes kept (they are part of the cache key)."""
    ctxdir = Path(ctxdir)
    names = []
    for src in sources:
        if any(c in src for c in "*?["):
            found = sorted(glob.glob(src, root_dir=ctxdir))
            if not found:
                raise AppError(f"copy {src}: matches nothing in {ctxdir}")
            names += found
        elif not os.path.lexists(ctxdir / src) and src:
            raise AppError(f"copy {src}: no such file in {ctxdir}")
        else:
            names.append(src)

    def clean(ti):
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    seen = set()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        for name in names:
            parts = PurePosixPath(name).parts if name else ()
            for k in range(1, len(parts)):
                _add(t, ctxdir, PurePosixPath(*parts[:k]), seen, clean, recursive=False)
            if name:
                _add(t, ctxdir, PurePosixPath(name), seen, clean)
            else:                       # the whole context directory
                for child in sorted(os.listdir(ctxdir)):
                    _add(t, ctxdir, PurePosixPath(child), seen, clean)


def _add(t, ctxdir, rel, seen, clean, recursive=True):
    """rel and (recursive) what is below it, each entry once, in name order."""
    arc = str(rel)
    path = ctxdir / arc
    if arc not in seen:
        seen.add(arc)
        t.add(path, arcname=arc, recursive=False, filter=clean)
    if recursive and path.is_dir() and not path.is_symlink():
        for child in sorted(os.listdir(path)):
            _add(t, ctxdir, rel / child, seen, clean)


# ---- the request ------------------------------------------------------------------


def solve_request(build, output, tag, ref, no_cache, with_config):
    exporter = {"type": output, "attrs": {}}
    if output in ("image", "oci", "docker") and tag:
        exporter["attrs"]["name"] = tag
    if with_config and output in ("image", "oci", "docker"):
        exporter["attrs"][IMAGE_CONFIG_ATTR] = json.dumps(build.image_config, separators=(",", ":"))
    req = {"exporters": [exporter]}
    if ref:
        req["ref"] = ref
    if no_cache:
        req["frontendAttrs"] = {"no-cache": ""}
    return req


def write_inputs(build, req, outdir, appdir, app):
    """request.json, definition.pb and (when anything is copied)
    context.tar in outdir; returns their paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"request": outdir / "request.json", "definition": outdir / "definition.pb"}
    paths["request"].write_text(json.dumps(req, indent=1) + "\n")
    paths["definition"].write_bytes(build.graph.marshal(build.result))
    if build.context_files:
        paths[CONTEXT_PART] = outdir / "context.tar"
        write_context_tar(Path(appdir) / str(app.get("context", ".")), build.context_files, paths[CONTEXT_PART])
    return paths


def curl_argv(sock, paths, headers=True):
    """The upload; with `headers`, curl prints the response's header blocks
    (-D -) before the body, for submit() to read the status."""
    argv = ["curl", "-sS", "-N", "--unix-socket", sock] + (["-D", "-"] if headers else []) + [
            "-F", f"request=<{paths['request']}",
            "-F", f"definition=@{paths['definition']};type=application/x-protobuf"]
    if CONTEXT_PART in paths:
        argv += ["-F", f"{CONTEXT_PART}=@{paths[CONTEXT_PART]};type=application/x-tar"]
    return argv + ["http://d/solve"]


# ---- submitting and progress --------------------------------------------------------


def _ts(s):
    """RFC 3339 with nanoseconds -> seconds since the epoch (float)."""
    if not s:
        return None
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$", s)
    if not m:
        return None
    whole = datetime.strptime(m.group(1) + "+0000", "%Y-%m-%dT%H:%M:%S%z").timestamp()
    return whole + float(m.group(2) or 0)


class PlainProgress:
    """BuildKit's plain progress, more or less: `#N name`, `#N <log line>`,
    `#N DONE 1.2s` / `#N CACHED` / `#N ERROR ...`, one line per event."""

    def __init__(self, out):
        self.out = out
        self.num = {}        # digest -> N
        self.done = set()
        self.partial = {}    # (digest, stream) -> unterminated log text

    def _n(self, v):
        d = v["digest"] if isinstance(v, dict) else v
        if d not in self.num:
            self.num[d] = len(self.num) + 1
            if isinstance(v, dict):
                self.out.write(f"#{self.num[d]} {v.get('name', d)}\n")
        return self.num[d]

    def status(self, st):
        for v in st.get("vertexes", []):
            n = self._n(v)
            if v["digest"] in self.done:
                continue
            if v.get("error"):
                self.done.add(v["digest"])
                self.out.write(f"#{n} ERROR: {v['error']}\n")
            elif v.get("cached"):
                self.done.add(v["digest"])
                self.out.write(f"#{n} CACHED\n")
            elif v.get("completed"):
                self.done.add(v["digest"])
                a, b = _ts(v.get("started")), _ts(v.get("completed"))
                self.out.write(f"#{n} DONE {b - a:.1f}s\n" if a and b else f"#{n} DONE\n")
        for lg in st.get("logs", []):
            n = self._n(lg.get("vertex", "?"))
            key = (lg.get("vertex"), lg.get("stream"))
            text = self.partial.pop(key, "") + base64.b64decode(lg.get("data", "")).decode("utf-8", "replace")
            *lines, rest = text.split("\n")
            for line in lines:
                self.out.write(f"#{n} {line}\n")
            if rest:
                self.partial[key] = rest
        self.out.flush()


def submit(argv, progress, out=sys.stdout, err=sys.stderr):
    """Run curl; returns (http status, error message or None, result dict
    or None, solve ref).  Progress goes to `out` as it arrives."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    status, headers = None, {}
    # -D - puts each header block (a 100 Continue first, maybe) before the body
    while True:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(b"HTTP/"):
            status, headers = int(line.split()[1]), {}
            continue
        if line in (b"\r\n", b"\n"):
            if status is not None and status >= 200:
                break
            continue
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    ref = headers.get("podsolve-solve-ref")
    if status != 200:
        body = proc.stdout.read()
        curl_err = proc.stderr.read().decode(errors="replace").strip()
        proc.wait()
        if status is None:
            return None, f"curl: {curl_err or f'exit status {proc.returncode}'}", None, ref
        try:
            msg = json.loads(body)["message"]
        except (ValueError, KeyError, TypeError):
            msg = body.decode(errors="replace").strip()
        return status, msg, None, ref
    if progress == "plain" and ref:
        err.write(f"solve {ref} (re-attach: podsolve status {ref})\n")
    render = PlainProgress(out) if progress == "plain" else None
    result, error = None, None
    for raw in proc.stdout:
        if progress == "rawjson":
            out.write(raw.decode("utf-8", "replace"))
            out.flush()
        try:
            ev = json.loads(raw)
        except ValueError:
            continue
        if "status" in ev and render:
            render.status(ev["status"])
        elif "result" in ev:
            result = ev["result"]
        elif "error" in ev:
            error = ev["error"].get("message", "build failed")
    curl_err = proc.stderr.read().decode(errors="replace").strip()
    proc.wait()
    if result is None and error is None:
        error = f"the stream ended without a result (curl: {curl_err or f'exit status {proc.returncode}'})"
    return 200, error, result, ref


# ---- command line -------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="frontend.py", description="Build an image from an app description (app.toml / app.json) "
        "by sending LLB to podsolved's POST /solve.")
    ap.add_argument("appdir", help="directory with app.toml or app.json (and the files it copies)")
    ap.add_argument("-f", "--file", help="the description (default APPDIR/app.toml, else APPDIR/app.json)")
    ap.add_argument("--socket", default=os.environ.get("PODSOLVE_SOCK") or DEFAULT_SOCK,
                    help=f"podsolved's unix socket (default $PODSOLVE_SOCK or {DEFAULT_SOCK})")
    ap.add_argument("-t", "--tag", help="image name (default localhost/NAME:latest, NAME from the description)")
    ap.add_argument("--output", choices=["image", "oci", "docker", "tar"], default="image",
                    help="exporter: image (default) names it in podsolved's storage; oci, docker and tar "
                         "are kept in the job for download")
    ap.add_argument("--ref", help="name the solve (for podsolve status/cancel)")
    ap.add_argument("--no-cache", action="store_true", help="run every op again")
    ap.add_argument("--no-image-config", action="store_true",
                    help=f"do not send the {IMAGE_CONFIG_ATTR} exporter attr")
    ap.add_argument("--progress", choices=["plain", "rawjson", "quiet"], default="plain",
                    help="plain (default), rawjson (the NDJSON stream as it is) or quiet (the image ID only)")
    ap.add_argument("--emit", metavar="DIR",
                    help="write request.json, definition.pb and context.tar to DIR and print the curl "
                         "command instead of submitting")
    ap.add_argument("--print-llb", action="store_true", help="print the ops (protobuf text) and exit")
    return ap.parse_args(argv)


def print_llb(build, out):
    from google.protobuf import text_format
    for digest, data in build.graph.ops:
        op = build.graph.pb.Op.FromString(data)
        out.write(f"# {digest}  {build.graph.names.get(digest, '')}\n")
        out.write(text_format.MessageToString(op))
        out.write("\n")
    out.write(f"# result: {build.result.digest}\n")


def main(argv=None):
    a = parse_args(argv if argv is not None else sys.argv[1:])
    try:
        desc, app = load_app(a.appdir, a.file)
        build = plan(app, desc.parent if a.file is None else a.appdir)
    except AppError as e:
        print(f"frontend: {e}", file=sys.stderr)
        return EXIT_USAGE
    except llb.LLBError as e:
        print(f"frontend: {e}", file=sys.stderr)
        return EXIT_FAILED
    if a.print_llb:
        print_llb(build, sys.stdout)
        return EXIT_OK
    appdir = desc.parent if a.file is None else Path(a.appdir)
    default = re.sub(r"[^a-z0-9._-]+", "-", build.name.lower()).strip(".-_") or "app"
    tag = a.tag or (f"localhost/{default}:latest" if a.output != "tar" else None)
    req = solve_request(build, a.output, tag, a.ref, a.no_cache, not a.no_image_config)

    if a.emit:
        try:
            paths = write_inputs(build, req, a.emit, appdir, app)
        except AppError as e:
            print(f"frontend: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(" ".join(_shell_quote(x) for x in curl_argv("$PODSOLVE_SOCK", paths, headers=False)).replace(
            "'$PODSOLVE_SOCK'", '"$PODSOLVE_SOCK"'))
        return EXIT_OK

    if not shutil.which("curl"):
        print("frontend: curl not found (apt-get install curl)", file=sys.stderr)
        return EXIT_FAILED
    tmp = tempfile.mkdtemp(prefix="podsolve-frontend-")
    try:
        try:
            paths = write_inputs(build, req, tmp, appdir, app)
        except AppError as e:
            print(f"frontend: {e}", file=sys.stderr)
            return EXIT_USAGE
        status, error, result, ref = submit(curl_argv(a.socket, paths), a.progress)
        exp = req["exporters"][0]["attrs"]
        if status == 400 and IMAGE_CONFIG_ATTR in (error or "") and IMAGE_CONFIG_ATTR in exp:
            # An older podsolved: build anyway, and say loudly what is lost.
            print(f"frontend: WARNING: this podsolved does not take the {IMAGE_CONFIG_ATTR} exporter attr "
                  f"({error}).\nfrontend: WARNING: building without it: the image keeps the base image's "
                  "config; env, cmd, entrypoint, workdir, user, labels and expose from the description are "
                  "NOT in the image config.", file=sys.stderr)
            del exp[IMAGE_CONFIG_ATTR]
            paths["request"].write_text(json.dumps(req, indent=1) + "\n")
            status, error, result, ref = submit(curl_argv(a.socket, paths), a.progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if status != 200:
        print(f"frontend: podsolved answered {status}: {error}" if status else f"frontend: {error}",
              file=sys.stderr)
        return EXIT_FAILED
    if error:
        print(f"frontend: build failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    resp = result.get("exporterResponse", {})
    if a.progress == "quiet":
        print(resp.get("containerimage.config.digest", ""))
    elif a.progress == "plain":
        if resp.get("image.name"):
            print(f"image: {resp['image.name']}")
        if resp.get("containerimage.config.digest"):
            print(f"image ID: {resp['containerimage.config.digest']}")
        if a.output != "image" and ref:
            print(f"output: GET /solve/{ref}/outputs/0 (until the job expires)")
    return EXIT_OK


def _shell_quote(s):
    return s if re.fullmatch(r"[A-Za-z0-9_./:=@-]+", s) else "'" + s.replace("'", "'\\''") + "'"


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)    # `frontend.py ... | head` ends quietly
    sys.exit(main())
