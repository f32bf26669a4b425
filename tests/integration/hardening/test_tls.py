"""TCP with TLS, and mutual TLS like dockerd's --tlsverify: only clients
with a certificate signed by --tls-ca may use the API."""

import os
import subprocess


import podsolve_testlib as lib


_free_port = lib.free_port


def _curl(pki, port, *extra):
    r = subprocess.run(["curl", "-s", "-o", "/dev/stderr", "-w", "%{http_code}", "--cacert", str(pki / "ca.pem"),
                        *extra, f"https://127.0.0.1:{port}/_ping"], capture_output=True, text=True, timeout=lib.scaled(30))
    return r.stdout.strip(), r.stderr


def test_mutual_tls_admits_only_clients_signed_by_the_ca(spawn_daemon, pki, docker_cli):
    port = _free_port()
    d = spawn_daemon("--listen", f"tcp://127.0.0.1:{port}", "--tls-cert", str(pki / "server.pem"),
                     "--tls-key", str(pki / "server-key.pem"), "--tls-ca", str(pki / "ca.pem"), "--tls-verify")
    # the right client certificate: the API answers
    code, body = _curl(pki, port, "--cert", str(pki / "client.pem"), "--key", str(pki / "client-key.pem"))
    assert (code, body) == ("200", "OK")
    # no client certificate, or one from another CA: refused
    code, body = _curl(pki, port)
    assert code == "403" and "client certificate" in body
    code, _ = _curl(pki, port, "--cert", str(pki / "rogue.pem"), "--key", str(pki / "rogue-key.pem"))
    assert code in ("403", "000")  # refused in the handshake or by the API
    # plain HTTP on the TLS port is not served
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/_ping"],
                       capture_output=True, text=True, timeout=lib.scaled(30))
    assert r.stdout.strip() != "200"
    # the docker CLI's own mutual TLS, exactly as against dockerd
    certdir = pki / "dockercerts"
    certdir.mkdir(exist_ok=True)
    for src, dst in (("ca.pem", "ca.pem"), ("client.pem", "cert.pem"), ("client-key.pem", "key.pem")):
        (certdir / dst).write_bytes((pki / src).read_bytes())
    env = dict(os.environ, DOCKER_HOST=f"tcp://127.0.0.1:{port}", DOCKER_TLS_VERIFY="1",
               DOCKER_CERT_PATH=str(certdir))
    r = subprocess.run([docker_cli, "version", "--format", "{{.Server.Version}}"], env=env, capture_output=True,
                       text=True, timeout=lib.scaled(60))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0.1.0"
    # BuildKit mode over TLS: /session upgrades through MHD's TLS relay
    ctx = pki / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM localhost/busybox:latest\nRUN echo over-tls > /tls.txt\n")
    r = subprocess.run([docker_cli, "build", "--progress=plain", "-t", "tls-built", str(ctx)],
                       env=dict(env, DOCKER_BUILDKIT="1"), capture_output=True, text=True, timeout=lib.scaled(120))
    assert r.returncode == 0, r.stderr[-2000:]
    assert d.image_file("docker.io/library/tls-built:latest", "/tls.txt") == b"over-tls\n"
    # and the unix socket stays plain
    st, _, _ = d.request("GET", "/_ping")
    assert st == 200


def test_tls_without_verify_serves_any_client(spawn_daemon, pki):
    port = _free_port()
    spawn_daemon("--listen", f"tcp://127.0.0.1:{port}", "--tls-cert", str(pki / "server.pem"),
                 "--tls-key", str(pki / "server-key.pem"))
    assert _curl(pki, port) == ("200", "OK")
