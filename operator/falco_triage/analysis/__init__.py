"""Expert analysis of Falco events: knowledge base, MITRE mapping, severity. Pure, no I/O."""

from falco_triage.analysis.engine import AnalysisContext, analyze

__all__ = ["AnalysisContext", "analyze"]
