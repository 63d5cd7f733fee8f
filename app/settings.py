"""Every setting of a worker, read once from the environment into one frozen object."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.domain.delivery import DEFAULT_SCHEDULE, SCHEDULE_SETTING, parse_schedule
from app.domain.secrets import ApiToken, parse_api_tokens


class Settings(BaseSettings):
    """Names are the environment variables; see the README's configuration table."""

    # Inputs stay out of error messages: they can hold the API tokens.
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False,
                                      hide_input_in_errors=True)

    kafka_bootstrap_servers: str = Field(default="localhost:9092", alias="KAFKA_BOOTSTRAP_SERVERS")
    data_dir: Path = Field(default=Path("./data"), alias="TRIGGERS_DATA_DIR")
    web_port: int = Field(default=6066, alias="TRIGGERS_WEB_PORT")
    # Loopback by default: without a token, anyone who reaches the API can change triggers.
    web_host: str = Field(default="127.0.0.1", alias="TRIGGERS_WEB_HOST")
    app_id: str = Field(default="trigger-engine", alias="TRIGGERS_APP_ID")
    partitions: int = Field(default=8, ge=1, alias="TRIGGERS_PARTITIONS")
    replication_factor: int = Field(default=1, ge=1, alias="TRIGGERS_REPLICATION_FACTOR")
    topic_prefix: str = Field(default="", alias="TRIGGERS_TOPIC_PREFIX")
    cdc_customer_column: str = Field(default="customer_id", alias="TRIGGERS_CDC_CUSTOMER_COLUMN")
    license_tier: str = Field(default="enterprise", alias="TRIGGERS_LICENSE_TIER")
    api_token: SecretStr | None = Field(default=None, alias="TRIGGERS_API_TOKEN")
    api_tokens_setting: SecretStr | None = Field(default=None, alias="TRIGGERS_API_TOKENS")
    allow_private_urls: bool = Field(default=False, alias="TRIGGERS_ALLOW_PRIVATE_URLS")
    session_timeout_s: float = Field(default=10.0, gt=0, alias="TRIGGERS_SESSION_TIMEOUT_S")
    rebalance_timeout_s: float = Field(default=10.0, gt=0, alias="TRIGGERS_REBALANCE_TIMEOUT_S")
    heartbeat_interval_s: float = Field(default=1.0, gt=0, alias="TRIGGERS_HEARTBEAT_INTERVAL_S")
    fetch_max_wait_ms: int = Field(default=10, ge=0, alias="TRIGGERS_FETCH_MAX_WAIT_MS")
    standby_replicas: int = Field(default=0, ge=0, alias="TRIGGERS_STANDBY_REPLICAS")
    webhook_timeout_s: float = Field(default=10.0, gt=0, alias="TRIGGERS_WEBHOOK_TIMEOUT_S")
    # Delays before each attempt, kept in the deliveries table (app/domain/delivery.py).
    webhook_retry_schedule: str = Field(default=DEFAULT_SCHEDULE, alias=SCHEDULE_SETTING)
    webhook_per_endpoint_concurrency: int = Field(default=8, ge=1, alias="TRIGGERS_WEBHOOK_PER_ENDPOINT_CONCURRENCY")
    webhook_max_in_flight: int = Field(default=5000, ge=1, alias="TRIGGERS_WEBHOOK_MAX_IN_FLIGHT")
    # Hours of only failures after which an endpoint (origin) is disabled; a float so tests can scale it down.
    webhook_disable_after_hours: float = Field(default=120.0, gt=0, alias="TRIGGERS_WEBHOOK_DISABLE_AFTER_HOURS")
    dedup_retention_days: float = Field(default=7.0, gt=0, alias="TRIGGERS_DEDUP_RETENTION_DAYS")
    dedup_max_per_customer: int = Field(default=1000, ge=1, alias="TRIGGERS_DEDUP_MAX_PER_CUSTOMER")
    max_update_depth: int = Field(default=3, ge=1, alias="TRIGGERS_MAX_UPDATE_DEPTH")
    schedule_catch_up_minutes: float = Field(default=60.0, ge=0, alias="TRIGGERS_SCHEDULE_CATCH_UP_MINUTES")
    # faust refuses to recover a partition whose local offset is past the changelog's last
    # offset. On, with every broker: the embedded one's short end offsets are confirmed by a
    # fetch first (app/kafka/end_offsets.py), so the check no longer trips falsely there.
    recovery_consistency_check: bool = Field(default=True, alias="TRIGGERS_RECOVERY_CONSISTENCY_CHECK")
    # How often the clock's pass looks for due firings (on partitions without a backlog).
    timer_pass_seconds: float = Field(default=0.1, gt=0, le=5, alias="TRIGGERS_TIMER_PASS_SECONDS")
    log_format: str = Field(default="text", pattern="^(text|json)$", alias="TRIGGERS_LOG_FORMAT")

    @model_validator(mode="after")
    def _tokens_parse(self) -> Settings:
        self.api_tokens  # noqa: B018 - a bad token setting stops the process at start, not at a request
        self.retry_schedule  # noqa: B018 - and so does a bad retry schedule
        return self

    @property
    def retry_schedule(self) -> tuple[float, ...]:
        return parse_schedule(self.webhook_retry_schedule)

    @property
    def api_tokens(self) -> tuple[ApiToken, ...]:
        """TRIGGERS_API_TOKEN (named `default`) and TRIGGERS_API_TOKENS, parsed."""
        return parse_api_tokens(_secret(self.api_token), _secret(self.api_tokens_setting))

    @property
    def broker_urls(self) -> list[str]:
        return [f"kafka://{host.strip()}" for host in self.kafka_bootstrap_servers.split(",") if host.strip()]

    @property
    def bootstrap_list(self) -> list[str]:
        return [host.strip() for host in self.kafka_bootstrap_servers.split(",") if host.strip()]

    @property
    def licensed(self) -> bool:
        return self.license_tier.strip().lower() == "enterprise"


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
