"""Remove secrets from event text before anything is stored.

Falco copies command lines, environment strings and Kubernetes request bodies into its output,
and those routinely carry passwords and tokens (``mysql -pS3cret``, ``curl -H 'Authorization:
Bearer …'``, ``AWS_SECRET_ACCESS_KEY=…``). What is redacted (the value only; the name stays so a
reader still sees *that* a secret was passed):

- ``name=value``, ``name: value`` and ``"name": "value"`` where the name contains password,
  passwd, passphrase, ``_pwd``, secret, token, api/access/private/auth/secret/signing key,
  credential, session id/key/token, cookie, signature or connection string
  (``MYSQL_ROOT_PASSWORD=…``, ``aws_secret_access_key = …``, ``?access_token=…``);
- the same names as command-line flags followed by a space (``--db-password hunter2``);
- ``Authorization: Bearer|Basic …``, ``Bearer …``, ``curl -u user:password``,
  ``sshpass -p …``, ``mysql … -p<password>``;
- user:password in URLs (``postgres://app:pw@db/``);
- token shapes that are secret wherever they appear: AWS access key ids, GitHub, GitLab, Slack,
  Google API and Stripe keys, JWTs (Kubernetes service-account tokens are JWTs), crypt(3)
  password hashes, and PEM private key blocks.

Known over-redaction, accepted as the safe side: Falco's own ``secret=<name>`` label in the
Kubernetes audit rules' output hides the Secret's *name* in ``output`` (the ``ka.target.name``
field keeps it).

Cost: a pattern runs only on text containing one of its trigger words, case-insensitive
patterns run on an ASCII-lowercased copy (same length, so positions map back), every pattern
starts with a literal or a cheap class, and quantifiers that could backtrack are possessive or
bounded. Hostile input (megabytes of ``password``) is handled in linear time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

REDACTED = "[REDACTED]"

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# A value (matched on lowercased text): double- or single-quoted, or bare up to a delimiter;
# never an already redacted one, so redaction is idempotent.
_VALUE = (
    r"(?!\[redacted\])"
    r"""(?:"(?:[^"\\\n]|\\.){0,4096}+"|'[^'\n]{0,4096}+'|["']?[^\s"',;&|)}\]]++)"""
)


def _key_after(*qualifiers: str) -> str:
    """``key`` preceded by one of ``qualifiers`` (each a fixed-width lookbehind)."""
    behind = "|".join(f"(?<={q}{sep})" for q in qualifiers for sep in ("", "_", "-"))
    return f"(?:{behind})key"


# Names that mark a secret value, each starting with one of _ROOTS (the match starts there).
_NAME = (
    r"(?:pass(?:wd|word|phrase)?|(?<=[_-])pwd|secret|token|credentials?"
    r"|session[_-]?(?:id|key|token)|cookie|signature"
    r"|(?:(?<=conn)|(?<=conn_)|(?<=conn-)|(?<=connection)|(?<=connection_)|(?<=connection-))string"
    r"|"
    + _key_after("api", "access", "private", "priv", "auth", "secret", "signing", "master")
    + ")"
)
_ROOTS = (
    "pass",
    "pwd",
    "secret",
    "token",
    "cred",
    "session",
    "cookie",
    "signature",
    "string",
    "key",
)
_NAME_VALUE = re.compile(
    _NAME + r"[a-z0-9_.\-]{0,64}+[\"']?+[ \t]{0,8}+[:=][ \t]{0,8}+(?P<value>" + _VALUE + ")"
)


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    triggers: tuple[str, ...]  # lowercase substrings; the rule runs only if one occurs
    pattern: re.Pattern[str]  # its group "value" is replaced
    lowercase: bool  # match on the ASCII-lowercased text (the case-insensitive rules)


def _rule(name: str, triggers: tuple[str, ...], pattern: str, *, lowercase: bool) -> _Rule:
    return _Rule(name, triggers, re.compile(pattern), lowercase)


# NB: word boundaries are checked *after* the leading literal (``x(?<!\wx)``) so the regex
# engine can still jump between occurrences of the literal instead of trying every position.
_RULES: tuple[_Rule, ...] = (
    _rule(
        "pem-private-key",
        ("private key",),
        r"-----BEGIN[A-Z ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?P<value>(?s:.*?))"
        r"(?:-----END[A-Z ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z)",
        lowercase=False,
    ),
    _rule(
        "flag-space-value",
        _ROOTS,
        r"-(?<![\w-]-)-?(?:[a-z0-9]{1,20}+[_-]){0,4}+" + _NAME + r"[a-z0-9_\-]{0,40}+[ \t]{1,8}+"
        r"(?P<value>(?!-)" + _VALUE + ")",
        lowercase=True,
    ),
    _rule(
        "authorization-header",
        ("authorization",),
        r"authorization[\"']?+[ \t]{0,8}+[:=][ \t]{0,8}+[\"']?+"
        r"(?:(?:bearer|basic|digest|token|negotiate)[ \t]{1,8}+)?+"
        r"(?P<value>(?!\[redacted\])[^\s\"',;]++)",
        lowercase=True,
    ),
    _rule(
        "bearer",
        ("bearer",),
        r"bearer(?<![a-z0-9]bearer)[ \t]{1,8}+(?P<value>[a-z0-9\-._~+/]{8,}+=*+)",
        lowercase=True,
    ),
    _rule(
        "curl-user",
        ("-u", "--user"),
        r"-(?<![\w-]-)(?:u|-user)[ \t=]{0,8}+[^\s:\"'/]{1,256}+:(?!//)"
        r"(?P<value>(?!\[redacted\])[^\s\"']++)",
        lowercase=True,
    ),
    _rule(
        "sshpass",
        ("sshpass",),
        r"sshpass[ \t]{1,8}+-p[ \t]{0,8}+(?P<value>(?!\[redacted\])\S++)",
        lowercase=True,
    ),
    _rule(
        # mysql, mysqldump, mysqladmin and mariadb take the password glued to -p; elsewhere
        # -p is usually a port, so only text naming one of them is touched.
        "mysql-p",
        ("mysql", "mariadb"),
        r"-(?<=\s-)p(?P<value>(?!\[REDACTED\])\S++)",
        lowercase=False,
    ),
    _rule(
        "url-userinfo",
        ("://",),
        r"://[^\s:/@]{0,256}+:(?P<value>(?!\[redacted\])[^\s@/]{1,256}+)@",
        lowercase=True,
    ),
    _rule(
        "aws-access-key-id",
        ("akia", "asia", "abia", "acca", "agpa", "aida", "aipa", "anpa", "anva", "apka", "aroa"),
        r"A(?<![A-Z0-9]A)(?P<value>(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|PKA|ROA)[A-Z0-9]{16})"
        r"(?![A-Z0-9])",
        lowercase=False,
    ),
    _rule(
        "github-token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        r"(?P<value>gh(?:[pousr]_[A-Za-z0-9]{36,255}+|ithub_pat_[A-Za-z0-9_]{22,255}+))",
        lowercase=False,
    ),
    _rule(
        "gitlab-token", ("glpat-",), r"(?P<value>glpat-[A-Za-z0-9_\-]{20,255}+)", lowercase=False
    ),
    _rule(
        "slack-token", ("xox",), r"(?P<value>xox[abposr]-[A-Za-z0-9\-]{10,255}+)", lowercase=False
    ),
    _rule("google-api-key", ("aiza",), r"(?P<value>AIza[0-9A-Za-z_\-]{35})", lowercase=False),
    _rule(
        "stripe-key",
        ("k_live_", "k_test_"),
        r"k_(?<=[sr]k_)(?P<value>(?:live|test)_[0-9A-Za-z]{16,255}+)",
        lowercase=False,
    ),
    _rule(
        "jwt",
        ("eyj",),
        r"(?P<value>eyJ[A-Za-z0-9_\-]{8,}+\.eyJ[A-Za-z0-9_\-]{8,}+\.[A-Za-z0-9_\-]{8,}+)",
        lowercase=False,
    ),
    _rule(
        "crypt-hash",
        ("$1$", "$2", "$5$", "$6$", "$y$"),
        r"\$(?:1|2[aby]?|5|6|y)\$(?:rounds=\d{1,9}+\$)?+[^\s:$]{1,64}+\$"
        r"(?P<value>[./A-Za-z0-9]{16,512}+)",
        lowercase=False,
    ),
)


def _mask(text: str, start: int, end: int) -> str:
    """The marker for ``text[start:end]``, keeping the quotes around a quoted value."""
    if end - start >= 2 and text[start] == text[end - 1] and text[start] in "\"'":
        return f"{text[start]}{REDACTED}{text[start]}"
    return REDACTED


def _splice(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    parts: list[str] = []
    last = 0
    for start, end in spans:
        parts.append(text[last:start])
        parts.append(_mask(text, start, end))
        last = end
    parts.append(text[last:])
    return "".join(parts)


def _name_value_spans(low: str) -> list[tuple[int, int]]:
    """``name=value`` values, trying only where a name's root word occurs (str.find is fast)."""
    starts: set[int] = set()
    for root in _ROOTS:
        i = low.find(root)
        while i >= 0:
            starts.add(i)
            i = low.find(root, i + 1)
    spans: list[tuple[int, int]] = []
    taken = 0
    for start in sorted(starts):
        if start < taken:
            continue
        match = _NAME_VALUE.match(low, start)
        if match:
            spans.append(match.span("value"))
            taken = match.end()
    return spans


def _redact_one(text: str, lowered: str, rules: Sequence[_Rule], name_value: bool) -> str:
    if name_value:
        text = _splice(text, _name_value_spans(lowered))
        lowered = text.translate(_ASCII_LOWER)
    for rule in rules:
        if not any(t in lowered for t in rule.triggers):
            continue
        subject = lowered if rule.lowercase else text
        spans = [m.span("value") for m in rule.pattern.finditer(subject)]
        if spans:
            text = _splice(text, spans)
            lowered = text.translate(_ASCII_LOWER)
    return text


def _plan(lowered: str) -> tuple[list[_Rule], bool]:
    rules = [rule for rule in _RULES if any(t in lowered for t in rule.triggers)]
    name_value = any(root in lowered for root in _ROOTS)
    return rules, name_value


def redact(text: str) -> str:
    """``text`` with every recognised secret replaced by ``[REDACTED]``."""
    lowered = text.translate(_ASCII_LOWER)
    rules, name_value = _plan(lowered)
    if not rules and not name_value:
        return text
    return _redact_one(text, lowered, rules, name_value)


def redact_all(texts: Sequence[str]) -> list[str]:
    """:func:`redact` for many strings, deciding once which patterns could apply at all."""
    rules, name_value = _plan("\x00".join(texts).translate(_ASCII_LOWER))
    if not rules and not name_value:
        return list(texts)
    result = []
    for text in texts:
        lowered = text.translate(_ASCII_LOWER)
        needs = name_value and any(root in lowered for root in _ROOTS)
        result.append(_redact_one(text, lowered, rules, needs))
    return result
