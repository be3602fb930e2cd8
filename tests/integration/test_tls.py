"""TLS and mTLS on /metrics and both OTLP receivers, over real sockets with real clients; certificates re-loaded
while running; bad TLS settings stop the start naming the problem."""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from exporter.metrics import catalog
from exporter.service.settings import ConfigError, load_settings
from exporter.service.tls import CertReloader, TlsFiles, server_context
from tests.support.certs import CertAuthority, Issued, cert_pem, client_context, serial_of, write
from tests.support.inproc import InProcessExporter
from tests.support.otlp import request_of, sample_request_spans
from tests.support.procs import free_port, run_cli, wait_for
from tests.support.prom import total

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
BODY = request_of(sample_request_spans()[:3]).SerializeToString()
# New handshakes look at the certificate files at most once a second: a rotation shows within about that.
RELOAD_WAIT_S = 5.0


@dataclass
class Pki:
    """A test CA with a client certificate, and a second CA whose client certificate must be refused."""

    dir: Path
    ca: CertAuthority
    ca_file: Path
    client: tuple[Path, Path]
    rogue_client: tuple[Path, Path]

    def server(self, name: str, serial: int) -> tuple[Path, Path]:
        """Write a server certificate (127.0.0.1, localhost) signed by the CA; returns (cert, key) paths."""
        paths = (self.dir / f"{name}.crt", self.dir / f"{name}.key")
        self.ca.issue("server", serial, server=True).write(*paths)
        return paths


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ca, other = CertAuthority.create("test-ca"), CertAuthority.create("other-ca")
    ca.write(base / "ca.crt")
    client = (base / "client.crt", base / "client.key")
    ca.issue("client", 500, server=False).write(*client)
    rogue = (base / "rogue.crt", base / "rogue.key")
    other.issue("client", 501, server=False).write(*rogue)
    return Pki(base, ca, base / "ca.crt", client, rogue)


@pytest.fixture
def server_pki(pki: Pki, tmp_path: Path) -> Pki:
    """The module's CA and clients, with server files of this test's own."""
    return Pki(tmp_path, pki.ca, pki.ca_file, pki.client, pki.rogue_client)


@dataclass
class Running:
    """An exporter in this process on free loopback ports."""

    exporter: InProcessExporter
    web: int
    http: int
    grpc: int


@pytest.fixture
def start() -> Iterator[Any]:
    started: list[InProcessExporter] = []

    def _start(**flags: str) -> Running:
        web, http, grpc_port = free_port(), free_port(), free_port()
        settings = load_settings(
            {
                "web_listen_address": f"127.0.0.1:{web}",
                "otlp_http_listen_address": f"127.0.0.1:{http}",
                "otlp_grpc_listen_address": f"127.0.0.1:{grpc_port}",
                "gpu_enabled": False,
                "topology_mode": "static",
                "tenant_join_window_seconds": 0,
                **flags,
            }
        )
        started.append(InProcessExporter(settings))
        return Running(started[-1], web, http, grpc_port)

    yield _start
    for exporter in started:
        exporter.stop()


def peer_serial(port: int, ca: Path, client: tuple[Path, Path] | None = None, alpn: str | None = None) -> int:
    """The serial of the certificate a new TLS connection to `port` is served (no SNI: the client names an IP)."""
    context = client_context(ca, client)
    if alpn:
        context.set_alpn_protocols([alpn])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return serial_of(tls.getpeercert(binary_form=True))


def grpc_export(
    port: int, ca: Path, client: tuple[Path, Path] | None = None, metadata: tuple[tuple[str, str], ...] = ()
) -> ExportTraceServiceResponse:
    """One OTLP/gRPC export over TLS (presenting `client` when given)."""
    kwargs = (
        {} if client is None else {"certificate_chain": client[0].read_bytes(), "private_key": client[1].read_bytes()}
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes(), **kwargs)
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        call = channel.unary_unary(EXPORT, response_deserializer=ExportTraceServiceResponse.FromString)
        response: ExportTraceServiceResponse = call(BODY, timeout=10, metadata=metadata)
        return response


def scrape(url: str, verify: ssl.SSLContext | bool = True, token: str | None = None) -> str:
    """The text of /metrics."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, verify=verify, headers=headers, timeout=10)
    response.raise_for_status()
    return response.text


# --- serving over TLS and mTLS ----------------------------------------------------------------------------------


def test_metrics_over_https_and_plain_http_refused(server_pki: Pki, start: Any) -> None:
    cert, key = server_pki.server("web", 101)
    running = start(web_tls_cert_file=str(cert), web_tls_key_file=str(key))
    trusted = client_context(server_pki.ca_file)
    text = scrape(f"https://127.0.0.1:{running.web}/metrics", trusted)
    assert f"# TYPE {catalog.TLS_RELOADS.name} counter" in text
    assert httpx.get(f"https://localhost:{running.web}/healthz", verify=trusted).text == "ok\n"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{running.web}/metrics", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{running.web}/metrics", verify=ssl.create_default_context(), timeout=5)
    assert peer_serial(running.web, server_pki.ca_file) == 101
    # The OTLP receivers have their own settings: still plain here.
    assert httpx.post(f"http://127.0.0.1:{running.http}/v1/traces", content=BODY, headers=PROTOBUF).status_code == 200


def test_mtls_on_metrics_needs_a_client_certificate_of_the_ca_and_the_bearer_token(
    server_pki: Pki, start: Any, tmp_path: Path
) -> None:
    cert, key = server_pki.server("web", 102)
    token = tmp_path / "token"
    token.write_text("scrape-secret\n")
    running = start(
        web_tls_cert_file=str(cert),
        web_tls_key_file=str(key),
        web_tls_client_ca_file=str(server_pki.ca_file),
        web_bearer_token_file=str(token),
    )
    url = f"https://127.0.0.1:{running.web}/metrics"
    for refused in (client_context(server_pki.ca_file), client_context(server_pki.ca_file, server_pki.rogue_client)):
        with pytest.raises(httpx.TransportError):
            httpx.get(url, verify=refused, headers={"Authorization": "Bearer scrape-secret"}, timeout=5)
    good = client_context(server_pki.ca_file, server_pki.client)
    assert httpx.get(url, verify=good, timeout=5).status_code == 401  # the certificate alone is not enough
    text = scrape(url, good, token="scrape-secret")
    assert total(text, catalog.UNAUTHORIZED.name, {"endpoint": "metrics"}) == 1


def test_otlp_receivers_over_tls_and_mtls(server_pki: Pki, start: Any) -> None:
    cert, key = server_pki.server("otlp", 201)
    running = start(
        otlp_tls_cert_file=str(cert),
        otlp_tls_key_file=str(key),
        otlp_tls_client_ca_file=str(server_pki.ca_file),
    )
    ca, client, rogue = server_pki.ca_file, server_pki.client, server_pki.rogue_client
    url = f"https://127.0.0.1:{running.http}/v1/traces"
    ok = httpx.post(url, content=BODY, headers=PROTOBUF, verify=client_context(ca, client), timeout=10)
    assert ok.status_code == 200
    for refused in (client_context(ca), client_context(ca, rogue)):
        with pytest.raises(httpx.TransportError):
            httpx.post(url, content=BODY, headers=PROTOBUF, verify=refused, timeout=5)

    assert not grpc_export(running.grpc, ca, client).HasField("partial_success")
    for without in (None, rogue):
        with pytest.raises(grpc.RpcError) as err:
            grpc_export(running.grpc, ca, without)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails: no call reaches the server
    text = scrape(f"http://127.0.0.1:{running.web}/metrics")  # /metrics has its own (no) TLS settings
    assert total(text, catalog.SPANS_ACCEPTED.name, {"protocol": "http"}) == 3
    assert total(text, catalog.SPANS_ACCEPTED.name, {"protocol": "grpc"}) == 3


def test_otlp_grpc_over_tls_with_a_bearer_token(server_pki: Pki, start: Any, tmp_path: Path) -> None:
    cert, key = server_pki.server("otlp", 202)
    token = tmp_path / "token"
    token.write_text("send-secret\n")
    running = start(otlp_tls_cert_file=str(cert), otlp_tls_key_file=str(key), otlp_bearer_token_file=str(token))
    with pytest.raises(grpc.RpcError) as err:
        grpc_export(running.grpc, server_pki.ca_file)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    grpc_export(running.grpc, server_pki.ca_file, metadata=(("authorization", "Bearer send-secret"),))
    assert peer_serial(running.grpc, server_pki.ca_file, alpn="h2") == 202


# --- re-loading certificates without a restart ------------------------------------------------------------------


def _memory_handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> int:
    """Handshake through memory BIOs (no SNI: the client names an IP); the serial the client was served."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    sides = {
        "client": client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1"),
        "server": server.wrap_bio(s_in, s_out, server_side=True),
    }
    done: set[str] = set()
    for _ in range(10):
        for name, side in sides.items():
            if name not in done:
                try:
                    side.do_handshake()
                    done.add(name)
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if len(done) == 2:
            return serial_of(sides["client"].getpeercert(binary_form=True))
    raise AssertionError("handshake did not finish")


def test_sni_callback_runs_without_sni_and_serves_the_new_certificate(server_pki: Pki) -> None:
    cert, key = server_pki.server("web", 301)
    reloads: list[tuple[str, str]] = []
    reloader = CertReloader(TlsFiles(str(cert), str(key)), "web", lambda *a: reloads.append(a), check_every_s=0)
    context = server_context(reloader)
    pick = context.sni_callback
    assert pick is not None
    names: list[str | None] = []

    def spy(ssl_object: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        names.append(server_name)
        pick(ssl_object, server_name, ctx)  # type: ignore[arg-type]  # typeshed says str; None is what comes

    context.sni_callback = spy
    client = client_context(server_pki.ca_file)
    assert _memory_handshake(context, client) == 301
    server_pki.server("web", 302)
    assert _memory_handshake(context, client) == 302
    assert names == [None, None]  # CPython calls it with None when the client sends no SNI
    assert reloads == [("web", "ok")]


def test_rotated_certificates_serve_new_connections_and_broken_ones_keep_the_old(
    server_pki: Pki, start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    web_cert, web_key = server_pki.server("web", 401)
    otlp_cert, otlp_key = server_pki.server("otlp", 501)
    running = start(
        web_tls_cert_file=str(web_cert),
        web_tls_key_file=str(web_key),
        otlp_tls_cert_file=str(otlp_cert),
        otlp_tls_key_file=str(otlp_key),
        otlp_tls_client_ca_file=str(server_pki.ca_file),
    )
    ca, client = server_pki.ca_file, server_pki.client
    trusted = client_context(ca)
    metrics = f"https://127.0.0.1:{running.web}/metrics"

    def serials() -> tuple[int, int, int]:
        return (
            peer_serial(running.web, ca),
            peer_serial(running.http, ca, client),
            peer_serial(running.grpc, ca, client, alpn="h2"),
        )

    def reloads(listener: str, result: str) -> float:
        return total(scrape(metrics, trusted), catalog.TLS_RELOADS.name, {"listener": listener, "result": result})

    assert serials() == (401, 501, 501)
    keep_alive = httpx.Client(verify=trusted)  # a connection made before the rotation
    assert keep_alive.get(metrics).status_code == 200

    # cert-manager rewrites the Secret: a new key and serial from the same CA, no restart.
    server_pki.server("web", 402)
    server_pki.server("otlp", 502)
    wait_for(lambda: serials() == (402, 502, 502), RELOAD_WAIT_S, "the new certificates to be served")
    grpc_export(running.grpc, ca, client)
    with pytest.raises(httpx.TransportError):  # the new certificate still asks for a client certificate
        httpx.post(f"https://127.0.0.1:{running.http}/v1/traces", content=BODY, headers=PROTOBUF, verify=trusted)
    with pytest.raises(grpc.RpcError):
        grpc_export(running.grpc, ca)
    assert keep_alive.get(metrics).status_code == 200  # the established connection keeps working
    keep_alive.close()
    assert (reloads("web", "ok"), reloads("otlp", "ok")) == (1, 1)  # both OTLP receivers share one load

    # A broken rotation (a new certificate with a garbage key) is refused: the last good certificate stays.
    broken = server_pki.ca.issue("server", 403, server=True)
    write(web_cert, cert_pem(broken.cert))
    write(web_key, b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    write(otlp_key, b"garbage")

    def failures_counted() -> bool:
        serials()  # handshakes on every listener look at the files
        return (reloads("web", "failed"), reloads("otlp", "failed")) == (1, 1)

    wait_for(failures_counted, RELOAD_WAIT_S, "the failed re-loads to be counted")
    time.sleep(1.1)  # past the next look at the files: an unchanged broken file is neither re-tried nor re-logged
    assert serials() == (402, 502, 502)
    grpc_export(running.grpc, ca, client)
    assert (reloads("web", "failed"), reloads("otlp", "failed")) == (1, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and " TLS: " in r.message]
    assert len(warnings) == 2, warnings
    assert any(str(web_key) in w and "keeping the last good" in w for w in warnings)

    # Fixed files are picked up again.
    Issued(broken.key, broken.cert).write(web_cert, web_key)
    wait_for(lambda: peer_serial(running.web, ca) == 403, RELOAD_WAIT_S, "the repaired certificate")
    assert reloads("web", "ok") == 2


# --- settings ---------------------------------------------------------------------------------------------------


@pytest.fixture
def files(server_pki: Pki) -> dict[str, str]:
    cert, key = server_pki.server("server", 601)
    _, other_key = server_pki.server("other", 602)
    garbage = server_pki.dir / "garbage.pem"
    garbage.write_text("not a certificate\n")
    encrypted = server_pki.dir / "encrypted.key"
    plain = serialization.load_pem_private_key(key.read_bytes(), None)
    encrypted_pem = plain.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pass")
    )
    encrypted.write_bytes(encrypted_pem)
    return {
        "cert": str(cert),
        "key": str(key),
        "other_key": str(other_key),
        "ca": str(server_pki.ca_file),
        "missing": str(server_pki.dir / "missing.pem"),
        "garbage": str(garbage),
        "encrypted": str(encrypted),
    }


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        ({"web_tls_cert_file": "cert"}, ["web_tls_cert_file is set but web_tls_key_file is not", "--web.tls-key-file"]),
        ({"otlp_tls_key_file": "key"}, ["otlp_tls_key_file is set but otlp_tls_cert_file is not"]),
        ({"web_tls_client_ca_file": "ca"}, ["web_tls_client_ca_file", "needs TLS: set web_tls_cert_file"]),
        (
            {"otlp_tls_cert_file": "missing", "otlp_tls_key_file": "key"},
            ["otlp_tls_cert_file", "cannot read", "missing"],
        ),
        (
            {"web_tls_cert_file": "garbage", "web_tls_key_file": "key"},
            ["web_tls_cert_file", "garbage.pem", "no valid PEM"],
        ),
        (
            {"web_tls_cert_file": "cert", "web_tls_key_file": "garbage"},
            ["web_tls_key_file", "garbage.pem", "private key"],
        ),
        (
            {"web_tls_cert_file": "cert", "web_tls_key_file": "other_key"},
            ["other.key", "does not match the certificate"],
        ),
        ({"otlp_tls_cert_file": "cert", "otlp_tls_key_file": "encrypted"}, ["encrypted.key", "encrypted"]),
        (
            {"otlp_tls_cert_file": "cert", "otlp_tls_key_file": "key", "otlp_tls_client_ca_file": "missing"},
            ["otlp_tls_client_ca_file", "cannot read client CA file"],
        ),
        (
            {"web_tls_cert_file": "cert", "otlp_tls_client_ca_file": "garbage"},
            ["web_tls_key_file", "otlp_tls_client_ca_file", "2 problems"],  # every problem in one message
        ),
    ],
)
def test_bad_tls_settings_stop_the_start_naming_the_problem(
    files: dict[str, str], flags: dict[str, str], needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({name: files[which] for name, which in flags.items()})
    message = str(err.value)
    for needle in needles:
        assert needle in message, (needle, message)


def test_good_tls_settings_load(files: dict[str, str]) -> None:
    flags = {"web_tls_cert_file": "cert", "web_tls_key_file": "key", "otlp_tls_client_ca_file": "ca"}
    flags |= {"otlp_tls_cert_file": "cert", "otlp_tls_key_file": "key"}
    settings = load_settings({name: files[which] for name, which in flags.items()})
    assert settings.otlp_tls_client_ca_file == files["ca"] and settings.web_tls_client_ca_file == ""


def test_the_cli_refuses_a_certificate_without_its_key(files: dict[str, str]) -> None:
    result = run_cli("serve", "--web.tls-cert-file", files["cert"], "--web.listen-address", f"127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "web_tls_cert_file" in result.stderr and "web_tls_key_file" in result.stderr
