"""docker compose v5.5.0 (a plugin of the docker 28 CLI) against podsolved:
`docker compose build` builds through buildx bake, i.e. over `POST /grpc`
with one Control.Session shared by the services and `local-sessionid:*`
naming it (issue #13).  The images are checked in containers-storage.
"""

import functools
import re
import time

import podsolve_testlib as lib
from podsolve_testlib import BASE_IMAGE, containerfile

run = functools.partial(lib.run, timeout=240)
explain = lib.explain


def compose_project(root, uniq):
    """Two services built from the same `.` context with different build
    args and targets; the api's build reads a secret."""
    files = {
        "Dockerfile": containerfile(
            f"FROM {BASE_IMAGE} AS common",
            "ARG WHO=nobody",
            "ARG EXTRA=none",
            "COPY shared.txt /shared.txt",
            'RUN echo "$WHO/$EXTRA" > /who',
            "FROM common AS web",
            "RUN echo web-stage > /stage",
            "FROM common AS api",
            "RUN --mount=type=secret,id=apitoken sed 's/^/token:/' /run/secrets/apitoken > /stage"),
        "shared.txt": f"shared by both services {uniq}\n",
        "apitoken.txt": f"api-secret-{uniq}\n",
        "compose.yaml": "\n".join([
            "services:",
            "  web:",
            f"    image: cmp-web-{uniq}:latest",
            "    build:",
            "      context: .",
            "      target: web",
            "      args:",
            "        WHO: web",
            "        EXTRA: first",
            "  api:",
            f"    image: cmp-api-{uniq}:latest",
            "    build:",
            "      context: .",
            "      target: api",
            "      args:",
            "        - WHO=api",
            "      secrets: [apitoken]",
            "secrets:",
            "  apitoken:",
            "    file: ./apitoken.txt",
            ""]),
    }
    return lib.make_context(root, files)


def test_compose_build_two_services_sharing_the_context(daemon, go_clients, tmp_path, uniq):
    """`docker compose build` for two services with `.` as context: both
    images are in storage with their own build args and target stage (api's
    made from the secret, which the image does not keep), the shared context
    file, and compose's labels."""
    proj = compose_project(tmp_path / f"proj{uniq}", uniq)
    env = go_clients.env(daemon)
    r = run([go_clients.docker, "compose", "--progress", "plain", "build"], env, cwd=proj)
    assert r.returncode == 0, explain(r, daemon)
    for svc, who, extra, stage in (("web", "web", "first", "web-stage"),
                                   ("api", "api", "none", f"token:api-secret-{uniq}")):
        image = lib.image_ref(f"cmp-{svc}-{uniq}")
        assert daemon.image_exists(image), explain(r, daemon)
        assert daemon.image_file(image, "/who") == f"{who}/{extra}\n".encode(), svc
        assert daemon.image_file(image, "/stage") == f"{stage}\n".encode(), svc
        assert daemon.image_paths(image, "/run/secrets/apitoken") == {"/run/secrets/apitoken": False}
        assert daemon.image_file(image, "/shared.txt") == f"shared by both services {uniq}\n".encode()
        labels = daemon.image_labels(image)
        assert labels.get("com.docker.compose.service") == svc, labels
        assert labels.get("com.docker.compose.project") == f"proj{uniq}", labels
    assert daemon.image_id(lib.image_ref(f"cmp-web-{uniq}")) != daemon.image_id(lib.image_ref(f"cmp-api-{uniq}"))

    # A second build of the unchanged project is served from the cache.
    r = run([go_clients.docker, "compose", "--progress", "plain", "build"], env, cwd=proj)
    assert r.returncode == 0, explain(r, daemon)
    run_steps = [line.split()[0] for line in r.output.splitlines()
                 if line.startswith("#") and "] RUN " in line]
    assert len(run_steps) >= 4, r.output   # /who and /stage, for each service
    for step in run_steps:
        assert f"{step} CACHED" in r.output, r.output


def test_compose_up_builds_over_grpc_and_runs_on_podman(own_stack, go_clients, tmp_path, uniq):
    """`docker compose up -d` with podsolved in front of a real Podman API
    service (one storage): compose v5 builds both services through buildx
    bake over POST /grpc (answered by podsolved), then creates the network
    and runs the containers through the proxy on Podman; `down` removes
    them again."""
    stack = own_stack()
    d = stack.daemon
    project = f"cu{uniq}"
    proj = lib.make_context(tmp_path / "proj", {
        "Dockerfile": containerfile(
            f"FROM {BASE_IMAGE} AS base",
            "ARG ROLE=none",
            'RUN echo "$ROLE" > /role',
            'CMD ["sh", "-c", "trap \'exit 0\' TERM; cat /role; while true; do sleep 1; done"]'),
        "compose.yaml": "\n".join([
            "services:",
            "  web:",
            f"    image: cu-web-{uniq}:latest",
            "    build:",
            "      context: .",
            "      args: {ROLE: web}",
            "  worker:",
            f"    image: cu-worker-{uniq}:latest",
            "    build:",
            "      context: .",
            "      args: {ROLE: worker}",
            ""]),
    })
    env = go_clients.env(d)
    compose = [go_clients.docker, "compose", "-p", project]
    r = run(compose + ["--progress", "plain", "up", "-d"], env, cwd=proj, timeout=300)
    assert r.returncode == 0, explain(r, d)
    try:
        log = d.log_path.read_text(errors="replace")
        assert re.search(r" info  POST /v[\d.]+/grpc 101 .* local", log) or \
            re.search(r" info  POST /grpc 101 .* local", log), "the builds did not go over /grpc:\n" + log[-3000:]
        for role in ("web", "worker"):
            image = lib.image_ref(f"cu-{role}-{uniq}")
            assert d.image_file(image, "/role") == f"{role}\n".encode(), explain(r, d)
            # Podman itself sees the image podsolve built (one storage).
            p = stack.podman_cli("image", "inspect", "--format", "{{.Id}}", image)
            assert p.returncode == 0 and p.stdout.strip() == d.image_id(image), p.stderr

        r = run([go_clients.docker, "ps", "--filter", f"label=com.docker.compose.project={project}",
                 "--format", "{{.Names}} {{.State}}"], env)
        assert r.returncode == 0, explain(r, d)
        assert sorted(r.stdout.split("\n")[:-1]) == [f"{project}-web-1 running", f"{project}-worker-1 running"], \
            explain(r, d)
        deadline = time.monotonic() + lib.scaled(30)
        while True:
            r = run(compose + ["logs", "--no-color"], env, cwd=proj)
            if re.search(r"web-1\s+\| web$", r.stdout, re.M) and re.search(r"worker-1\s+\| worker$", r.stdout, re.M):
                break
            assert time.monotonic() < deadline, f"both services should print their role:\n{r.output}"
            time.sleep(0.5)
    finally:
        down = run(compose + ["down"], env, cwd=proj, timeout=180)
    assert down.returncode == 0, explain(down, d)
    r = run([go_clients.docker, "ps", "-a", "--filter", f"label=com.docker.compose.project={project}", "-q"], env)
    assert r.returncode == 0 and r.stdout.strip() == "", explain(r, d)


def test_compose_build_forwards_ssh_agents_to_each_service(daemon, go_clients, ssh_agent, tmp_path, uniq):
    """`build.ssh: [default]` (SSH_AUTH_SOCK: a real ssh-agent) on one
    service and `[deploy=SOCKET]` on the other, both built over compose's
    one shared session: each `RUN --mount=type=ssh` lists the agent's key."""
    proj = lib.make_context(tmp_path / f"sshproj{uniq}", {
        "Dockerfile": containerfile(
            f"FROM {BASE_IMAGE} AS base",
            "COPY agent-probe /agent-probe",
            "FROM base AS one",
            f"RUN --mount=type=ssh,required=true /agent-probe > /keys # {uniq}",
            "FROM base AS two",
            f"RUN --mount=type=ssh,id=deploy,required=true /agent-probe > /keys # {uniq}"),
        "compose.yaml": "\n".join([
            "services:",
            "  one:",
            f"    image: cmp-ssh-one-{uniq}:latest",
            "    build:",
            "      context: .",
            "      target: one",
            "      ssh: [default]",
            "  two:",
            f"    image: cmp-ssh-two-{uniq}:latest",
            "    build:",
            "      context: .",
            "      target: two",
            "      ssh:",
            f"        - deploy={ssh_agent.sock}",
            ""]),
    })
    lib.agent_probe(proj / "agent-probe")
    env = {**go_clients.env(daemon), "SSH_AUTH_SOCK": ssh_agent.sock}
    r = run([go_clients.docker, "compose", "--progress", "plain", "build"], env, cwd=proj)
    assert r.returncode == 0, explain(r, daemon)
    for svc in ("one", "two"):
        image = lib.image_ref(f"cmp-ssh-{svc}-{uniq}")
        assert daemon.image_file(image, "/keys") == f"key: {ssh_agent.comment}\nkeys: 1\n".encode(), svc
