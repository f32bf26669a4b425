"""The systems under test, each set up in a private directory.

Nothing here touches the machine's default storage (/var/lib/containers,
/var/lib/docker, /var/lib/containerd) or /etc: every daemon gets its own
root, run root, config files and sockets under the bench directory, and is
stopped by the PID we started it with.

* podsolved     our daemon, built from this tree
* Podman        ``podman system service`` (runtime=runc, see anchors.md §1)
* Docker Engine containerd + dockerd 20.10 from Debian's docker.io package,
                extracted with dpkg -x (scripts/get-docker-cli), overlay2,
                iptables off, default bridge (BuildKit's RUN needs it)
* buildah       no daemon: ``buildah build`` with its own storage
* buildkitd     BuildKit v0.32.2 (scripts/get-go-clients --only buildkitd):
                OCI worker, runc, overlayfs snapshotter, host network, its
                own root; it has no local image store to build FROM, so the
                base image comes from a loopback docker-registry
                (``LoopbackRegistry``) that buildkitd.toml makes a mirror of
                ``localhost`` (the Dockerfiles stay ``FROM localhost/busybox``)
"""

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import time

from .util import BenchError, log, run_checked


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=5):
        super().__init__("d", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def http_get(sock_path, path, timeout=5):
    c = UnixHTTPConnection(sock_path, timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_ping(sock_path, proc, what, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode} during start-up")
        try:
            if http_get(sock_path, "/_ping", 2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"{what} did not answer /_ping on {sock_path} within {timeout} s")


def stop_pid(proc, what, timeout=30):
    """SIGTERM the process we started, wait, SIGKILL if it does not go."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"{what} (pid {proc.pid}) ignored SIGTERM for {timeout} s; SIGKILL")
        proc.kill()
        proc.wait(10)


def pids_mentioning(text):
    """PIDs whose command line contains ``text`` (our private bench dir)."""
    found = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(d))
        except OSError:
            pass
    return found


class Daemon:
    name = "?"

    def __init__(self, top):
        self.top = top                      # the bench directory
        self.dir = os.path.join(top, self.key)
        self.procs = []                     # [(what, Popen)] in start order
        os.makedirs(self.dir, exist_ok=True)

    @property
    def sock(self):
        return os.path.join(self.dir, "api.sock")

    def measured_pids(self):
        """{process name: pid} whose memory is reported for this system."""
        return {what: p.pid for what, p in self.procs}

    def _spawn(self, what, argv, env, logname):
        lf = open(os.path.join(self.dir, logname), "ab")
        p = subprocess.Popen(argv, env=env, stdout=lf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        lf.close()
        self.procs.append((what, p))
        log(f"started {what} pid {p.pid}")
        return p

    def ping_and_version(self):
        http_get(self.sock, "/_ping")
        http_get(self.sock, "/v1.41/version")

    def stop(self):
        for what, p in reversed(self.procs):
            stop_pid(p, what)
            log(f"stopped {what} pid {p.pid}")
        self.procs = []


def base_env(top):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOCKER_", "CONTAINERS_", "BUILDAH_", "CONTAINER_"))}
    env["TMPDIR"] = os.path.join(top, "tmp")
    os.makedirs(env["TMPDIR"], exist_ok=True)
    return env


_HELP = {}


def has_flag(binary, flag):
    """Whether `binary --help` lists `flag` (a commit measured with --commit
    may predate it)."""
    if binary not in _HELP:
        _HELP[binary] = subprocess.run([binary, "--help"], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT).stdout.decode(errors="replace")
    return flag in _HELP[binary]


class Podsolved(Daemon):
    key = "podsolve"
    name = "podsolve"

    def __init__(self, top, binary, upstream=None):
        super().__init__(top)
        self.binary = binary
        self.upstream = upstream            # Podman socket to proxy to, if supported
        self.root = os.path.join(self.dir, "root")
        self.runroot = os.path.join(self.dir, "runroot")
        self.isolation = None

    def storage_args(self):
        return ["--root", self.root, "--runroot", self.runroot, "--storage-driver", "overlay"]

    @property
    def buildkit_sock(self):
        """The socket of --buildkit-listen (start(buildkit_listen=True))."""
        return os.path.join(self.dir, "buildkitd.sock")

    def start(self, log_level="info", extra=(), buildkit_listen=False):
        if buildkit_listen:
            extra = [*extra, "--buildkit-listen", "unix://" + self.buildkit_sock]
        # LLB execs on the host network, as buildkitd's --oci-worker-net=host
        # (and as podsolved's buildah-dialect builds always run): the same
        # network setup on both sides, no per-exec bridge on one only.
        if has_flag(self.binary, "--sandbox-network"):
            extra = [*extra, "--sandbox-network", "host"]
        argv = [self.binary, "--listen", "unix://" + self.sock, *self.storage_args(),
                "--state-dir", os.path.join(self.dir, "state"), "--log-level", log_level, *extra]
        if self.upstream:
            argv += ["--upstream", "unix://" + self.upstream]
        p = self._spawn("podsolved", argv, base_env(self.top), "podsolved.log")
        wait_ping(self.sock, p, "podsolved")
        with open(os.path.join(self.dir, "podsolved.log"), errors="replace") as f:
            m = re.search(r"isolation: (.*)", f.read())
        self.isolation = m.group(1).strip() if m else "oci (default runtime)"


class PodmanService(Daemon):
    key = "podman"
    name = "Podman"

    def __init__(self, top):
        super().__init__(top)
        self.root = os.path.join(self.dir, "storage")
        self.runroot = os.path.join(self.dir, "runroot")
        libpod_tmp = os.path.join(self.dir, "libpod-tmp")
        os.makedirs(libpod_tmp, exist_ok=True)
        # anchors.md §1, config C: runtime=runc (crun refuses hybrid cgroups),
        # ulimits the OCI runtime can apply without CAP_SYS_RESOURCE.
        with open(os.path.join(self.dir, "containers.conf"), "w") as f:
            f.write(f"""[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
events_logfile_path = "{libpod_tmp}/events.log"
tmp_dir = "{libpod_tmp}"
""")
        with open(os.path.join(self.dir, "storage.conf"), "w") as f:
            f.write(f"""[storage]
driver = "overlay"
graphroot = "{self.root}"
runroot = "{self.runroot}"
""")

    def storage_args(self):
        return ["--root", self.root, "--runroot", self.runroot, "--storage-driver", "overlay"]

    def env(self):
        env = base_env(self.top)
        env["CONTAINERS_CONF"] = os.path.join(self.dir, "containers.conf")
        env["CONTAINERS_STORAGE_CONF"] = os.path.join(self.dir, "storage.conf")
        return env

    def start(self):
        p = self._spawn("podman service",
                        ["podman", "system", "service", "--time=0", "unix://" + self.sock],
                        self.env(), "podman.log")
        wait_ping(self.sock, p, "podman system service")


class DockerEngine(Daemon):
    key = "docker"
    name = "Docker Engine"

    def __init__(self, top, docker_dir):
        super().__init__(top)
        self.docker_dir = docker_dir        # dpkg -x of docker.io
        self.cli = os.path.join(docker_dir, "usr/bin/docker")
        self.dockerd = os.path.join(docker_dir, "usr/sbin/dockerd")
        self.ctrd_sock = os.path.join(self.dir, "containerd.sock")
        self.bin = os.path.join(self.dir, "bin")
        self.bridge_existed = os.path.exists("/sys/class/net/docker0")
        os.makedirs(self.bin, exist_ok=True)
        # The packaged docker-init symlink dangles; dockerd finds these on PATH.
        for name, target in (("docker-init", shutil.which("tini-static") or "/usr/bin/tini-static"),
                             ("docker-proxy", os.path.join(docker_dir, "usr/sbin/docker-proxy"))):
            link = os.path.join(self.bin, name)
            if not os.path.lexists(link):
                os.symlink(target, link)
        d = self.dir
        with open(os.path.join(d, "containerd.toml"), "w") as f:
            f.write(f"""version = 2
root = "{d}/containerd-root"
state = "{d}/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.ctrd_sock}"
[ttrpc]
  address = ""
[debug]
  address = ""
  level = "warn"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/containerd-opt"
""")
        # Without deprecated-key-path, dockerd 20.10 writes /etc/docker/key.json.
        with open(os.path.join(d, "daemon.json"), "w") as f:
            f.write(f'{{"deprecated-key-path": "{d}/key.json"}}\n')

    def env(self):
        env = base_env(self.top)
        env["PATH"] = self.bin + ":/usr/sbin:/usr/bin:/sbin:/bin"
        return env

    def start(self):
        if self.bridge_existed:
            raise BenchError("a docker0 bridge already exists (another dockerd is running?); "
                             "refusing to share it. Stop that dockerd or run with --no-docker.")
        d = self.dir
        c = self._spawn("containerd", ["containerd", "--config", os.path.join(d, "containerd.toml")],
                        self.env(), "containerd.log")
        deadline = time.monotonic() + 30
        while not os.path.exists(self.ctrd_sock):
            if c.poll() is not None or time.monotonic() > deadline:
                raise BenchError("containerd did not create its socket (see containerd.log)")
            time.sleep(0.05)
        p = self._spawn("dockerd", [
            self.dockerd, "--config-file", os.path.join(d, "daemon.json"),
            "--containerd", self.ctrd_sock, "--storage-driver=overlay2",
            "--iptables=false", "--ip6tables=false",
            "--host", "unix://" + self.sock, "--data-root", os.path.join(d, "root"),
            "--exec-root", os.path.join(d, "exec"), "--pidfile", os.path.join(d, "dockerd.pid"),
        ], self.env(), "dockerd.log")
        wait_ping(self.sock, p, "dockerd")

    def cli_env(self, sock=None, buildkit=False):
        env = base_env(self.top)
        env["DOCKER_HOST"] = "unix://" + (sock or self.sock)
        env["DOCKER_CONFIG"] = os.path.join(self.top, "docker-config")
        env["DOCKER_BUILDKIT"] = "1" if buildkit else "0"
        return env

    def load(self, archive):
        run_checked([self.cli, "load", "-q", "-i", archive], env=self.cli_env(), what="docker load")

    def stop(self):
        super().stop()
        # containerd-shim processes started by *our* containerd carry its address.
        for pid in pids_mentioning(self.ctrd_sock):
            log(f"stopping leftover shim pid {pid}")
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if not self.bridge_existed and os.path.exists("/sys/class/net/docker0"):
            subprocess.run(["ip", "link", "del", "docker0"], check=False)
            log("deleted the docker0 bridge our dockerd created")


class Buildah:
    """Raw ``buildah build``: no daemon, its own storage."""
    key = "buildah"
    name = "buildah"

    def __init__(self, top):
        self.top = top
        self.dir = os.path.join(top, self.key)
        self.root = os.path.join(self.dir, "root")
        self.runroot = os.path.join(self.dir, "runroot")
        os.makedirs(self.dir, exist_ok=True)

    def storage_args(self):
        return ["--root", self.root, "--runroot", self.runroot, "--storage-driver", "overlay"]


class LoopbackRegistry:
    """Debian's docker-registry (distribution 2.8) on 127.0.0.1:PORT, plain
    HTTP, storage in DIR: serves the bench's base image to buildkitd, which
    has no local image store to build FROM.  Started and stopped by PID."""
    name = "registry"

    def __init__(self, top):
        self.dir = os.path.join(top, "registry")
        os.makedirs(self.dir, exist_ok=True)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.host = f"127.0.0.1:{self.port}"
        self.proc = None
        with open(os.path.join(self.dir, "config.yml"), "w") as f:
            f.write(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {self.dir}/data
http:
  addr: {self.host}
""")

    def start(self):
        lf = open(os.path.join(self.dir, "registry.log"), "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", os.path.join(self.dir, "config.yml")],
                                     stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        lf.close()
        log(f"started docker-registry pid {self.proc.pid} on {self.host}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"docker-registry exited with status {self.proc.returncode} (see {self.dir}/registry.log)")
            try:
                c = http.client.HTTPConnection(self.host, timeout=2)
                c.request("GET", "/v2/")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                c.close()
            time.sleep(0.05)
        raise BenchError(f"docker-registry did not answer on {self.host} within 30 s")

    def stop(self):
        stop_pid(self.proc, "docker-registry")
        if self.proc:
            log(f"stopped docker-registry pid {self.proc.pid}")
        self.proc = None


class BuildKitd(Daemon):
    """buildkitd v0.32.2, OCI worker (runc, overlayfs), in a private root.

    ``registry``: the LoopbackRegistry holding the base image; buildkitd.toml
    makes it the (plain-HTTP) mirror of the registry host ``localhost``, so
    ``FROM localhost/busybox:latest`` resolves to the same image ID the
    other systems have in their stores."""
    key = "buildkitd"
    name = "buildkitd"

    def __init__(self, top, binary, buildctl, registry, key=None):
        if key:
            self.key = key
        super().__init__(top)
        self.binary = binary
        self.buildctl = buildctl
        self.root = os.path.join(self.dir, "root")
        self.config = os.path.join(self.dir, "buildkitd.toml")
        with open(self.config, "w") as f:
            # Only the registry here: everything else is on the command line.
            f.write(f"""# bench/run: the loopback registry holding the base image is the
# (plain HTTP) mirror of the registry host `localhost`
[registry."localhost"]
  mirrors = ["{registry.host}"]
[registry."{registry.host}"]
  http = true
""")

    @property
    def sock(self):
        return os.path.join(self.dir, "buildkitd.sock")

    @property
    def addr(self):
        return "unix://" + self.sock

    def argv(self):
        return [self.binary, "--config", self.config, "--root", self.root, "--addr", self.addr,
                "--oci-worker=true", "--containerd-worker=false", "--oci-worker-snapshotter=overlayfs",
                "--oci-worker-binary=/usr/sbin/runc", "--oci-worker-net=host"]

    def start(self):
        env = base_env(self.top)
        p = self._spawn("buildkitd", self.argv(), env, "buildkitd.log")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise BenchError(f"buildkitd exited with status {p.returncode} during start-up "
                                 f"(see {self.dir}/buildkitd.log)")
            if os.path.exists(self.sock) and subprocess.run(
                    [self.buildctl, "--addr", self.addr, "debug", "workers"], env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30).returncode == 0:
                return
            time.sleep(0.1)
        raise BenchError(f"buildkitd did not answer `buildctl debug workers` within 90 s")

    def ping_and_version(self):
        run_checked([self.buildctl, "--addr", self.addr, "debug", "workers"], "buildctl debug workers",
                    env=base_env(self.top))

    def stop(self):
        super().stop()
        # runc containers of a build that was cut short carry our root in their argv
        for pid in pids_mentioning(self.root):
            log(f"stopping leftover buildkitd child pid {pid}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        unmount_under(self.dir)


def unmount_under(top):
    """Unmount whatever the daemons left mounted under our directory."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == top or mp.startswith(top + "/"):
                mounts.append(mp)
    for mp in sorted(set(mounts), key=len, reverse=True):
        if subprocess.run(["umount", mp], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)
    return len(set(mounts))
