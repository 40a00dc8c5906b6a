"""kopf is configured from our settings: bounded concurrency, bookkeeping under our prefix."""

from __future__ import annotations

from collections.abc import Iterator

import kopf
import pytest

from falco_triage.handlers import state
from falco_triage.handlers.startup import KOPF_PREFIX, configure
from falco_triage.settings import Settings


@pytest.fixture
def settings() -> Iterator[Settings]:
    chosen = Settings.model_validate({"operator": {"max_concurrent_alerts": 7}})
    state.configure(chosen)
    yield chosen
    state.configure(Settings())


def test_workers_are_bounded_by_the_setting(settings: Settings) -> None:
    ours = kopf.OperatorSettings()
    configure(settings=ours)
    assert ours.queueing.worker_limit == 7
    assert ours.queueing.idle_timeout < kopf.OperatorSettings().queueing.idle_timeout
    assert ours.peering.lifetime == settings.operator.peering_lifetime_seconds
    assert ours.persistence.finalizer == "falcotriage.io/finalizer"
    assert KOPF_PREFIX == "kopf.falcotriage.io"


def test_the_default_bound_is_set() -> None:
    assert Settings().operator.max_concurrent_alerts == 64
    with pytest.raises(ValueError, match="max_concurrent_alerts"):
        Settings.model_validate({"operator": {"max_concurrent_alerts": 0}})
