"""Settings: read once from the environment into a frozen dataclass.

This is the only module that looks at environment variables; everything else gets a `Config`.
What each variable means, its default and its range are rows of aichat.settings.table.
"""

from __future__ import annotations

import dataclasses
import re
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from aichat.settings.table import BY_KEY, FROM_ENV, Setting
from aichat.settings.table import env_names as env_names  # re-exported: the tests' import


class ConfigError(ValueError):
    """A setting has a value we refuse to start with; the message names the variable."""


def _int(row: Setting, name: str, raw: str) -> int:
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    hi = value if row.hi is None else row.hi
    if not row.lo <= value <= hi:
        raise ConfigError(f"{name} must be between {row.lo} and {row.hi}, got {value}")
    return value


def _bool(row: Setting, name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(row: Setting, name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in row.choices:
        raise ConfigError(f"{name} must be one of {', '.join(row.choices)}, got {raw!r}")
    return value


def _text(row: Setting, name: str, raw: str) -> str:
    value = raw.strip()
    if row.hi is not None and len(value) > row.hi:
        raise ConfigError(f"{name} must be at most {row.hi} characters, got {len(value)}")
    if row.check is not None:
        try:
            row.check(value)
        except ValueError as e:
            raise ConfigError(f"{name}: {e}") from None
    return value


def _secret(row: Setting, name: str, raw: str) -> str:
    value = raw.strip()
    if len(value) < row.lo:
        raise ConfigError(f"{name} is too short: use at least {row.lo} characters (or unset it "
                          "to have one generated)")
    return value


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def redact(url: str) -> str:
    """The URL with its password replaced, for logs and errors."""
    url = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&\s]*", r"\1***", url, flags=re.IGNORECASE)


def _database_path(row: Setting, name: str, raw: str) -> str:
    value = raw.strip()
    if value.startswith("file:"):
        value = value[len("file:"):]
    if value.startswith(POSTGRES_SCHEMES) and len(value) > value.index("://") + 3:
        return value
    if not value or "://" in value:
        raise ConfigError(f"{name} must be file:<path>, a path to an SQLite file or a "
                          f"postgresql:// URL, got {redact(raw)!r}")
    return value


PARSERS: dict[str, Callable[[Setting, str, str], Any]] = {
    "int": _int, "bool": _bool, "choice": _choice, "text": _text, "secret": _secret,
    "path": _database_path}


def from_table(key: str) -> Any:
    """A Config field whose default is the table's (tests/test_platform.py checks that every
    row read from the environment has its field)."""
    return dataclasses.field(default=BY_KEY[key].default)


MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Config:
    port: int = from_table("port")
    host: str = from_table("host")
    database_path: str = from_table("database_path")
    database_pool_size: int = from_table("database_pool_size")
    jwt_secret: str | None = from_table("jwt_secret")
    encryption_key: str | None = from_table("encryption_key")
    app_mode: str = from_table("app_mode")
    default_admin_username: str | None = from_table("default_admin_username")
    default_admin_password: str | None = from_table("default_admin_password")
    enable_cors: bool = from_table("enable_cors")
    cors_origin: str = from_table("cors_origin")
    default_context_token_limit: int = from_table("default_context_token_limit")
    tokenizer_mode: str = from_table("tokenizer_mode")
    sse_heartbeat_interval_ms: int = from_table("sse_heartbeat_interval_ms")
    provider_max_idle_ms: int = from_table("provider_max_idle_ms")
    provider_timeout_ms: int = from_table("provider_timeout_ms")
    usage_emit: bool = from_table("usage_emit")
    usage_provider_only: bool = from_table("usage_provider_only")
    provider_retry_wait_ms: int = from_table("provider_retry_wait_ms")
    provider_rate_limit_wait_ms: int = from_table("provider_rate_limit_wait_ms")
    upstream_url_policy: str | None = from_table("upstream_url_policy")
    upstream_allowlist: str = from_table("upstream_allowlist")
    max_concurrent_streams: int = from_table("max_concurrent_streams")
    max_reply_chars: int = from_table("max_reply_chars")
    max_upstream_line_bytes: int = from_table("max_upstream_line_bytes")
    max_import_bytes: int = from_table("max_import_bytes")
    max_models_per_user: int = from_table("max_models_per_user")
    v1_max_messages: int = from_table("v1_max_messages")
    v1_max_message_chars: int = from_table("v1_max_message_chars")
    v1_max_total_chars: int = from_table("v1_max_total_chars")
    trusted_proxies: str = from_table("trusted_proxies")
    login_address_limit: int = from_table("login_address_limit")
    login_account_limit: int = from_table("login_account_limit")
    bcrypt_rounds: int = from_table("bcrypt_rounds")
    log_level: str = from_table("log_level")
    log_format: str = from_table("log_format")
    metrics_enabled: bool = from_table("metrics_enabled")
    metrics_token: str | None = from_table("metrics_token")
    # Not settings: fixed by the contract, kept here so tests can shrink them.
    max_json_body: int = 1 * MIB
    max_chat_body: int = 32 * MIB
    heartbeat_floor_ms: int = 1000
    checkpoint_interval_ms: int = 1000  # how much streamed text a kill -9 may lose
    # The fields `from_env` took from a variable (the rest kept their default): GET
    # /api/settings/system names a value's source. Where a value came from is not part of it.
    env_fields: frozenset[str] = dataclasses.field(default=frozenset(), compare=False)

    @property
    def is_postgres(self) -> bool:
        return self.database_path.startswith(POSTGRES_SCHEMES)

    @property
    def database_label(self) -> str:
        """Where the data lives, fit for a log line (no password)."""
        return redact(self.database_path)

    @property
    def data_dir(self) -> Path:
        """Generated secrets and backups: beside the SQLite file, or ./data with PostgreSQL."""
        if self.is_postgres:
            return Path("./data").resolve()
        return Path(self.database_path).expanduser().resolve().parent

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """Build a Config from `env`; unset or empty variables keep their default. Direct
        construction (as in tests) checks nothing."""
        values = {}
        for row in FROM_ENV:
            for name in row.env:
                raw = env.get(name)
                if raw is not None and raw.strip() != "":
                    values[row.key] = PARSERS[row.kind](row, name, raw)
                    break
        return cls(**values, env_fields=frozenset(values))


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a simple .env file (KEY=VALUE, # comments, optional quotes)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load(environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Config:
    """The real environment wins over `.env`."""
    env = dict(read_dotenv(dotenv)) if dotenv else {}
    env.update(os.environ if environ is None else environ)
    return Config.from_env(env)
