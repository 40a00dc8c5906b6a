"""Who may post events: a bearer token, a client certificate (mTLS), or both.

Falcosidekick can send custom headers, so it authenticates with ``Authorization: Bearer …``;
Falco's own ``http_output`` cannot add headers but can present a client certificate, so it
authenticates with mTLS. A request is authenticated if it carries a valid token **or** arrived
over a connection whose client certificate was verified against ``client_ca_file``.

The TLS layer asks for a certificate but does not demand one (``CERT_OPTIONAL``): a client
without one still reaches HTTP and gets a 401 it can read, and kubelet probes of ``/healthz``
work over HTTPS. A certificate that *is* presented and does not verify fails the handshake.

The token file (a mounted Secret) is re-read when it changes, so a rotated Secret takes effect
without a restart; several tokens, one per line, are all accepted while a rotation is in flight.
"""

from __future__ import annotations

import hmac
import logging
import ssl
import time
from pathlib import Path

from falco_triage.settings import IngestSettings

log = logging.getLogger(__name__)

_RELOAD_CHECK_SECONDS = 5.0  # how often the token file's mtime is looked at
_MIN_TOKEN_CHARS = 16


class AuthConfigError(ValueError):
    """The settings leave the receiver open without saying so explicitly."""


class Authenticator:
    def __init__(self, settings: IngestSettings) -> None:
        self.disabled = settings.auth_disabled
        self.mtls = settings.client_ca_file is not None
        self._token_file = settings.token_file
        self._static = [settings.token.get_secret_value()] if settings.token else []
        self._tokens: list[bytes] = []
        self._mtime: float | None = None
        self._checked = 0.0
        self._load_tokens()
        if self.disabled:
            log.warning(
                "AUTHENTICATION IS DISABLED (ingest.auth_disabled=true): anyone who can reach "
                "port %d can create FalcoAlerts; use only for local testing",
                settings.port,
            )
        elif not self._tokens and not self.mtls:
            raise AuthConfigError(
                "the receiver needs a bearer token (ingest.token_file or ingest.token) or a "
                "client CA for mTLS (ingest.client_ca_file); set ingest.auth_disabled=true to "
                "run it unauthenticated on purpose"
            )
        if self._tokens and settings.tls_cert_file is None:
            log.info("bearer tokens are accepted over plain HTTP; terminate TLS in front of it")

    @property
    def has_tokens(self) -> bool:
        return bool(self._tokens)

    def check(self, authorization: str | None, peer_certificate: object) -> bool:
        """True if the request may post events."""
        if self.disabled:
            return True
        if self.mtls and peer_certificate:
            return True
        if not authorization:
            return False
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return False
        self._maybe_reload()
        candidate = given.strip().encode()
        # NB: compare against every token (no early exit) so timing reveals nothing.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(candidate, token)
        return matched

    def _maybe_reload(self) -> None:
        if self._token_file is None:
            return
        now = time.monotonic()
        if now - self._checked < _RELOAD_CHECK_SECONDS:
            return
        self._checked = now
        try:
            mtime = self._token_file.stat().st_mtime
        except OSError as exc:
            log.error(
                "cannot read token file %s: %s; keeping the tokens loaded", self._token_file, exc
            )
            return
        if mtime != self._mtime:
            self._load_tokens()

    def _load_tokens(self) -> None:
        tokens = list(self._static)
        if self._token_file is not None:
            try:
                self._mtime = self._token_file.stat().st_mtime
                text = self._token_file.read_text(encoding="utf-8")
            except OSError as exc:
                if not self._tokens:
                    raise AuthConfigError(
                        f"cannot read token file {self._token_file}: {exc}"
                    ) from exc
                log.error(
                    "cannot re-read token file %s: %s; keeping old tokens", self._token_file, exc
                )
                return
            tokens += [line.strip() for line in text.splitlines() if line.strip()]
            if self._tokens:
                log.info("token file %s changed; %d token(s) loaded", self._token_file, len(tokens))
        for token in tokens:
            if len(token) < _MIN_TOKEN_CHARS:
                log.warning("a bearer token is shorter than %d characters", _MIN_TOKEN_CHARS)
        self._tokens = [token.encode() for token in tokens]


def server_ssl_context(settings: IngestSettings) -> ssl.SSLContext | None:
    """TLS for the receiver, asking for (not requiring) client certificates if a CA is set."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(_path(settings.tls_cert_file), _path(settings.tls_key_file))
    if settings.client_ca_file is not None:
        context.load_verify_locations(cafile=_path(settings.client_ca_file))
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _path(path: Path) -> str:
    return str(path.expanduser())
