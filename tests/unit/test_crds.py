"""The generated CRDs are structural, carry the printer columns and CEL rules, and match the
files committed in crds/ and the chart (drift fails here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from falco_triage.cli import main, render_crds
from falco_triage.models.crd import all_crds

ROOT = Path(__file__).resolve().parents[2]
OURS = ["falcoalerts.yaml", "responsepolicies.yaml", "clusterresponsepolicies.yaml"]


def _walk(node: Any, path: str = "$"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


@pytest.mark.parametrize("name", OURS)
def test_schema_is_structural(name: str) -> None:
    """No $ref/anyOf/oneOf/title; every schema node has a type; no additionalProperties: false."""
    schema = all_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        for combinator in ("anyOf", "oneOf", "allOf"):
            assert combinator not in node, path
        assert "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        is_schema = path.endswith((".properties", "]")) is False and (
            "type" in node or "properties" in node or "items" in node
        )
        if is_schema and "x-kubernetes-preserve-unknown-fields" not in node:
            assert "type" in node, path


def test_falcoalert_printer_columns_and_names() -> None:
    crd = all_crds()["falcoalerts.yaml"]
    version = crd["spec"]["versions"][0]
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names == ["Rule", "Priority", "Target", "Count", "Phase", "Action", "Age"]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"] == ["fa"]
    assert crd["spec"]["names"]["categories"] == ["falco", "security"]


def test_only_the_metadata_is_free_form() -> None:
    """Our CRDs never use preserve-unknown-fields: every map has a typed value schema (kopf's
    peering CRDs, whose status is kopf's own free-form map, are the documented exception)."""
    for crd in (all_crds()[name] for name in OURS):
        for path, node in _walk(crd):
            assert "x-kubernetes-preserve-unknown-fields" not in node, path


def test_action_has_one_of_cel_rule() -> None:
    spec = all_crds()["responsepolicies.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    action = spec["properties"]["spec"]["properties"]["actions"]["items"]
    rules = action["x-kubernetes-validations"]
    assert any("size() == 1" in r["rule"] for r in rules)


@pytest.mark.parametrize("directory", ["crds", "charts/falco-triage/crds"])
def test_committed_crds_match_models(directory: str) -> None:
    """`make generate` output is committed: a model change without regeneration fails here."""
    for name, text in render_crds().items():
        path = ROOT / directory / name
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run `make generate`"


def test_crdgen_check_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crdgen", "-o", str(tmp_path)]) == 0
    assert main(["crdgen", "--check", "-o", str(tmp_path)]) == 0
    (tmp_path / "falcoalerts.yaml").write_text("stale", encoding="utf-8")
    assert main(["crdgen", "--check", "-o", str(tmp_path)]) == 1
    assert "out of date" in capsys.readouterr().err
