"""One validated settings object, read once from the environment (prefix ``OMSYNC_``)."""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything omsync can be configured with.

    Every field can be set through the environment as ``OMSYNC_<FIELD>``; dict and list fields
    take JSON, e.g. ``OMSYNC_ENDPOINTS='{"HuaweiCloud:cn-north-4": "http://127.0.0.1:9000"}'``.
    Invalid values raise ``pydantic.ValidationError`` naming the field.
    """

    model_config = SettingsConfigDict(env_prefix="OMSYNC_", extra="ignore")

    data_dir: Path = Field(default=Path("omsync-data"), description="Directory for the SQLite database and the master key file.")
    database_url: str | None = Field(default=None, description="SQLAlchemy async URL; default SQLite in data_dir. PostgreSQL: postgresql+psycopg://user:pw@host/db")
    master_key: SecretStr | None = Field(default=None, description="Fernet key encrypting stored secrets; default: data_dir/master.key, created 0600 on first run.")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)

    # API
    max_keys_per_event: int = Field(default=100, ge=1, le=10_000, description="Most object keys one CreateSyncEvents call may carry.")
    key_plus_means_space: bool = Field(default=True, description="Decode a bare '+' in event keys as a space (form encoding); false keeps it literal.")
    max_pending_per_task: int = Field(default=5_000_000, ge=1, description="Pending keys per task above which events are refused with 503 and Retry-After.")
    max_body_bytes: int = Field(default=12 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 APIGW.0201 beyond).")
    max_tasks_per_project: int = Field(default=0, ge=0, description="Most sync tasks one project may own; 0 means no limit.")
    signature_max_skew_seconds: int = Field(default=900, ge=1, description="Allowed difference between X-Sdk-Date and server time.")

    # Endpoints of the clouds
    endpoints: dict[str, str] = Field(default_factory=dict, description="Overrides 'CloudType:region' -> endpoint URL; '*:region' or 'CloudType:*' match any.")
    fs_roots: list[Path] = Field(default_factory=list, description="Local directories that 'Local' tasks may use as buckets' parents.")

    # Engine
    workers: int = Field(default=64, ge=0, le=1024, description="Concurrent copies per process; 0 runs the API without workers.")
    worker_processes: int | None = Field(default=None, ge=0, le=256, description="Copy worker processes `serve` runs beside its API process; unset: one per CPU core beyond the first (at least one); 0: copy inside the API process.")
    lease_seconds: float = Field(default=60.0, gt=0, description="How long a claimed key stays owned without a renewal.")
    poll_interval_seconds: float = Field(default=0.2, gt=0, description="How often idle workers look for due keys written by other processes.")
    max_attempts: int = Field(default=5, ge=1, description="Copy attempts for retryable errors before FAILURE retries_exhausted.")
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    restore_poll_seconds: float = Field(default=60.0, gt=0, description="enable_restore: how long after asking for a restore an archived source object is looked at again; each further look waits twice as long, up to restore_poll_max_seconds.")
    restore_poll_max_seconds: float = Field(default=3600.0, gt=0, description="Longest wait between two looks at an object being restored.")
    restore_days: int = Field(default=1, ge=1, le=30, description="Days a restored copy of an archived source object stays readable (RestoreObject Days).")
    server_side_copy: bool = Field(default=True, description="Copy server-side (CopyObject) when both sides of a task resolve to the same endpoint URL with the same credentials; false streams every copy through omsync.")
    multipart_threshold_bytes: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024)
    part_size_bytes: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024)
    part_concurrency: int = Field(default=4, ge=1, le=64)
    stream_memory_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024, description="Object bytes all streamed copies of one process may hold in memory at once (parts and single-request bodies); the S3 client holds a native copy of each body in flight besides.")
    shutdown_seconds: float = Field(default=20.0, ge=0, description="On SIGTERM, how long in-flight copies may finish before they are cancelled and handed back.")
    object_list_interval_seconds: float = Field(default=60.0, gt=0, description="How often success/failed/skip object lists are written to the destination bucket.")
    store_timeout_seconds: float = Field(default=60.0, gt=0)
    check_buckets_on_create: bool = Field(default=True, description="CreateSyncTask and StartSyncTask check, with the given credentials, that the source bucket can be read and the destination bucket reached (one listing of at most one object each) and refuse the task with 400 otherwise; false accepts tasks whose buckets are not reachable yet.")
    check_buckets_timeout_seconds: float = Field(default=10.0, gt=0, le=300, description="How long the bucket check of one side may take before the endpoint counts as unreachable.")

    # Native change notifications (see docs/notifications.md)
    sns_host_pattern: str = Field(default=r"sns\.[a-z0-9-]{1,40}\.amazonaws\.com(\.cn)?", description="Hosts (a regular expression matching the whole host name) an SNS SigningCertURL or SubscribeURL may name; anything else is refused.")
    sns_allow_http: bool = Field(default=False, description="Also accept http:// SigningCertURL and SubscribeURL (a local test server only; never in production).")
    delete_poll_seconds: float = Field(default=1.0, gt=0, le=60, description="How often workers look for propagated deletes whose grace delay is over.")

    dashboard_password: SecretStr | None = Field(
        default=None,
        description="Operator password for the web dashboard (/ui); unset: only project access keys log in.",
    )

    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token GET /metrics requires (Authorization: Bearer <token>); unset: /metrics is open like /healthz.",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = Field(default=False, description="One JSON object per log line instead of plain text.")

    # Local directories granted per project (see omsync.local_roots)
    fs_project_roots: dict[str, list[Path]] = Field(
        default_factory=dict,
        description="Project id -> directories its 'Local' tasks may use; '*' grants to every project. "
                    "Without a grant a project cannot use 'Local' at all.",
    )

    # HTTP listener hardening (see omsync.serving)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600, description="A connection must deliver a complete request head within this time of opening or of its previous response, else it is closed.")
    http_keepalive_seconds: int = Field(default=5, ge=1, le=3600, description="Idle time after a response before a keep-alive connection is closed.")
    http_max_connections: int = Field(default=1000, ge=1, le=1_000_000, description="Open connections served at once; more are answered 503 and closed at once.")
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses of reverse proxies whose X-Forwarded-For/-Proto are believed; empty: none.")
    dashboard_secure_cookies: bool = Field(default=False, description="Always mark dashboard cookies Secure (they are anyway when the request arrived over TLS).")

    # Dashboard login throttling (see omsync.web.throttle)
    login_max_failures: int = Field(default=10, ge=1, le=10_000, description="Failed dashboard logins per client address or per account before further attempts are refused for a while.")
    login_lockout_seconds: float = Field(default=60.0, gt=0, le=86_400, description="First lock-out after too many failed logins; doubles with each further failure, up to 1 hour.")

    @field_validator("sns_host_pattern")
    @classmethod
    def _check_sns_host_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if name.count(":") != 1 or not all(name.split(":")):
                raise ValueError(f"endpoint key {name!r} must look like 'CloudType:region'")
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint for {name!r} must start with http:// or https://")
        return value

    @property
    def copy_processes(self) -> int:
        """Worker processes ``serve`` starts: ``worker_processes``, or one per core beyond the
        first (at least one) when unset; 0 when this process has no copy slots at all."""
        if self.workers == 0:
            return 0
        if self.worker_processes is not None:
            return self.worker_processes
        return max(1, (os.cpu_count() or 1) - 1)

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL in use: the configured one, or SQLite inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'omsync.db').resolve()}"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with keyword overrides taking precedence."""
    return Settings(**overrides)  # type: ignore[arg-type]
