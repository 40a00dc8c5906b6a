"""Pydantic models: the Falco event, the custom resources, the analysis. Pure, no I/O."""
