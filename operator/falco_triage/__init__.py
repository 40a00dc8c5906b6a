"""Falco Triage: analyzed, policy-driven responses to Falco runtime-security alerts."""

__version__ = "0.1.0"
