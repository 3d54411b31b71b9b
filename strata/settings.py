"""The one settings object: every ``STRATA_*`` variable, read from the environment or ``.env``.

Secrets may be given directly (``STRATA_S3_SECRET_ACCESS_KEY``) or as a path to a file
(``STRATA_S3_SECRET_ACCESS_KEY_FILE``), the way container secrets are mounted. Invalid values
fail at start with a message that names the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from strata.errors import ConfigError

DbName = Literal["raw_db", "staging_db", "semantic_db", "dwh_db"]
DATABASES: tuple[DbName, ...] = ("raw_db", "staging_db", "semantic_db", "dwh_db")

ENV_PREFIX = "STRATA_"
DEFAULT_SOURCE_URL = "s3://strata-source/data"
DEFAULT_LAKE_URL = "s3://strata-lake"


class Settings(BaseSettings):
    """Configuration of one Strata installation (embedded default or production)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    home: Path = Field(Path(".strata"), description="State: embedded data, secrets, logs.")
    source_url: str = Field(DEFAULT_SOURCE_URL, description="s3://bucket/prefix or a folder.")
    lake_url: str = Field(DEFAULT_LAKE_URL, description="s3://bucket/prefix or a folder.")

    s3_endpoint_url: str | None = Field(None, description="Set to use an external S3 endpoint.")
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_secret_access_key_file: Path | None = None

    pg_dsn: str | None = Field(None, description="A server holding all four databases.")
    raw_db_dsn: str | None = None
    staging_db_dsn: str | None = None
    semantic_db_dsn: str | None = None
    dwh_db_dsn: str | None = None
    pg_password: SecretStr | None = None
    pg_password_file: Path | None = None
    pg_admin_dsn: str | None = Field(
        None, description="A superuser: creates databases (init) and governs roles and grants."
    )
    pg_admin_password: SecretStr | None = None
    pg_admin_password_file: Path | None = None

    pg_port: int | None = Field(None, ge=1, le=65535, description="Embedded PostgreSQL port.")
    s3_port: int | None = Field(None, ge=1, le=65535, description="Embedded S3 port.")

    log_keep: int = Field(20, ge=1, description="Run log files kept under $STRATA_HOME/logs.")
    lock_timeout_s: float = Field(
        60.0, ge=0.001, description="Seconds a publish waits for readers' open transactions."
    )
    environment: str = Field("embedded", description="Recorded with every run in audit.etl_runs.")

    smtp_host: str | None = Field(None, description="Mail server for alerts; unset: none sent.")
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_starttls: bool = Field(True, description="Upgrade the SMTP session with STARTTLS.")
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_password_file: Path | None = None
    smtp_from: str = Field("strata@localhost", description="Sender address of alerts.")
    smtp_to: str | None = Field(None, description="Alert recipients, comma-separated.")
    smtp_timeout: float = Field(
        30.0, gt=0, description="Seconds before the SMTP server is given up."
    )
    notify_success: bool = Field(False, description="Also mail a summary of each successful run.")

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("source_url", "lake_url")
    @classmethod
    def _location(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        scheme = urlsplit(value).scheme
        if scheme == "s3":
            if not urlsplit(value).netloc:
                raise ValueError(f"{value!r} names no bucket (expected s3://bucket/prefix)")
        elif scheme not in ("", "file"):
            raise ValueError(f"{value!r}: only s3://bucket/prefix or a local folder is supported")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.strip().rstrip("/")

    @field_validator(
        "pg_dsn", "raw_db_dsn", "staging_db_dsn", "semantic_db_dsn", "dwh_db_dsn", "pg_admin_dsn"
    )
    @classmethod
    def _dsn(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from psycopg.conninfo import conninfo_to_dict

        try:
            conninfo_to_dict(value)
        except Exception as exc:  # noqa: BLE001 - psycopg raises several types for bad DSNs
            raise ValueError(f"not a valid PostgreSQL DSN: {exc}") from exc
        return value.strip()

    @model_validator(mode="after")
    def _secret_files(self) -> Settings:
        for name in ("s3_secret_access_key", "pg_password", "pg_admin_password", "smtp_password"):
            path: Path | None = getattr(self, f"{name}_file")
            if path is None:
                continue
            if getattr(self, name) is not None:
                raise ValueError(
                    f"set either {ENV_PREFIX}{name.upper()} or {ENV_PREFIX}{name.upper()}_FILE, not both"
                )
            try:
                secret = path.expanduser().read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"{ENV_PREFIX}{name.upper()}_FILE: cannot read {path}: {exc.strerror}"
                ) from exc
            object.__setattr__(self, name, SecretStr(secret))
        if self.s3_endpoint_url and bool(self.s3_access_key_id) != bool(self.s3_secret_access_key):
            raise ValueError(
                f"{ENV_PREFIX}S3_ACCESS_KEY_ID and {ENV_PREFIX}S3_SECRET_ACCESS_KEY go together"
            )
        if self.pg_admin_password is not None and not self.pg_admin_dsn:
            raise ValueError(
                f"{ENV_PREFIX}PG_ADMIN_PASSWORD is the password of {ENV_PREFIX}PG_ADMIN_DSN,"
                " which is not set"
            )
        if bool(self.smtp_host) != bool(self.smtp_to):
            raise ValueError(
                f"{ENV_PREFIX}SMTP_HOST and {ENV_PREFIX}SMTP_TO go together (server and recipients)"
            )
        if bool(self.smtp_user) != bool(self.smtp_password):
            raise ValueError(f"{ENV_PREFIX}SMTP_USER and {ENV_PREFIX}SMTP_PASSWORD go together")
        return self

    # ---- derived facts -------------------------------------------------------------------

    @property
    def embedded_pg(self) -> bool:
        """PostgreSQL is embedded unless a server is configured for every database."""
        return self.pg_dsn is None and not all(self.database_dsn_override(db) for db in DATABASES)

    @property
    def embedded_s3(self) -> bool:
        """S3 is embedded unless an endpoint is configured or no location is on S3."""
        if self.s3_endpoint_url:
            return False
        return any(urlsplit(u).scheme == "s3" for u in (self.source_url, self.lake_url))

    def database_dsn_override(self, db: DbName) -> str | None:
        return getattr(self, f"{db}_dsn")

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def alert_recipients(self) -> list[str]:
        return [a.strip() for a in (self.smtp_to or "").split(",") if a.strip()]


def _variable_name(loc: tuple[int | str, ...]) -> str:
    if loc and isinstance(loc[0], str):
        return f"{ENV_PREFIX}{loc[0].upper()}"
    return "settings"


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning validation errors into one message per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{_variable_name(err['loc'])}: {message}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
