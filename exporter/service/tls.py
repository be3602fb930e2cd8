"""TLS and mTLS for the listeners: certificate files checked at start and re-loaded, without a restart, when they
change (cert-manager rewrites a Secret in place)."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from exporter.service.filestamp import FileStamp

log = logging.getLogger(__name__)

# How often, at most, a handshake looks at the files' mtime and size: a handshake flood costs no more stat calls.
RELOAD_CHECK_SECONDS = 1.0
RELOAD_OK, RELOAD_FAILED = "ok", "failed"

# The stamp of each file (None for one that cannot be stat'ed): see FileStamp.
Stamp = tuple[FileStamp | None, ...]


class TlsError(Exception):
    """A certificate, key or CA file that cannot be read or used; the message names the file."""


@dataclass(frozen=True)
class TlsFiles:
    """The certificate chain, private key and (for mTLS) client CA files of one group of listeners."""

    cert: str
    key: str
    client_ca: str = ""

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate signed by the client CA."""
        return bool(self.client_ca)

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file, in a fixed order."""
        return (self.cert, self.key, self.client_ca) if self.client_ca else (self.cert, self.key)


@dataclass(frozen=True)
class Loaded:
    """One consistent read of the files: the server SSLContext and the PEM bytes gRPC wants."""

    stamp: Stamp
    context: ssl.SSLContext
    cert_pem: bytes
    key_pem: bytes = field(repr=False)  # never in a log line
    client_ca_pem: bytes | None


def _stamp(paths: tuple[str, ...]) -> Stamp:
    return tuple(FileStamp.maybe(path) for path in paths)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsError(f"cannot read {what} file {path!r}: {exc.strerror or exc}") from exc


def _certificates(path: str, what: str) -> bytes:
    """The file's bytes, checked to hold at least one PEM certificate and nothing unparsable."""
    data = _read(path, what)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ssl.SSLError, ValueError) as exc:
        raise TlsError(f"{what} file {path!r} holds no valid PEM certificate ({_reason(exc)})") from exc
    if not probe.cert_store_stats()["x509"]:
        raise TlsError(f"{what} file {path!r} holds no PEM certificate")
    return data


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key and hang the exporter.
    raise TlsError("the key is encrypted; give it unencrypted")


def _reason(exc: BaseException) -> str:
    return "not text" if isinstance(exc, UnicodeDecodeError) else str(exc)


def check_certificate_file(path: str, what: str = "certificate") -> None:
    """Raise TlsError unless `path` holds PEM certificates."""
    _certificates(path, what)


def _load_chain(context: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except TlsError as exc:
        raise TlsError(f"cannot use key file {key!r}: {exc}") from exc
    except (ssl.SSLError, OSError) as exc:
        if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
            reason = "the key does not match the certificate"
        else:
            reason = f"not a usable PEM private key ({exc})"
        raise TlsError(f"cannot use key file {key!r} with certificate file {cert!r}: {reason}") from exc


def check_key_file(cert: str, key: str) -> None:
    """Raise TlsError unless `key` is the unencrypted PEM private key of the certificate in `cert`."""
    _read(key, "key")
    _load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key)


def load(files: TlsFiles) -> Loaded:
    """Read and check every file once; raise TlsError naming the file at fault."""
    for _ in range(3):
        before = _stamp(files.paths)
        cert_pem = _certificates(files.cert, "certificate")
        key_pem = _read(files.key, "key")
        ca_pem = _certificates(files.client_ca, "client CA") if files.client_ca else None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The chain is loaded from the paths (OpenSSL takes no bytes): the stamps before and after tell whether
        # the files changed meanwhile, in which case the bytes and the context may disagree; read them again.
        _load_chain(context, files.cert, files.key)
        if ca_pem is not None:
            context.load_verify_locations(cadata=ca_pem.decode("ascii"))
            context.verify_mode = ssl.CERT_REQUIRED
        if _stamp(files.paths) == before:
            return Loaded(before, context, cert_pem, key_pem, ca_pem)
    raise TlsError(f"the files {', '.join(files.paths)} kept changing while being read")


class CertReloader:
    """The current certificate of one group of listeners, re-loaded when its files change (looked at, at most
    once a second, by new handshakes); a re-load that fails keeps the last good certificate."""

    def __init__(
        self,
        files: TlsFiles,
        name: str,
        on_reload: Callable[[str, str], None] = lambda name, result: None,
        check_every_s: float = RELOAD_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.files = files
        self.name = name
        self.current = load(files)
        self._on_reload = on_reload
        self._check_every_s = check_every_s
        self._clock = clock
        # gRPC's fetcher runs on gRPC core threads, the SNI callback on the event loop: one lock for both.
        self._lock = threading.Lock()
        self._next_check = clock() + check_every_s
        self._failed: Stamp | None = None

    def poll(self) -> Loaded:
        """The current certificate, re-loaded first if the files changed since the last look."""
        with self._lock:
            now = self._clock()
            if now < self._next_check:
                return self.current
            self._next_check = now + self._check_every_s
            stamp = _stamp(self.files.paths)
            # A failed stamp is not retried: one warning and one count per change, not one per handshake.
            if stamp in (self.current.stamp, self._failed):
                return self.current
            try:
                self.current, self._failed = load(self.files), None
                error = None
            except TlsError as exc:
                self._failed, error = stamp, exc
            current = self.current
        if error is not None:
            log.warning(
                "%s TLS: certificate files changed but cannot be used; keeping the last good ones: %s", self.name, error
            )
            self._on_reload(self.name, RELOAD_FAILED)
        else:
            log.info("%s TLS: certificate files changed; new connections use the new certificate", self.name)
            self._on_reload(self.name, RELOAD_OK)
        return current


def server_context(reloader: CertReloader) -> ssl.SSLContext:
    """An SSLContext for an asyncio (aiohttp) server whose every new handshake uses the current certificate."""
    base = reloader.current.context

    def pick(ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        # Called early in every handshake, with server_name None when the client sends no SNI (an IP address).
        # Swapping the SSL object's context changes the certificate of this handshake only; established
        # connections keep theirs. The verify mode stays the base's, which has the same client CA setting.
        current = reloader.poll().context
        if ssl_object.context is not current:
            ssl_object.context = current

    base.sni_callback = pick
    return base


def _grpc_configuration(loaded: Loaded) -> Any:
    return grpc.ssl_server_certificate_configuration(
        [(loaded.key_pem, loaded.cert_pem)], root_certificates=loaded.client_ca_pem
    )


def grpc_credentials(reloader: CertReloader) -> grpc.ServerCredentials:
    """gRPC server credentials whose new connections use the current certificate (a client certificate signed by
    the client CA is required when there is one)."""
    served = [reloader.current]
    lock = threading.Lock()

    def fetch() -> Any:
        # gRPC calls this before every new connection's handshake; None keeps the configuration it has.
        current = reloader.poll()
        with lock:
            if current is served[0]:
                return None
            served[0] = current
        return _grpc_configuration(current)

    return grpc.dynamic_ssl_server_credentials(
        _grpc_configuration(reloader.current), fetch, require_client_authentication=reloader.files.mutual
    )
