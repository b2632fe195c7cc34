"""Settings: read once from the environment into a frozen dataclass.

This is the only module that looks at environment variables; everything else gets a `Config`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping


class ConfigError(ValueError):
    """A setting has a value we refuse to start with; the message names the variable."""


def _int(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _secret(name: str, raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if len(value) < 32:
        raise ConfigError(f"{name} is too short: use at least 32 characters (or unset it to "
                          "have one generated)")
    return value


def _database_path(name: str, raw: str) -> str:
    value = raw.strip()
    if value.startswith("file:"):
        value = value[len("file:"):]
    if not value or "://" in value:
        raise ConfigError(f"{name} must be file:<path> or a path to an SQLite file, got {raw!r}")
    return value


def _optional_text(name: str, raw: str) -> str | None:
    return raw.strip() or None


def _allowlist(name: str, raw: str) -> str:
    from aichat.upstream.netpolicy import parse_allowlist
    try:
        parse_allowlist(raw)
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from None
    return raw.strip()


def _networks(name: str, raw: str) -> str:
    import ipaddress
    for entry in raw.replace(",", " ").split():
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: not an address or CIDR: {entry!r}") from None
    return raw.strip()


def setting(default: Any, env: str | tuple[str, ...], parse: Callable[[str, str], Any],
            doc: str) -> Any:
    names = (env,) if isinstance(env, str) else env
    return field(default=default, metadata={"env": names, "parse": parse, "doc": doc})


MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Config:
    port: int = setting(8001, ("PORT", "BACKEND_PORT"), _int(0, 65535),
                       "listen port (0: any free port)")
    host: str = setting("0.0.0.0", "HOST", _text, "bind address")
    database_path: str = setting("./data/app.db", "DATABASE_URL", _database_path,
                                 "SQLite file: file:<path> or a bare path; its folder is the "
                                 "data folder")
    jwt_secret: str | None = setting(None, "JWT_SECRET", _secret,
                                     "JWT signing secret; generated into the data folder if unset")
    encryption_key: str | None = setting(None, "ENCRYPTION_KEY", _secret,
                                         "secret for API-key encryption (AES-256 key = SHA-256 "
                                         "of it); generated into the data folder if unset")
    app_mode: str = setting("single", "APP_MODE", _choice("single", "multi"),
                            "single or multi (who may register)")
    default_admin_username: str | None = setting(None, "DEFAULT_ADMIN_USERNAME", _optional_text,
                                                 "first admin created at start when no user exists")
    default_admin_password: str | None = setting(None, "DEFAULT_ADMIN_PASSWORD", _optional_text,
                                                 "password of that first admin")
    enable_cors: bool = setting(True, "ENABLE_CORS", _bool, "answer CORS preflights and add "
                                "CORS headers")
    cors_origin: str = setting("*", "CORS_ORIGIN", _text, "* or a comma-separated origin list")
    default_context_token_limit: int = setting(4000, "DEFAULT_CONTEXT_TOKEN_LIMIT",
                                               _int(1, 10_000_000),
                                               "context budget for users without their own")
    tokenizer_mode: str = setting("precise", "TOKENIZER_MODE", _choice("precise", "heuristic"),
                                  "precise (cl100k_base, offline) or heuristic")
    sse_heartbeat_interval_ms: int = setting(15000, "SSE_HEARTBEAT_INTERVAL_MS",
                                             _int(1, 3_600_000),
                                             "SSE heartbeat period (effective >= 1000)")
    provider_max_idle_ms: int = setting(60000, "PROVIDER_MAX_IDLE_MS", _int(0, 3_600_000),
                                        "max upstream silence; 0 disables")
    provider_timeout_ms: int = setting(300000, "PROVIDER_TIMEOUT_MS", _int(1, 3_600_000),
                                       "budget of one upstream round")
    usage_emit: bool = setting(True, "USAGE_EMIT", _bool, "send usage events")
    usage_provider_only: bool = setting(False, "USAGE_PROVIDER_ONLY", _bool,
                                        "stream only the provider's usage")
    provider_retry_wait_ms: int = setting(2000, "PROVIDER_RETRY_WAIT_MS", _int(0, 600_000),
                                          "wait before retrying a 5xx/connect error/timeout")
    provider_rate_limit_wait_ms: int = setting(15000, "PROVIDER_RATE_LIMIT_WAIT_MS",
                                               _int(0, 600_000),
                                               "wait before retrying a 429 without Retry-After")
    upstream_url_policy: str | None = setting(
        None, "UPSTREAM_URL_POLICY", _choice("any", "public_only", "allowlist"),
        "default upstream URL policy for personal models (unset: any in single mode, "
        "public_only in multi)")
    upstream_allowlist: str = setting("", "UPSTREAM_ALLOWLIST", _allowlist,
                                      "hosts/CIDRs allowed by the allowlist policy")
    max_concurrent_streams: int = setting(3, "MAX_CONCURRENT_STREAMS", _int(1, 10000),
                                          "running chat rounds per user")
    trusted_proxies: str = setting("127.0.0.1/8,::1", "TRUSTED_PROXIES", _networks,
                                   "proxies whose X-Forwarded-For names the client")
    bcrypt_rounds: int = setting(12, "BCRYPT_ROUNDS", _int(4, 16), "bcrypt cost factor")
    log_level: str = setting("info", "LOG_LEVEL", _choice("debug", "info", "warn", "error"),
                             "debug, info, warn or error")
    # Not settings: fixed by the contract, kept here so tests can shrink them.
    max_json_body: int = 1 * MIB
    max_chat_body: int = 32 * MIB
    heartbeat_floor_ms: int = 1000
    checkpoint_interval_ms: int = 1000  # how much streamed text a kill -9 may lose

    @property
    def data_dir(self) -> Path:
        return Path(self.database_path).expanduser().resolve().parent

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """Build a Config from `env`; unset or empty variables keep their default."""
        values = {}
        for f in dataclasses.fields(cls):
            names = f.metadata.get("env")
            if not names:
                continue
            for name in names:
                raw = env.get(name)
                if raw is not None and raw.strip() != "":
                    values[f.name] = f.metadata["parse"](name, raw)
                    break
        return cls(**values)


def settings_help() -> str:
    """One line per setting with its default, for `server.py --help`."""
    lines = []
    for f in dataclasses.fields(Config):
        names = f.metadata.get("env")
        if not names:
            continue
        default = "(generated)" if f.name in ("jwt_secret", "encryption_key") else f.default
        if default is None:
            default = "(unset)"
        elif isinstance(default, bool):
            default = str(default).lower()
        lines.append(f"  {' / '.join(names):<30} {str(default):<16} {f.metadata['doc']}")
    return "\n".join(lines)


def env_names() -> list[str]:
    return [n for f in dataclasses.fields(Config) for n in f.metadata.get("env", ())]


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
