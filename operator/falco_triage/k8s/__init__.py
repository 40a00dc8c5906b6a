"""Adapters to the Kubernetes API: the only package that imports the ``kubernetes`` client.

``client`` loads credentials, ``errors`` turns client exceptions into a small vocabulary
(NotFound, Conflict, Forbidden, Invalid, Transient), and ``alerts`` writes FalcoAlerts.
"""
