"""Settings read at the edge: environment (``STREAMLEARN_…``) and command-line flags.

Only this package reads the environment; everything below receives frozen config objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSecurity(BaseSettings):
    """librdkafka security settings, passed through to every client.

    Env: ``STREAMLEARN_KAFKA_SECURITY_PROTOCOL``, ``…_SASL_MECHANISM``, ``…_SASL_USERNAME``,
    ``…_SASL_PASSWORD``, ``…_SSL_CA_LOCATION``, ``…_SSL_CERTIFICATE_LOCATION``,
    ``…_SSL_KEY_LOCATION``; anything else as ``--kafka-option key=value``.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMLEARN_KAFKA_", frozen=True, extra="ignore")

    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None

    def librdkafka(self) -> dict[str, Any]:
        """The set fields as librdkafka keys (``security_protocol`` → ``security.protocol``)."""
        out: dict[str, Any] = {}
        for name, value in self:
            if value is None:
                continue
            key = name.replace("sasl_", "sasl.", 1).replace("ssl_", "ssl.", 1)
            key = key.replace("security_protocol", "security.protocol")
            key = key.replace("_", ".") if key.startswith("ssl.") else key
            out[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return out


class ServeSettings(BaseSettings):
    """Secrets of ``streamlearn serve``, from the environment only.

    Env: ``STREAMLEARN_SERVE_ADMIN_TOKEN`` — the bearer token of the admin endpoints
    (promote, rollback, reject); unset or empty: the endpoints are off.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMLEARN_SERVE_", frozen=True, extra="ignore")

    admin_token: SecretStr | None = None

    @field_validator("admin_token")
    @classmethod
    def _blank_is_none(cls, token: SecretStr | None) -> SecretStr | None:
        return token if token is not None and token.get_secret_value().strip() else None


def data_dir(path: Path) -> Path:
    """Create and return the data directory (state stores, registry, logs)."""
    path.mkdir(parents=True, exist_ok=True)
    return path
