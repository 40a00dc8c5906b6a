"""Fingerprints and alert names: deterministic (pinned values, so an accidental change that
would split existing alerts fails here), independent of everything that changes between
repeats (time, uuid, output text, pids, ports, container id), dependent on what makes an
alert different (rule, pod, namespace, process, file, remote address, audit user/object),
and always a valid Kubernetes name."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from falco_triage.events.fingerprint import (
    DEFAULT_WINDOW_SECONDS,
    alert_name,
    alert_spec,
    fingerprint,
    key_fields,
    slug,
)
from falco_triage.events.normalize import load_events
from falco_triage.events.target import resolve_target
from falco_triage.models.event import FalcoEvent
from tests.unit.factories import EVENTS, make_event, sample_files

NAMESPACE = "falco-triage"
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# Pinned: these names identify FalcoAlerts already in clusters. A change here is a migration.
PINNED = {
    "falco/terminal-shell-in-container": (
        "ec3b4eda236cbbb99e2a5de06a160e452a0bfa0820640f20dee76841411363b2",
        "terminal-shell-in-container-fec64eb3343f695a",
    ),
    "falcosidekick/contact-k8s-api-server-from-container": (
        "3afad4b240a60409f108f7ddd6233efdf4a39250c56259630d0d2a3e21947c93",
        "contact-k8s-api-server-from-container-bbf1bf6de6820778",
    ),
    "falco/clear-log-activities": (
        "f18f7e17efda9ad33d7c5aed2cc4c24d2b60eebc0255371d6273cf88c1bf6e11",
        "clear-log-activities-f7085e217f337f4c",
    ),
    "falco/attach-exec-pod": (
        "b3d357533d9119403b3f55f8240d9f9b7675cc4b4232626cd68ad4b3da6041ea",
        "attach-exec-pod-cfb2c852bffb286a",
    ),
}


def _fp(event: FalcoEvent) -> str:
    return fingerprint(event, resolve_target(event, NAMESPACE))


def _name(event: FalcoEvent) -> str:
    return alert_name(alert_spec(event, NAMESPACE))


@pytest.mark.parametrize("sample", sorted(PINNED))
def test_pinned_fingerprints_and_names(sample: str) -> None:
    (event,) = load_events((EVENTS / f"{sample}.json").read_bytes())
    spec = alert_spec(event, NAMESPACE)
    assert (spec.fingerprint, alert_name(spec)) == PINNED[sample]


def test_same_event_twice_gives_the_same_fingerprint() -> None:
    assert _fp(make_event()) == _fp(make_event())


@pytest.mark.parametrize(
    "change",
    [
        {"at": datetime(2024, 5, 14, 9, 30, tzinfo=UTC)},
        {"sidekick": True},
        {"uuid": "0f8fad5b-d9cb-469f-a165-70867728950e"},
        {"output": "completely different text"},
        {"proc.pid": 1},
        {"proc.ppid": 2},
        {"container.id": "0000deadbeef"},
        {"proc.cmdline": "bash -c 'sleep 3; date'"},
        {"evt.type": "execveat"},
        {"evt.time": 1715678467000000000},
        {"proc.tty": 1},
        {"hostname": "another-node"},
        {"priority": "Critical"},
        {"tags": ["different"]},
    ],
    ids=lambda c: next(iter(c)),
)
def test_fingerprint_ignores_what_changes_between_repeats(change: dict[str, Any]) -> None:
    assert _fp(make_event(**change)) == _fp(make_event())


@pytest.mark.parametrize(
    "change",
    [
        {"rule": "Run shell untrusted"},
        {"namespace": "payments"},
        {"pod": "web-7d9f8c6b5-zzzzz"},
        {"container.name": "sidecar"},
        {"proc.name": "sh"},
        {"proc.exepath": "/bin/sh"},
        {"proc.pname": "nginx"},
        {"user.name": "www-data"},
        {"source": "k8s_audit"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_fingerprint_depends_on_what_makes_alerts_different(change: dict[str, Any]) -> None:
    rule = change.pop("rule", "Terminal shell in container")
    assert _fp(make_event(rule, **change)) != _fp(make_event())


def test_connection_ports_are_not_part_of_it_but_addresses_are() -> None:
    rule = "Contact K8S API Server From Container"
    base = make_event(rule, **{"fd.name": "10.244.1.17:43312->10.96.0.1:443", "fd.lport": 43312})
    other_port = make_event(rule, **{"fd.name": "10.244.1.17:51000->10.96.0.1:443", "fd.lport": 1})
    other_server = make_event(rule, **{"fd.name": "10.244.1.17:43312->10.96.0.2:443"})
    assert _fp(base) == _fp(other_port)
    assert _fp(base) != _fp(other_server)
    assert key_fields(base)["fd.name"] == "10.244.1.17->10.96.0.1"


def test_proc_pid_paths_are_normalized() -> None:
    rule = "Read environment variable from /proc files"
    one = make_event(rule, **{"fd.name": "/proc/1/environ"})
    other = make_event(rule, **{"fd.name": "/proc/48211/environ"})
    self_ = make_event(rule, **{"fd.name": "/proc/self/environ"})
    assert _fp(one) == _fp(other)
    assert _fp(one) != _fp(self_)
    assert key_fields(one)["fd.name"] == "/proc/<pid>/environ"


def test_files_distinguish_alerts() -> None:
    rule = "Read sensitive file untrusted"
    assert _fp(make_event(rule, **{"fd.name": "/etc/shadow"})) != _fp(
        make_event(rule, **{"fd.name": "/etc/sudoers"})
    )


def test_audit_key_is_who_did_what_to_which_object() -> None:
    rule = "Attach/Exec Pod"
    base = make_event(rule)
    assert _fp(base) == _fp(make_event(rule, **{"ka.uri.param[command]": "bash"}))
    assert _fp(base) != _fp(make_event(rule, **{"ka.user.name": "mallory"}))
    assert _fp(base) != _fp(make_event(rule, **{"ka.target.name": "other-pod"}))
    assert _fp(base) != _fp(make_event(rule, namespace="other"))


def test_other_plugin_sources_ignore_volatile_fields() -> None:
    def cloudtrail(**fields: Any) -> FalcoEvent:
        base = {"ct.name": "ConsoleLogin", "ct.user": "alice", "ct.srcip": "198.51.100.7"}
        return make_event("Console Login Without MFA", source="aws_cloudtrail", **(base | fields))

    base = cloudtrail(**{"ct.id": "a", "ct.time": "t1", "ct.request.port": 1})
    same = cloudtrail(**{"ct.id": "b", "ct.time": "t2", "ct.request.port": 2})
    assert _fp(base) == _fp(same)
    assert _fp(base) != _fp(cloudtrail(**{"ct.user": "bob"}))
    assert set(key_fields(base)) >= {"ct.name", "ct.user", "ct.srcip"}


def test_host_events_key_on_the_hostname() -> None:
    rule = "Launch Suspicious Network Tool on Host"
    assert _fp(make_event(rule, host=True, hostname="worker-1")) != _fp(
        make_event(rule, host=True, hostname="worker-2")
    )


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_sample_names_are_valid_and_readable(path: Path) -> None:
    (event,) = load_events(path.read_bytes())
    name = _name(event)
    assert DNS1123_SUBDOMAIN.match(name)
    assert len(name) <= 63  # short enough to be a label value too
    assert name.startswith(slug(event.rule)[:20])


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("Terminal shell in container", "terminal-shell-in-container"),
        (
            "Redirect STDOUT/STDIN to Network Connection in Container",
            "redirect-stdout-stdin-to-network-connect",
        ),
        (
            "Backdoored library loaded into SSHD (CVE-2024-3094)",
            "backdoored-library-loaded-into-sshd-cve",
        ),
        ("!!!", "alert"),
        ("Ünïcödé rule — ok", "n-c-d-rule-ok"),
        ("-leading and trailing-", "leading-and-trailing"),
    ],
)
def test_slug(rule: str, expected: str) -> None:
    assert slug(rule) == expected


def test_repeats_in_one_window_share_a_name_and_the_next_window_does_not() -> None:
    day = datetime(2024, 5, 14, tzinfo=UTC)
    morning = make_event(at=day + timedelta(hours=1))
    evening = make_event(at=day + timedelta(hours=23, minutes=59))
    tomorrow = make_event(at=day + timedelta(days=1, minutes=1))
    assert _name(morning) == _name(evening)
    assert _name(morning) != _name(tomorrow)
    assert _fp(morning) == _fp(tomorrow)  # same alert identity, a new window


def test_window_length_is_part_of_the_name() -> None:
    spec = alert_spec(make_event(), NAMESPACE)
    assert alert_name(spec) == alert_name(spec, DEFAULT_WINDOW_SECONDS)
    assert alert_name(spec, 3600) != alert_name(spec)


def test_spec_carries_stringified_fields_and_the_target() -> None:
    spec = alert_spec(make_event(**{"proc.tty": 34816, "container.privileged": True}), NAMESPACE)
    assert spec.output_fields["proc.tty"] == "34816"
    assert spec.output_fields["container.privileged"] == "true"
    assert spec.target.display == "shop/web-7d9f8c6b5-x2kqp"
    assert re.fullmatch(r"[0-9a-f]{64}", spec.fingerprint)
    wire = spec.wire()
    assert wire["outputFields"]["proc.tty"] == "34816"
