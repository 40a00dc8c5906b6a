"""Suite-wide rules: with FALCO_TRIAGE_REQUIRE_INTEGRATION=1 (``make test``, CI) a skipped
integration test fails the run, so a missing control plane can never pass silently."""

from __future__ import annotations

import os

import pytest

_skipped_integration: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # NB: pytest reports an xfailed test as "skipped" with ``wasxfail`` set; those ran.
    if report.skipped and not hasattr(report, "wasxfail") and "integration" in report.keywords:
        _skipped_integration.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("FALCO_TRIAGE_REQUIRE_INTEGRATION") == "1" and _skipped_integration:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "FAILED: integration tests were skipped but are required:", red=True
            )
            for nodeid in _skipped_integration[:20]:
                reporter.write_line(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
