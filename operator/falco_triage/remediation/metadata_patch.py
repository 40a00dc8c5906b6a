"""Merge patches that set pod labels or annotations, and the patches that undo exactly them.

Rollback removes only what this action changed: a key that was absent is removed, a key we
overwrote gets its previous value back, a key that already had our value is left alone (it
was not ours), and a key someone changed after us is left alone too (theirs now).

The rollback facts are stored in ``ActionRecord.rollback`` (a string map, merge-patched into
status) as JSON: ``set`` is what we wrote, ``previous`` the value each key had before
(``null`` = absent). JSON nulls inside a *string* survive merge patches; a real null would
delete the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

Field = Literal["labels", "annotations"]

SET_KEY = "set"
PREVIOUS_KEY = "previous"


def build_metadata_patch(field: Field, values: Mapping[str, str], uid: str) -> dict[str, Any]:
    """``{"metadata": {"uid": …, field: values}}``; the uid makes it fail on a recreated pod."""
    return {"metadata": {"uid": uid, field: dict(values)}}


def build_label_patch(labels: Mapping[str, str], uid: str) -> dict[str, Any]:
    return build_metadata_patch("labels", labels, uid)


def build_annotation_patch(annotations: Mapping[str, str], uid: str) -> dict[str, Any]:
    return build_metadata_patch("annotations", annotations, uid)


def rollback_facts(values: Mapping[str, str], current: Mapping[str, str]) -> dict[str, str]:
    """What rollback needs, taken from the pod *before* the patch."""
    previous = {key: current.get(key) for key in values}
    return {
        SET_KEY: json.dumps(dict(values), sort_keys=True, ensure_ascii=False),
        PREVIOUS_KEY: json.dumps(previous, sort_keys=True, ensure_ascii=False),
    }


def build_metadata_rollback_patch(
    field: Field, facts: Mapping[str, str], current: Mapping[str, str], uid: str
) -> dict[str, Any] | None:
    """The merge patch undoing our change, or None when there is nothing of ours left."""
    written: dict[str, str] = json.loads(facts.get(SET_KEY, "{}"))
    previous: dict[str, str | None] = json.loads(facts.get(PREVIOUS_KEY, "{}"))
    undo: dict[str, str | None] = {}
    for key, ours in sorted(written.items()):
        before = previous.get(key)
        if before == ours or current.get(key) != ours:
            continue  # not changed by us, or changed by someone since: not ours to undo
        undo[key] = before  # None removes the key in a merge patch
    if not undo:
        return None
    return {"metadata": {"uid": uid, field: undo}}


def build_label_rollback_patch(
    facts: Mapping[str, str], current: Mapping[str, str], uid: str
) -> dict[str, Any] | None:
    return build_metadata_rollback_patch("labels", facts, current, uid)


def build_annotation_rollback_patch(
    facts: Mapping[str, str], current: Mapping[str, str], uid: str
) -> dict[str, Any] | None:
    return build_metadata_rollback_patch("annotations", facts, current, uid)
