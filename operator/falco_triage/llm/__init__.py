"""Optional model-generated narrative for an alert: never decisive, off by default.

The deterministic analysis is the report of record. When ``llm.enabled`` is set,
:class:`NarrativeService` sends it, with an allow-listed and redacted subset of the event fenced
as data, to an OpenAI-compatible or Ollama endpoint and returns a
:class:`~falco_triage.models.narrative.NarrativeStatus`: the validated narrative, or why there
is none. Nothing here changes facts, priority, severity, MITRE mapping or a policy decision, and
nothing a model writes is executed. Pure of kopf, kubernetes and aiohttp (import-linter).
"""

from falco_triage.llm.metrics import LlmMetrics
from falco_triage.llm.prompt import PROMPT_VERSION
from falco_triage.llm.service import NarrativeService
from falco_triage.llm_settings import LlmSettings

__all__ = ["PROMPT_VERSION", "LlmMetrics", "LlmSettings", "NarrativeService"]
