"""One settings model for every entry point, read from the environment and an optional file.

Environment variables are ``FALCO_TRIAGE_<SECTION>__<FIELD>`` (e.g.
``FALCO_TRIAGE_INGEST__PORT=8443``); ``FALCO_TRIAGE_CONFIG`` names a YAML file with the same
structure (the Helm chart mounts one). The environment wins over the file. Invalid values stop
the process at start with a message naming the setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from falco_triage.llm_settings import LlmSettings

PROTECTED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestSettings(_Section):
    """The HTTP receiver Falco and Falcosidekick post to."""

    host: str = "0.0.0.0"  # noqa: S104 - the receiver is a network service by design
    port: int = Field(default=8080, ge=1, le=65535)
    token_file: Path | None = Field(
        default=None, description="File holding the bearer token (mounted from a Secret)"
    )
    token: SecretStr | None = Field(default=None, description="Bearer token, if not from a file")
    auth_disabled: bool = Field(
        default=False, description="Accept unauthenticated requests (logged as a warning)"
    )
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    client_ca_file: Path | None = Field(
        default=None, description="Require client certificates signed by this CA (mTLS)"
    )
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_events_per_request: int = Field(default=10_000, ge=1)
    max_output_chars: int = Field(default=8192, ge=256, le=8192)
    max_field_chars: int = Field(default=4096, ge=64, le=4096)
    max_json_depth: int = Field(default=16, ge=4, le=64)
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Close a connection whose request head has not fully arrived this long "
        "after it opened or after its previous answer (also the keep-alive idle time)",
    )
    body_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="Answer 408 and close when a request body has not fully arrived this long "
        "after its head",
    )
    queue_capacity: int = Field(
        default=10_000, ge=10, description="Distinct pending alerts held while the API is slow"
    )
    write_qps: float = Field(
        default=20.0, gt=0, description="API writes per second (token bucket refill)"
    )
    write_burst: int = Field(default=40, ge=1)
    aggregation_window_seconds: int = Field(
        default=86_400,
        ge=1,
        description="Repeats within this window update one FalcoAlert instead of creating one",
    )
    write_workers: int = Field(
        default=4,
        ge=1,
        le=32,
        description="Concurrent API writes (all share the write_qps budget)",
    )
    shutdown_flush_seconds: float = Field(
        default=20.0,
        ge=0,
        description="On SIGTERM, keep writing buffered alerts this long before exiting",
    )

    @model_validator(mode="after")
    def _auth_configured(self) -> IngestSettings:
        if self.tls_cert_file is None and self.client_ca_file is not None:
            raise ValueError("client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        return self


class RetentionSettings(_Section):
    """How long alerts live, and how many a namespace may hold (keeps etcd and watches small)."""

    max_age: str = Field(
        default="7d", pattern=r"^([0-9]+(s|m|h|d))+$", description="Delete alerts not seen since"
    )
    max_per_namespace: int = Field(default=300, ge=1, le=100_000)
    sweep_interval_seconds: int = Field(default=300, ge=1)


class OperatorSettings(_Section):
    """The kopf operator: analysis, policy decisions and remediation."""

    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    metrics_port: int = Field(
        default=9090, ge=0, le=65535, description="Serve Prometheus /metrics here (0: off)"
    )
    peering_lifetime_seconds: int = Field(
        default=20,
        ge=10,
        le=600,
        description="Failover time: a standby replica takes over after this long without "
        "the active one's keepalive",
    )
    max_concurrent_alerts: int = Field(
        default=64,
        ge=1,
        le=5000,
        description="Alerts handled at once: bounds the requests the operator has in flight when "
        "many alerts arrive together or a backlog is resumed at start-up",
    )
    protected_namespaces: list[str] = Field(default_factory=lambda: list(PROTECTED_NAMESPACES))
    opt_out_label: str = "falcotriage.io/ignore"
    production_label: str = Field(
        default="falcotriage.io/environment=production",
        description="Namespace label that raises severity by one level",
    )


class Settings(BaseSettings):
    """All of Falco Triage's settings."""

    # NB: hide_input_in_errors: a rejected value may be a secret (an LLM URL with credentials).
    model_config = SettingsConfigDict(
        env_prefix="FALCO_TRIAGE_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,
    )

    namespace: str = Field(
        default="falco-triage",
        description="The operator's own namespace: host-level alerts go here; never acted on",
    )
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))


class _YamlFileSource(PydanticBaseSettingsSource):
    """Settings from the YAML file named by ``FALCO_TRIAGE_CONFIG`` (lowest precedence)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("FALCO_TRIAGE_CONFIG")
        if not path:
            return {}
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
        return data


def load_settings() -> Settings:
    """Settings for this process; raises ``pydantic.ValidationError`` naming any bad value."""
    return Settings()
