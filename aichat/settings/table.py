"""Every setting, declared once.

A row gives a setting's environment variable(s), kind, default, range or choices, whether an admin
may override it at run time (PUT /api/settings/system), and one line of doc. From the rows come
`Config.from_env` (aichat.settings.config), the run-time settings and their validation
(aichat.settings.system, aichat.http.bodies), `--help`, the README's table and the OpenAPI
schemas (aichat.settings.docs, aichat.http.openapi). A setting an admin may override has one
range for both sources, so any value the environment sets can be written back unchanged.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable

from aichat.security.accounts import PASSWORD_MIN_BYTES
from aichat.security.passwords import MAX_BYTES
from aichat.security.secrets_file import MIN_SECRET_CHARS
from aichat.upstream import netpolicy


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # the Config field, and the system settings key when `runtime`
    kind: str  # "int", "bool", "choice", "text", "money"; env only: "secret", "path"
    default: Any
    doc: str
    env: tuple[str, ...] = ()  # none: a run-time setting only
    lo: int = 0  # int: the range; text: the length; secret: the least length
    hi: int | None = None
    choices: tuple[str, ...] = ()
    runtime: bool = False
    check: Callable[[str], object] | None = None  # a text value's rule; raises ValueError
    # The run-time default when it is not the Config field of the same name (gets the Config).
    runtime_default: Callable[[Any], Any] | None = None
    shown: str | None = None  # the docs' words for a default that is not one literal value


def networks(text: str) -> None:
    """Comma- or space-separated addresses and CIDRs."""
    for entry in text.replace(",", " ").split():
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"not an address or CIDR: {entry!r}") from None


def _currency(text: str) -> None:
    if not (text.isascii() and text.isalpha() and text.isupper()):
        raise ValueError("must be three capital letters, e.g. USD")


def _multi(config: Any) -> bool:
    return config.app_mode == "multi"


def _url_policy(config: Any) -> str:
    return config.upstream_url_policy or ("public_only" if _multi(config) else "any")


HOUR_MS = 3_600_000
MAX_TOKENS = 10**12  # a token limit's ceiling: far above any real budget
MAX_MONEY = 1_000_000_000  # a cost limit's ceiling, in the currency
MIB = 1024 * 1024

SETTINGS: tuple[Setting, ...] = (
    Setting("port", "int", 8001, "listen port (0: any free port)",
            ("PORT", "BACKEND_PORT"), 0, 65535),
    Setting("host", "text", "0.0.0.0", "bind address", ("HOST",)),
    Setting("database_path", "path", "./data/app.db",
            "SQLite file (`file:<path>` or a path; its folder is the data folder), or "
            "`postgresql://user:password@host:5432/db` for PostgreSQL (the `postgres` extra; "
            "several instances may share it)", ("DATABASE_URL",)),
    Setting("database_pool_size", "int", 10,
            "PostgreSQL only: connections each instance may open (plus one it keeps for "
            "coordination)", ("DATABASE_POOL_SIZE",), 1, 1000),
    Setting("jwt_secret", "secret", None,
            "token signing secret; unset: generated into `data/jwt_secret` (0600) and reused",
            ("JWT_SECRET",), MIN_SECRET_CHARS, shown="generated"),
    Setting("encryption_key", "secret", None,
            "provider API key encryption secret (the AES-256 key is its SHA-256); unset: "
            "generated into `data/encryption_key` (0600)",
            ("ENCRYPTION_KEY",), MIN_SECRET_CHARS, shown="generated"),
    Setting("app_mode", "choice", "single",
            "`single`: only the first account may register; `multi`: anyone while "
            "`registration_enabled`", ("APP_MODE",), choices=("single", "multi")),
    Setting("registration_enabled", "bool", None,
            "in `multi` mode, whether new accounts may register",
            runtime=True, runtime_default=_multi, shown="true in multi mode"),
    Setting("brand_text", "text", "AIChat", "the name the front end shows",
            lo=1, hi=40, runtime=True),
    Setting("currency", "text", "USD",
            "the currency of model prices and of costs (a three-letter code, e.g. `EUR`)",
            lo=3, hi=3, runtime=True, check=_currency),
    Setting("default_admin_username", "text", None,
            "with `DEFAULT_ADMIN_PASSWORD`: an admin created at start when there are no users",
            ("DEFAULT_ADMIN_USERNAME",)),
    Setting("default_admin_password", "text", None,
            f"that admin's password; must meet the registration rules ({PASSWORD_MIN_BYTES}-"
            f"{MAX_BYTES} bytes, a letter and a digit)", ("DEFAULT_ADMIN_PASSWORD",)),
    Setting("enable_cors", "bool", True, "answer CORS preflights and add CORS headers",
            ("ENABLE_CORS",)),
    Setting("cors_origin", "text", "*",
            "`*` (no credentials) or a comma-separated origin list (echoed, with credentials)",
            ("CORS_ORIGIN",)),
    Setting("default_context_token_limit", "int", 4000,
            "context budget (tokens) for users without a personal limit",
            ("DEFAULT_CONTEXT_TOKEN_LIMIT",), 1, 10_000_000),
    Setting("tokenizer_mode", "choice", "precise",
            "`precise` (cl100k_base, shipped offline) or `heuristic`",
            ("TOKENIZER_MODE",), choices=("precise", "heuristic")),
    Setting("sse_heartbeat_interval_ms", "int", 15000, "`: ping` period on streams",
            ("SSE_HEARTBEAT_INTERVAL_MS",), 1000, 600_000, runtime=True),
    Setting("provider_max_idle_ms", "int", 60000,
            "longest upstream silence before the attempt is aborted; 0 disables",
            ("PROVIDER_MAX_IDLE_MS",), 0, HOUR_MS, runtime=True),
    Setting("provider_timeout_ms", "int", 300000,
            "budget of a whole round: attempts, waits, streaming, fallback",
            ("PROVIDER_TIMEOUT_MS",), 10000, HOUR_MS, runtime=True),
    Setting("usage_emit", "bool", True,
            "send `usage` events on streams (rows are stored either way)",
            ("USAGE_EMIT",), runtime=True),
    Setting("usage_provider_only", "bool", False,
            "stream only the provider's usage numbers, no local estimates",
            ("USAGE_PROVIDER_ONLY",), runtime=True),
    Setting("provider_retry_wait_ms", "int", 2000,
            "wait before the one retry after a 5xx, connection error or timeout",
            ("PROVIDER_RETRY_WAIT_MS",), 0, 600_000),
    Setting("provider_rate_limit_wait_ms", "int", 15000,
            "wait before the one retry after a 429 without `Retry-After`",
            ("PROVIDER_RATE_LIMIT_WAIT_MS",), 0, 600_000),
    Setting("upstream_url_policy", "choice", None,
            "where personal model URLs may connect; unset: `any` in single mode, "
            "`public_only` in multi", ("UPSTREAM_URL_POLICY",), choices=netpolicy.POLICIES,
            runtime=True, runtime_default=_url_policy, shown="by mode"),
    Setting("upstream_allowlist", "text", "",
            "hosts and CIDRs the `allowlist` policy admits besides public addresses",
            ("UPSTREAM_ALLOWLIST",), 0, 2000, runtime=True, check=netpolicy.parse_allowlist),
    Setting("max_concurrent_streams", "int", 3,
            "chat rounds one user may run at once (more: `429`); a user's own limit "
            "overrides it",
            ("MAX_CONCURRENT_STREAMS",), 1, 10000, runtime=True),
    Setting("default_requests_per_minute", "int", None,
            "chat and `/v1` requests one user may start per UTC minute (unset: unlimited; "
            "a user's own limit overrides it)", lo=1, hi=1_000_000, runtime=True),
    Setting("default_tokens_per_day", "int", None,
            "tokens (prompt and reply) one user may use per UTC day (unset: unlimited)",
            lo=1, hi=MAX_TOKENS, runtime=True),
    Setting("default_tokens_per_month", "int", None,
            "tokens one user may use per UTC calendar month (unset: unlimited)",
            lo=1, hi=MAX_TOKENS, runtime=True),
    Setting("default_cost_per_month", "money", None,
            "cost in `currency` one user's rounds may reach per UTC calendar month, at the "
            "models' prices (unset: unlimited)", lo=0, hi=MAX_MONEY, runtime=True),
    Setting("on_disconnect", "choice", "continue",
            "when a chat stream's client goes away without stopping it: `continue` (the round "
            "runs to its end and is saved whole) or `stop` (it is saved as it was)",
            choices=("continue", "stop"), runtime=True),
    Setting("max_reply_chars", "int", MIB,
            "characters one reply may reach (content and reasoning); past it the round ends "
            "with an `error`, keeping what was relayed", ("MAX_REPLY_CHARS",), 1000, 16 * MIB,
            runtime=True),
    Setting("max_upstream_line_bytes", "int", MIB,
            "bytes one line of a provider's stream may reach; past it the attempt fails",
            ("MAX_UPSTREAM_LINE_BYTES",), 1024, 16 * MIB),
    Setting("max_import_bytes", "int", 16 * MIB,
            "bytes one `POST /api/import` body may carry (our export or ChatGPT's "
            "`conversations.json`); more: `413`", ("MAX_IMPORT_BYTES",), MIB, 256 * MIB),
    Setting("max_models_per_user", "int", 100, "personal model configs one user may keep",
            ("MAX_MODELS_PER_USER",), 1, 10000, runtime=True),
    Setting("v1_max_messages", "int", 1000, "messages one `/v1/chat/completions` request may "
            "carry", ("V1_MAX_MESSAGES",), 1, 100_000),
    Setting("v1_max_message_chars", "int", 1_000_000,
            "text characters one `/v1` message may carry", ("V1_MAX_MESSAGE_CHARS",), 1,
            16 * MIB),
    Setting("v1_max_total_chars", "int", 2_000_000,
            "text characters all messages of one `/v1` request may carry together",
            ("V1_MAX_TOTAL_CHARS",), 1, 64 * MIB),
    Setting("trusted_proxies", "text", "127.0.0.1/8,::1",
            "proxies whose `X-Forwarded-For` names the client (login limits)",
            ("TRUSTED_PROXIES",), check=networks),
    Setting("login_address_limit", "int", 30,
            "failed sign-ins, registrations and password changes one client address may make "
            "per 15 minutes before `429`", ("LOGIN_ADDRESS_LIMIT",), 1, 100_000),
    Setting("login_account_limit", "int", 10,
            "failures per 15 minutes for one account from one address before `429`; past it "
            "from anywhere, attempts on that account slow down (up to 8 s), never locked",
            ("LOGIN_ACCOUNT_LIMIT",), 1, 100_000),
    Setting("bcrypt_rounds", "int", 12, "bcrypt cost for passwords (each +1 doubles the time)",
            ("BCRYPT_ROUNDS",), 4, 16),
    Setting("log_level", "choice", "info", "log verbosity", ("LOG_LEVEL",),
            choices=("debug", "info", "warn", "error")),
    Setting("log_format", "choice", "text",
            "`text` lines, or `json`: one JSON object per line (time, level, logger, message, "
            "request id)", ("LOG_FORMAT",), choices=("text", "json")),
    Setting("metrics_enabled", "bool", True,
            "count requests, rounds and upstream calls and serve them at `GET /metrics` "
            "(Prometheus); false: no counting, `404`", ("METRICS_ENABLED",)),
    Setting("metrics_token", "secret", None,
            "bearer token `GET /metrics` requires; unset: only clients on this machine "
            "(loopback, not through a proxy) may read it", ("METRICS_TOKEN",), 16,
            shown="loopback only"),
    Setting("audit_retention_days", "int", 180,
            "days the audit log keeps an event; older ones are deleted by an hourly sweep",
            lo=1, hi=36500, runtime=True),
)

BY_KEY = {row.key: row for row in SETTINGS}
FROM_ENV = tuple(row for row in SETTINGS if row.env)
RUNTIME = tuple(row for row in SETTINGS if row.runtime)


def runtime_default(row: Setting, config: Any) -> Any:
    """What a run-time setting is while no admin has stored a value."""
    if row.runtime_default is not None:
        return row.runtime_default(config)
    return getattr(config, row.key) if row.env else row.default


def env_names() -> list[str]:
    return [name for row in FROM_ENV for name in row.env]
