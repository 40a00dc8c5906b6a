"""Falco tuning snippets: a rule exception for exactly this case, in Falco's exceptions syntax."""

from __future__ import annotations

import re
from collections.abc import Callable

import yaml

from falco_triage.models.analysis import Tuning

_SLUG = re.compile(r"[^a-z0-9]+")
# Exceptions match exact values; a value this long is unique to one event and would bloat the
# snippet past its bound, so such a field is left out like a missing one.
MAX_EXCEPTION_VALUE = 512
# libyaml's emitter when PyYAML was built with it: the pure-Python one is most of the cost of
# an analysis. Both emit the same safe YAML.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def exception_name(rule: str) -> str:
    slug = _SLUG.sub("_", rule.lower()).strip("_")[:48]
    return f"falco_triage_{slug}"


def build_tuning(
    rule: str,
    fields: list[str],
    comps: list[str],
    lookup: Callable[[str], str | None],
    falco_yaml: str | None,
) -> Tuning:
    """An exception with the event's own values for the chosen fields.

    Fields the event did not carry are left out (with their comps), so the exception never
    contains a guessed value; when none are left there is no snippet and the note says why.
    """
    chosen = [(f, c, _usable(lookup(f))) for f, c in zip(fields, comps, strict=True)]
    present = [(f, c, v) for f, c, v in chosen if v is not None]
    missing = [f for f, _, v in chosen if v is None]
    if not present:
        return Tuning(
            exception_fields=fields,
            falco_yaml=falco_yaml,
            note="The event carries no usable value (missing, or too long to be a useful "
            "exception) for the fields an exception for this rule would use ("
            + ", ".join(fields)
            + "); write the exception by hand with values you have verified.",
        )
    doc = [
        {
            "rule": rule,
            "exceptions": [
                {
                    "name": exception_name(rule),
                    "fields": [f for f, _, _ in present],
                    "comps": [c for _, c, _ in present],
                    "values": [[v for _, _, v in present]],
                }
            ],
            "override": {"exceptions": "append"},
        }
    ]
    note = (
        "Add this to a rules file loaded after the default rules (e.g. falco_rules.local.yaml) "
        "only once you have confirmed the activity is benign; it silences exactly this "
        "combination of values."
    )
    if missing:
        note += (
            " Left out because the event did not carry them (or the value is too long to be a "
            "useful exception): " + ", ".join(missing) + "."
        )
    return Tuning(
        exception_fields=[f for f, _, _ in present],
        exception_yaml=yaml.dump(
            doc,
            Dumper=_DUMPER,
            sort_keys=False,
            allow_unicode=True,
            width=1000,
            default_flow_style=None,
        ),
        falco_yaml=falco_yaml,
        note=note,
    )


def _usable(value: str | None) -> str | None:
    return None if value is None or len(value) > MAX_EXCEPTION_VALUE else value
