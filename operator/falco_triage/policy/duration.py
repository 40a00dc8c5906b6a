"""Durations as policies write them: ``30s``, ``15m``, ``1h30m``, ``7d``.

The same grammar as the CRD's pattern (``DURATION_PATTERN``): one or more ``<digits><unit>``
with units ``s``, ``m``, ``h``, ``d``. Go-style fractions (``1.5h``) and ``ms`` are not
accepted: a response window finer than a second is never what a policy author means.
"""

from __future__ import annotations

import re
from datetime import timedelta

from falco_triage.models.policy import DURATION_PATTERN

_WHOLE = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]+)(s|m|h|d)")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# NB: timedelta overflows near 10**9 days; no policy needs more than a year, and the bound
# keeps a typo such as ``99999999999d`` a clear error instead of an OverflowError.
MAX_DURATION = timedelta(days=366)


def parse_duration(text: str) -> timedelta:
    """``"1h30m"`` → ``timedelta(hours=1, minutes=30)``; :class:`ValueError` if malformed."""
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise ValueError(f"{str(text)[:40]!r} is not a duration; write e.g. 30s, 15m, 1h30m or 7d")
    seconds = sum(int(number) * _SECONDS[unit] for number, unit in _PART.findall(text))
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{text[:40]!r} is longer than {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)
