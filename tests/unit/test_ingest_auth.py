"""Mutual TLS, as Falco's http_output uses it: a client certificate signed by the configured CA
authenticates without a token; no certificate (and no token) gets a readable 401 over TLS; a
certificate from another CA fails the handshake; a token still works for Falcosidekick on the
same listener. Certificates are made with the openssl CLI, as in the docs."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from falco_triage.ingest.server import IngestRunner, start_ingest
from falco_triage.settings import IngestSettings, Settings
from tests.unit.factories import FakeAlertStore, make_raw_event

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

TOKEN = "sidekick-token-0123456789abcdef"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(name: str, cwd: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=cwd)  # fmt: skip


def _signed(name: str, ca: str, cwd: Path, ext: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=cwd)  # fmt: skip
    (cwd / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
             cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _ca("ca", d)
    _ca("rogue-ca", d)
    _signed("server", "ca", d, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _signed("falco", "ca", d, "extendedKeyUsage=clientAuth\n")
    _signed("intruder", "rogue-ca", d, "extendedKeyUsage=clientAuth\n")
    return d


@pytest.fixture
async def runner(pki: Path) -> AsyncIterator[IngestRunner]:
    settings = Settings(
        namespace="falco-triage",
        ingest=IngestSettings(
            host="127.0.0.1",
            tls_cert_file=pki / "server.crt",
            tls_key_file=pki / "server.key",
            client_ca_file=pki / "ca.crt",
            token=SecretStr(TOKEN),
        ),
    )
    started = await start_ingest(settings, make_store=lambda t, o: FakeAlertStore(t, o), port=0)
    yield started
    await started.stop(flush_seconds=1.0)


def _client_context(pki: Path, cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        context.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
    return context


async def _post(runner: IngestRunner, context: ssl.SSLContext, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{runner.url}/v1/events", json=make_raw_event(), ssl=context, headers=headers
        ) as response,
    ):
        return response.status


async def test_client_certificate_from_the_ca_authenticates(
    runner: IngestRunner, pki: Path
) -> None:
    assert await _post(runner, _client_context(pki, "falco"), {}) == 200


async def test_no_certificate_and_no_token_is_a_readable_401(
    runner: IngestRunner, pki: Path
) -> None:
    assert await _post(runner, _client_context(pki, None), {}) == 401
    assert len(runner.queue) == 0


async def test_token_works_on_the_same_tls_listener(runner: IngestRunner, pki: Path) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert await _post(runner, _client_context(pki, None), headers) == 200


async def test_certificate_from_another_ca_fails_the_handshake(
    runner: IngestRunner, pki: Path
) -> None:
    with pytest.raises(aiohttp.ClientError):
        await _post(runner, _client_context(pki, "intruder"), {})
    assert len(runner.queue) == 0


async def test_health_works_over_https_without_a_certificate(
    runner: IngestRunner, pki: Path
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{runner.url}/healthz", ssl=_client_context(pki, None)) as response,
    ):
        assert response.status == 200
