"""Bearer-token authentication for the OTLP receivers and /metrics, from token files re-read when they change."""

from __future__ import annotations

import hmac
import logging
import threading

from exporter.service.filestamp import FileStamp

log = logging.getLogger(__name__)


class TokenFile:
    """The token in a file (surrounding whitespace ignored), re-read whenever the file changes (its inode, mtime or
    size), so a rotated Kubernetes Secret takes effect without a restart."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: FileStamp | None = None
        self._token = b""
        self._load()

    def _load(self) -> None:
        try:
            stamp = FileStamp.of(self.path)
        except OSError as exc:
            if self._stamp is not None:
                log.warning("token file %s unreadable (%s); keeping the last token", self.path, exc.strerror)
                return
            raise
        if stamp == self._stamp:
            return
        with open(self.path, "rb") as f:
            token = f.read().strip()
        if not token:
            log.error("token file %s is empty: every request will be refused", self.path)
        elif self._stamp is not None:
            log.info("token file %s changed: new token in effect", self.path)
        self._token, self._stamp = token, stamp

    def allows(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header value carries the current token (compared in constant time)."""
        with self._lock:
            self._load()
            token = self._token
        if not token or not authorization:
            return False
        scheme, _, given = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)
