"""The stack a user runs: `podman system service` (with runc and low
default ulimits, which this machine needs: docs anchors.md §1) on a private
socket, and podsolved in front of it with `--upstream`, both on the SAME
containers-storage, so images podsolve builds are Podman's images.  Shared by
the proxy tests and the real-client tests that end in `up`/`--load`.
"""

import os
import signal
import subprocess
import time

import podsolve_testlib as lib

CONTAINERS_CONF = """\
[containers]
# No CAP_SYS_RESOURCE here (hard RLIMIT_NOFILE 20000): podman's default
# nofile=1048576 cannot be applied by the OCI runtime.
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
cgroup_manager = "cgroupfs"
# crun 1.8.1 refuses this machine's hybrid cgroups; runc works.
runtime = "runc"
events_logger = "file"
events_logfile_path = "{tmp}/libpod-tmp/events.log"
tmp_dir = "{tmp}/libpod-tmp"

[network]
# compose creates networks: keep their files out of /etc/containers.
network_config_dir = "{tmp}/networks"
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{root}"
runroot = "{runroot}"
"""


def podman_env(tmp):
    """CONTAINERS_CONF / CONTAINERS_STORAGE_CONF / TMPDIR of a stack."""
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(tmp / "containers.conf")
    env["CONTAINERS_STORAGE_CONF"] = str(tmp / "storage.conf")
    env["TMPDIR"] = str(tmp / "tmp")
    return env


def write_podman_config(tmp, root, runroot):
    for d in ("libpod-tmp", "networks", "tmp"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    (tmp / "containers.conf").write_text(CONTAINERS_CONF.format(tmp=tmp))
    (tmp / "storage.conf").write_text(STORAGE_CONF.format(root=root, runroot=runroot))


class PodmanService:
    """`podman system service --time=0 unix://TMP/podman.sock`, stopped by PID."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.sock = tmp / "podman.sock"
        self.log_path = tmp / "podman-service.log"
        self.proc = None

    def start(self, timeout=30):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{self.sock}"],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=podman_env(self.tmp),
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + lib.scaled(timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"podman system service exited ({self.proc.returncode}):\n"
                                   f"{lib.tail(self.log_path)}")
            try:
                c = lib.UnixHTTPConnection(self.sock, timeout=2)
                c.request("GET", "/_ping")
                if c.getresponse().status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"podman system service did not answer within {timeout}s:\n{lib.tail(self.log_path)}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(lib.scaled(10))

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(lib.scaled(20))
            except subprocess.TimeoutExpired:
                self.kill()


class ProxiedDaemon(lib.Daemon):
    """podsolved sharing a Podman service's storage and configuration."""

    def base_env(self):
        env = super().base_env()
        env.update({k: v for k, v in podman_env(self.tmp).items()
                    if k in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "TMPDIR")})
        return env


class Stack:
    def __init__(self, daemon, podman):
        self.daemon = daemon
        self.podman = podman   # None with --spawn-upstream

    def podman_cli(self, *args, timeout=120):
        """Plain (not remote) podman on the stack's storage: for cleanup."""
        return subprocess.run(["podman", *args], env=podman_env(self.daemon.tmp), capture_output=True, text=True,
                              timeout=lib.scaled(timeout))


def start_stack(spawn=False, extra_args=()):
    tmp = lib.new_tmp_dir("podsolve-it-proxy-")
    args = ["--spawn-upstream", "--upstream", f"unix://{tmp}/podman.sock"] if spawn \
        else ["--upstream", f"unix://{tmp}/podman.sock"]
    d = ProxiedDaemon(tmp, args + list(extra_args))
    write_podman_config(tmp, d.root, d.runroot)
    podman = None
    try:
        d.prepare_storage()
        if not spawn:
            podman = PodmanService(tmp).start()
        d.start(timeout=60)
    except Exception:
        d.kill()
        if podman:
            podman.kill()
        d.cleanup_storage(remove_tmp=False)
        raise
    return Stack(d, podman)


def kill_leftovers(tmp):
    """End, by PID, processes still naming this stack's directory: the
    conmon of an exec session lingers (--exit-delay 300) after its
    container is removed."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if str(tmp).encode() in cmd and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def stop_stack(stack):
    """Remove containers, stop podsolved (must exit 0) and Podman, wipe."""
    d = stack.daemon
    stack.podman_cli("rm", "--all", "--force", "--time", "0")
    stack.podman_cli("network", "prune", "--force")
    status, timeout_msg = d.stop(timeout=30)
    if stack.podman:
        stack.podman.stop()
    kill_leftovers(d.tmp)
    problem = timeout_msg or (f"podsolved exited with status {status} after SIGTERM (want 0)"
                              if status != 0 else None)
    if problem:
        problem += f"\n--- log tail:\n{d.log_tail()}"
    d.cleanup_storage()
    return problem
