"""llb.py — build a BuildKit LLB graph (pb.Definition) in Python.

The message classes come from podsolve's schema/ops.proto, compiled with
Debian's protoc (protobuf-compiler) the first time they are needed into a
cache directory keyed by the .proto's hash, and imported with Debian's
python3-protobuf.  Nothing generated is kept in the source tree.

    g = Graph()
    base = g.image("localhost/busybox:latest")
    ctx = g.local("context")
    tree = g.file(base, [g.copy(ctx, "/app.txt", "/srv/app.txt")], name="copy app.txt")
    out = g.exec(tree, ["sh", "-c", "wc -c /srv/app.txt > /size"], name="measure")
    definition_bytes = g.marshal(out)

Ops are serialized deterministically (fields in number order, map keys
sorted), so the same graph always has the same op digests and a
resubmission hits podsolved's cache.
"""

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PROTO = HERE.parent.parent / "schema" / "ops.proto"

# Field values with a meaning in ops.proto.
NET_SANDBOX, NET_HOST, NET_NONE = 0, 1, 2
MOUNT_BIND, MOUNT_SECRET, MOUNT_SSH, MOUNT_CACHE, MOUNT_TMPFS = 0, 1, 2, 3, 4
SCRATCH = -1          # Mount.input / FileAction.input: an empty directory
KEEP = -1             # FileActionCopy.mode / timestamps: keep the source's

_pb = None


class LLBError(Exception):
    """The graph cannot be built (bad input, or protoc/protobuf missing)."""


def _cache_root():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "podsolve-llb"


def _compile(proto, out_dir):
    """protoc --python_out: ops.proto -> out_dir/ops_pb2.py."""
    protoc = shutil.which("protoc")
    if protoc is None:
        raise LLBError("protoc not found: apt-get install protobuf-compiler")
    r = subprocess.run([protoc, f"--proto_path={proto.parent}", f"--python_out={out_dir}", proto.name],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise LLBError(f"protoc {proto}: exit status {r.returncode}: {r.stdout.strip()}")


def load_pb(proto=None):
    """The generated module of ops.proto (package pb), compiled once per
    version of the file.  `proto` defaults to $PODSOLVE_OPS_PROTO, else the
    schema/ops.proto of the tree this file is in."""
    global _pb
    if _pb is not None:
        return _pb
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        raise LLBError("the protobuf Python module is missing: apt-get install python3-protobuf") from None
    proto = Path(proto or os.environ.get("PODSOLVE_OPS_PROTO") or DEFAULT_PROTO)
    if not proto.is_file():
        raise LLBError(f"{proto}: no such file (set PODSOLVE_OPS_PROTO to podsolve's schema/ops.proto)")
    key = hashlib.sha256(proto.read_bytes()).hexdigest()[:16]
    target = _cache_root() / key / "ops_pb2.py"
    if not target.is_file():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Compile beside the target and rename: concurrent first runs
            # never import a half-written module.
            work = Path(tempfile.mkdtemp(prefix="protoc-", dir=target.parent))
        except OSError:
            target = Path(tempfile.mkdtemp(prefix="podsolve-llb-")) / "ops_pb2.py"
            work = target.parent
        _compile(proto, work)
        if work != target.parent:
            os.replace(work / "ops_pb2.py", target)
            shutil.rmtree(work, ignore_errors=True)
    spec = importlib.util.spec_from_file_location("podsolve_llb_ops_pb2", target)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    _pb = mod
    return mod


def host_platform():
    """(architecture, os) as OCI names them, for Op.platform."""
    m = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)
    return arch, "linux"


class Ref:
    """Output `index` of the op with digest `digest`: what later ops take as
    input.  `name` is the op's display name (llb.customname)."""

    def __init__(self, digest, index=0, name=""):
        self.digest, self.index, self.name = digest, index, name

    def __repr__(self):
        return f"<Ref {self.digest[:19]}…:{self.index} {self.name!r}>"


class Graph:
    """Ops added in dependency order; marshal() appends the terminal op."""

    def __init__(self, platform=None):
        self.pb = load_pb()
        self.arch, self.os = platform or host_platform()
        self.ops = []            # [(digest, bytes)]
        self.names = {}          # digest -> llb.customname
        self._seen = set()

    # ---- plumbing ------------------------------------------------------------

    def _add(self, op, name, with_platform=True):
        if with_platform:
            op.platform.Architecture = self.arch
            op.platform.OS = self.os
            op.constraints.SetInParent()   # Go clients always send an empty one
        data = op.SerializeToString(deterministic=True)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest not in self._seen:     # the same op twice is one vertex
            self._seen.add(digest)
            self.ops.append((digest, data))
        if name:
            self.names[digest] = name
        return Ref(digest, 0, name)

    def _inputs(self, op, refs):
        for r in refs:
            inp = op.inputs.add()
            inp.digest = r.digest
            inp.index = r.index

    def _chown(self, msg, owner, name_input):
        """owner: None, "UID[:GID]" or "USER[:GROUP]".  Names are resolved by
        the daemon in the /etc/passwd and /etc/group of action input
        `name_input`; without a group the daemon takes the user's (BuildKit's
        rule: the same number for an ID, the primary group for a name)."""
        if owner is None or owner == "":
            return
        user, _, group = str(owner).partition(":")
        for part, field in ((user, msg.user), (group, msg.group)):
            if part == "":
                continue
            if part.isdigit():
                field.byID = int(part)
            else:
                field.byName.name = part
                field.byName.input = name_input

    # ---- sources -------------------------------------------------------------

    def image(self, ref, resolve_mode=None, name=None):
        """docker-image://REF.  resolve_mode: None (default), "pull", "local"."""
        op = self.pb.Op()
        op.source.identifier = "docker-image://" + ref
        if resolve_mode:
            op.source.attrs["image.resolvemode"] = resolve_mode
        return self._add(op, name or f"FROM {ref}")

    def local(self, part, name=None, **attrs):
        """local://PART: a directory the client sends (a multipart tar part
        named PART, or a session's FileSync dir).  attrs: local.* source
        attrs, e.g. local.includepattern='["src/"]'."""
        op = self.pb.Op()
        op.source.identifier = "local://" + part
        for k, v in attrs.items():
            op.source.attrs[k] = v
        return self._add(op, name or f"load local {part}", with_platform=False)

    # ---- file ops --------------------------------------------------------------

    # An action is (kind, message-filler, secondary Ref or None); file()
    # turns a list of them into one FileOp of chained actions.

    def mkdir(self, path, mode=0o755, parents=True, owner=None):
        def fill(a, name_input):
            a.mkdir.path = path
            a.mkdir.mode = mode
            a.mkdir.makeParents = parents
            a.mkdir.timestamp = KEEP
            self._chown(a.mkdir.owner, owner, name_input)
        return ("mkdir", fill, None)

    def mkfile(self, path, data, mode=0o644, owner=None):
        data = data.encode() if isinstance(data, str) else bytes(data)

        def fill(a, name_input):
            a.mkfile.path = path
            a.mkfile.mode = mode
            a.mkfile.data = data
            a.mkfile.timestamp = KEEP
            self._chown(a.mkfile.owner, owner, name_input)
        return ("mkfile", fill, None)

    def rm(self, path, allow_not_found=False, allow_wildcard=False):
        def fill(a, _name_input):
            a.rm.path = path
            a.rm.allowNotFound = allow_not_found
            a.rm.allowWildcard = allow_wildcard
        return ("rm", fill, None)

    def symlink(self, target, path, owner=None):
        def fill(a, name_input):
            a.symlink.oldpath = target
            a.symlink.newpath = path
            a.symlink.timestamp = KEEP
            self._chown(a.symlink.owner, owner, name_input)
        return ("symlink", fill, None)

    def copy(self, src_ref, src, dest, owner=None, mode=KEEP, dir_contents=True, wildcard=True,
             follow_symlinks=True):
        """Copy `src` of src_ref's tree to `dest` (created with its parents),
        as Dockerfile's COPY does: a directory's contents, wildcards."""
        def fill(a, name_input):
            c = a.copy
            c.src, c.dest = src, dest
            c.mode = mode
            c.followSymlink = follow_symlinks
            c.dirCopyContents = dir_contents
            c.createDestPath = True
            c.allowWildcard = wildcard
            c.timestamp = KEEP
            self._chown(c.owner, owner, name_input)
        return ("copy", fill, src_ref)

    def file(self, base, actions, name=None):
        """One FileOp: the actions applied in order, the first to `base` (a
        Ref, or None for an empty directory), each later one to the result of
        the one before; the last one's result is the op's output 0."""
        op = self.pb.Op()
        inputs = [] if base is None else [base]
        for _, _, sec in actions:
            if sec is not None and not any(sec.digest == r.digest and sec.index == r.index for r in inputs):
                inputs.append(sec)
        self._inputs(op, inputs)
        n = len(inputs)
        for i, (_, fill, sec) in enumerate(actions):
            a = op.file.actions.add()
            a.input = (0 if base is not None else SCRATCH) if i == 0 else n + i - 1
            a.secondaryInput = SCRATCH if sec is None else next(
                j for j, r in enumerate(inputs) if r.digest == sec.digest and r.index == sec.index)
            a.output = 0 if i == len(actions) - 1 else -1
            # owner names resolve in the tree being edited
            fill(a, a.input)
        return self._add(op, name or " + ".join(k for k, _, _ in actions))

    # ---- exec --------------------------------------------------------------------

    def exec(self, root, args, env=(), cwd="/", user="", network=NET_SANDBOX, mounts=(), name=None,
             valid_exit_codes=()):
        """Run args in a container whose / is root's tree; output 0 is the
        changed root.  mounts: (dest, Ref or None, kind, options) tuples, see
        mount_*()."""
        op = self.pb.Op()
        inputs = [root]
        for _, ref, _, _ in mounts:
            if ref is not None and not any(ref.digest == r.digest and ref.index == r.index for r in inputs):
                inputs.append(ref)
        self._inputs(op, inputs)
        e = op.exec
        e.meta.args.extend(args)
        e.meta.env.extend(env)
        e.meta.cwd = cwd
        e.meta.user = user
        e.meta.validExitCodes.extend(valid_exit_codes)
        e.network = network
        m = e.mounts.add()
        m.input, m.dest, m.output = 0, "/", 0
        for dest, ref, kind, opts in mounts:
            m = e.mounts.add()
            m.dest = dest
            m.output = -1
            m.input = SCRATCH if ref is None else next(
                j for j, r in enumerate(inputs) if r.digest == ref.digest and r.index == ref.index)
            m.mountType = kind
            m.readonly = bool(opts.get("readonly"))
            if opts.get("selector"):
                m.selector = opts["selector"]
            if kind == MOUNT_CACHE:
                m.cacheOpt.ID = opts["id"]
            if kind == MOUNT_TMPFS and opts.get("size"):
                m.TmpfsOpt.size = opts["size"]
        return self._add(op, name or " ".join(args))

    # ---- the whole definition -------------------------------------------------

    def definition(self, result):
        """The pb.Definition message whose result is `result`."""
        d = self.pb.Definition()
        ops = getattr(d, "def")          # a Python keyword: no attribute syntax
        ops.extend(data for _, data in self.ops)
        term = self.pb.Op()
        self._inputs(term, [result])
        ops.append(term.SerializeToString(deterministic=True))
        for digest, name in self.names.items():
            d.metadata[digest].description["llb.customname"] = name
        return d

    def marshal(self, result):
        """The bytes of the Definition: what a multipart `definition` part
        (application/x-protobuf) carries."""
        return self.definition(result).SerializeToString(deterministic=True)


def mount_cache(dest, cache_id):
    return (dest, None, MOUNT_CACHE, {"id": cache_id})


def mount_tmpfs(dest, size=0):
    return (dest, None, MOUNT_TMPFS, {"size": size})


def mount_bind(dest, ref, selector="", readonly=True):
    return (dest, ref, MOUNT_BIND, {"selector": selector, "readonly": readonly})
