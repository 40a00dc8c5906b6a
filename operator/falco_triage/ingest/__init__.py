"""The receiver Falco and Falcosidekick post to: authenticate, bound, aggregate, write.

``app`` is the aiohttp application, ``auth`` who may post, ``intake`` turns a request's events
into queue entries, ``queue`` is the bounded write buffer and its rate limiter, ``writer``
drains it into the Kubernetes API, ``metrics`` counts everything, and ``server`` runs it all.
"""
