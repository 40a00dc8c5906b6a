"""With a model configured (a local OpenAI-compatible test server), the operator publishes the
deterministic report first, then adds the narrative in its own "unverified" section and records
backend, model and outcome in status.narrative — the API key appearing nowhere."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_analysis_handler import _alert
from tests.support.controlplane import Cluster
from tests.support.fake_llm import FakeLlm, answer
from tests.support.processes import operator_service, wait_for

API_KEY = "sk-test-narrative-0123456789abcdef"


class BackgroundLlm:
    """A FakeLlm serving from its own event loop in a thread, for a subprocess to call."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.llm: FakeLlm | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        async with FakeLlm("openai") as llm:
            llm.script(answer(summary="A person opened a shell in the web container."))
            self.llm = llm
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.ready.set()
            await self._stop.wait()

    def __enter__(self) -> FakeLlm:
        self.thread.start()
        assert self.ready.wait(10), "fake LLM did not start"
        assert self.llm is not None
        return self.llm

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


@pytest.fixture
def fake_llm() -> Iterator[FakeLlm]:
    with BackgroundLlm() as llm:
        yield llm


def _status(cluster: Cluster, name: str, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "falcoalert", name, "-n", namespace, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def test_narrative_is_added_after_the_report(
    control_plane: Cluster, namespace: str, fake_llm: FakeLlm, tmp_path: Path
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY, encoding="utf-8")
    env = {
        "FALCO_TRIAGE_LLM__ENABLED": "true",
        "FALCO_TRIAGE_LLM__URL": fake_llm.url,
        "FALCO_TRIAGE_LLM__MODEL": "test-model",
        "FALCO_TRIAGE_LLM__API_KEY_FILE": str(key_file),
    }
    with operator_service(control_plane.kubeconfig, env=env) as op:
        control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(_alert("llm", namespace)))
        status = wait_for(
            lambda: (s := _status(control_plane, "llm", namespace)).get("narrative") and s,
            timeout=60,
            what="status.narrative",
        )
        log = op.log(400)
    narrative = status["narrative"]
    assert narrative["outcome"] == "ok"
    assert narrative["model"] == "test-model"
    assert status["analysis"]["rule"] == "Terminal shell in container"
    report = status["report"]
    assert report.index("## References") < report.index("Model-generated narrative")
    assert "A person opened a shell in the web container." in report
    assert API_KEY not in json.dumps(status)
    assert API_KEY not in log
    assert fake_llm.requests, "the model was never called"
