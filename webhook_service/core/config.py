"""The one place where configuration is read.

`load_config(environ)` is called by the app factory only; everything else receives the
resulting `Config`. Bad values fail fast with a `ConfigError` naming the variable and the fix.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from webhook_service.core.errors import ConfigError

#: Stripe's libraries default to five minutes; 0 would disable the recency check, so we refuse it.
DEFAULT_TOLERANCE_SECONDS = 300
#: The embedded default database: a file in the working directory, announced in the log.
DEFAULT_DATABASE_FILE = "webhook_service.db"
#: Stripe webhook secrets are "whsec_" followed by base64-ish text.
_SECRET_RE = re.compile(r"^whsec_[A-Za-z0-9+/=_-]{8,}$")
_ACCEPT_MODES = ("live", "test", "any")
#: An operator's name in OPERATOR_KEYS (`name:key`): what the audit trail shows.
_OPERATOR_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
#: Console keys guard replay and pause: long enough that guessing is hopeless (`openssl rand -hex 24`).
MIN_OPERATOR_KEY_LENGTH = 16
MIN_CONSOLE_SECRET_LENGTH = 32
#: Retry schedule for a failing event, in seconds: exponential backoff, about 1.5 hours in all.
DEFAULT_RETRY_INTERVALS = (10, 60, 300, 1800, 3600)
#: The reconcile window: invoices still change for weeks after they are created (net-30 terms,
#: then dunning retries), so two months covers the ones that can still drift.
DEFAULT_RECONCILE_DAYS = 60


@dataclass(frozen=True)
class OperatorKey:
    """One OPERATOR_KEYS entry: who the operator is, and the key that logs them in to the console."""

    name: str
    key: str = field(repr=False)


@dataclass(frozen=True)
class Config:
    """Everything the service reads from its environment, validated."""

    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    tolerance: int = DEFAULT_TOLERANCE_SECONDS
    accept_mode: str = "any"
    stripe_api_key: str | None = field(default=None, repr=False)
    stripe_api_base: str | None = None
    #: Object types whose events trigger a fetch of the object (STRIPE_REVALIDATE).
    stripe_revalidate: tuple[str, ...] = ()
    #: Requests/s all workers together may send to Stripe; None = Stripe's limit for the key's mode.
    stripe_api_rate: float | None = None
    #: Requests/s per endpoint (e.g. GET /v1/invoices/{id}).
    stripe_api_endpoint_rate: float = 25.0
    database_url: str = f"sqlite:///{DEFAULT_DATABASE_FILE}"
    database_url_is_default: bool = True
    redis_url: str | None = None
    portal_api_keys: tuple[str, ...] = field(default=(), repr=False)
    operator_keys: tuple[OperatorKey, ...] = field(default=(), repr=False)
    #: Signs console session cookies; derived from the operator keys when not given.
    console_secret_key: str | None = field(default=None, repr=False)
    #: Reverse proxies in front of the app whose X-Forwarded-For/-Proto the console believes.
    console_trusted_proxies: int = 0
    sentry_dsn: str | None = field(default=None, repr=False)
    queue_name: str = "stripe-events"
    drain_batch_size: int = 500
    retry_intervals: tuple[int, ...] = DEFAULT_RETRY_INTERVALS
    sweep_time_utc: str = "06:00"
    #: Processed and ignored events older than this many days are pruned daily (processing/retention.py).
    event_retention_days: int = 90
    #: The daily `reconcile` (UTC `HH:MM`; None = not scheduled), whether it repairs the drift it
    #: finds, and its window: invoices created in the last this many days (processing/reconcile.py).
    reconcile_time_utc: str | None = None
    reconcile_repair: bool = False
    reconcile_days: int = DEFAULT_RECONCILE_DAYS
    entity_type_metadata_key: str = "entity_type"
    entity_id_metadata_key: str = "portal_entity_id"
    #: Prices (or plans) whose lines are `usage` when the payload does not say they are metered.
    metered_price_ids: tuple[str, ...] = ()
    log_level: str = "INFO"
    demo: bool = False
    #: PostgreSQL bounds in seconds (docs/operations.md, "Bounded waits"): connecting, one
    #: statement (server-side, and the client gives up 2 s later), a transaction left idle.
    database_connect_timeout: int = 3
    database_statement_timeout: int = 10
    database_idle_in_transaction_timeout: int = 30
    #: Request threads per web process (gunicorn.conf.py reads the same variable): the receiver
    #: keeps one free for /healthz when the database stalls.
    web_threads: int = 8
    #: How often the scheduler runs recovery (re-enqueues what Redis lost), in seconds.
    recovery_interval: int = 60
    #: The scheduler leader's lease, in seconds: a standby takes over this long after the leader
    #: stops renewing it (SIGKILL, a lost machine); on SIGTERM the leader gives it up at once.
    scheduler_lease_seconds: int = 15

    @property
    def embedded_queue(self) -> bool:
        """True when no Redis is configured: jobs run on an in-process queue (dev/demo only)."""
        return self.redis_url is None

    @property
    def console_session_key(self) -> bytes | None:
        """The key that signs console sessions: CONSOLE_SECRET_KEY, or one derived from OPERATOR_KEYS.

        Derived, every process and machine gets the same key with no extra setting, and changing
        the operator keys ends every session. None when the console is closed (no keys).
        """
        if self.console_secret_key:
            return self.console_secret_key.encode()
        if not self.operator_keys:
            return None
        material = "\n".join(sorted(entry.key for entry in self.operator_keys)).encode()
        return hmac.new(material, b"webhook-service console session v1", hashlib.sha256).digest()

    def with_overrides(self, **changes) -> Config:
        """Return a copy with some fields replaced (tests and the demo use this)."""
        return replace(self, **changes)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be greater than 0, got {raw!r} (0 would disable the check)")
    return value


def parse_secrets(raw: str | None) -> tuple[str, ...]:
    """Split and validate STRIPE_WEBHOOK_SECRETS; a malformed entry is a ConfigError."""
    secrets = _split(raw)
    for secret in secrets:
        if not _SECRET_RE.match(secret):
            shown = secret[:6] + "…" if len(secret) > 6 else secret
            raise ConfigError(
                f"STRIPE_WEBHOOK_SECRETS has a malformed entry ({shown!r}): each secret must look like "
                "whsec_…, as shown for the endpoint in Stripe's dashboard"
            )
    return secrets


def parse_operator_keys(raw: str | None) -> tuple[OperatorKey, ...]:
    """Split and validate OPERATOR_KEYS: `name:key` entries (a bare key gets a name from its hash)."""
    entries: list[OperatorKey] = []
    for position, part in enumerate(_split(raw), start=1):
        name, sep, key = part.partition(":")
        if not sep:
            name, key = "operator-" + hashlib.sha256(part.encode()).hexdigest()[:8], part
        if not _OPERATOR_NAME_RE.match(name):
            raise ConfigError(
                f"OPERATOR_KEYS entry {position}: the name before ':' must be letters, digits, '.', '_', "
                "'@' or '-' (at most 64), e.g. OPERATOR_KEYS=alice:<key>,bob:<key>"
            )
        if len(key) < MIN_OPERATOR_KEY_LENGTH:
            raise ConfigError(
                f"OPERATOR_KEYS: the key of {name!r} is shorter than {MIN_OPERATOR_KEY_LENGTH} characters; "
                "make one with `openssl rand -hex 24`"
            )
        if any(entry.name == name for entry in entries):
            raise ConfigError(f"OPERATOR_KEYS names {name!r} twice; each operator needs a name of their own")
        if any(entry.key == key for entry in entries):
            raise ConfigError(f"OPERATOR_KEYS: {name!r} has the same key as another operator")
        entries.append(OperatorKey(name=name, key=key))
    return tuple(entries)


def _parse_console_secret(raw: str | None) -> str | None:
    value = (raw or "").strip()
    if value and len(value) < MIN_CONSOLE_SECRET_LENGTH:
        raise ConfigError(
            f"CONSOLE_SECRET_KEY must be at least {MIN_CONSOLE_SECRET_LENGTH} characters "
            "(`openssl rand -hex 32`), or unset to derive it from OPERATOR_KEYS"
        )
    return value or None


def _non_negative_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ConfigError(f"{name} must be a whole number (0 or more), got {raw!r}")
    return int(raw)


def _parse_intervals(raw: str | None) -> tuple[int, ...]:
    if not raw:
        return DEFAULT_RETRY_INTERVALS
    try:
        values = tuple(int(v) for v in _split(raw))
    except ValueError:
        raise ConfigError(f"EVENT_RETRY_INTERVALS must be comma-separated seconds, got {raw!r}") from None
    if not values or any(v < 0 for v in values):
        raise ConfigError(f"EVENT_RETRY_INTERVALS must be non-negative seconds, got {raw!r}")
    return values


#: What STRIPE_REVALIDATE may name.
REVALIDATABLE = ("invoice", "credit_note", "customer")


def _parse_revalidate(raw: str | None) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(kind.lower() for kind in _split(raw)))
    unknown = [kind for kind in kinds if kind not in REVALIDATABLE]
    if unknown:
        raise ConfigError(
            f"STRIPE_REVALIDATE names {', '.join(map(repr, unknown))}; it takes a comma-separated list of "
            f"{', '.join(REVALIDATABLE)}"
        )
    return kinds


def _rate(environ: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be requests per second (a number), got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} must be greater than 0, got {raw!r}")
    return value


def _parse_sweep_time(raw: str | None, name: str = "PAST_DUE_SWEEP_TIME", default: str = "06:00") -> str:
    value = (raw or default).strip()
    match = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", value)
    if not match:
        raise ConfigError(f"{name} must be HH:MM in UTC, got {value!r}")
    return value


def _parse_reconcile_time(raw: str | None) -> str | None:
    """RECONCILE_TIME: HH:MM in UTC, or unset (empty) for no daily reconcile."""
    if raw is None or not raw.strip():
        return None
    return _parse_sweep_time(raw, "RECONCILE_TIME")


def _reconcile_days(raw: str | None) -> int:
    value = (raw or "").strip()
    if not value:
        return DEFAULT_RECONCILE_DAYS
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"RECONCILE_DAYS must be a whole number of days (1 or more), got {raw!r}")
    return int(value)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def _flag(environ: Mapping[str, str], name: str) -> bool:
    raw = (environ.get(name) or "").strip().lower()
    if raw not in _TRUE + _FALSE:
        raise ConfigError(f"{name} must be true or false, got {environ.get(name)!r}")
    return raw in _TRUE


#: The shortest retention: the event log must cover Stripe's 30-day Events API window, or a
#: redelivery or `resync` of a pruned event would be recorded and processed again.
MIN_RETENTION_DAYS = 30


def _retention_days(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return 90
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"EVENT_RETENTION_DAYS must be a whole number of days, got {raw!r}") from None
    if value < MIN_RETENTION_DAYS:
        raise ConfigError(
            f"EVENT_RETENTION_DAYS must be at least {MIN_RETENTION_DAYS} (Stripe's Events API window, so "
            f"that redeliveries and resync are recognised as already handled), got {raw!r}"
        )
    return value


def load_config(environ: Mapping[str, str], *, demo: bool = False) -> Config:
    """Read and validate the service configuration from an environment mapping."""
    mode = (environ.get("STRIPE_ACCEPT_MODE") or "any").strip().lower()
    if mode not in _ACCEPT_MODES:
        raise ConfigError(f"STRIPE_ACCEPT_MODE must be one of live, test, any; got {mode!r}")
    database_url = (environ.get("DATABASE_URL") or "").strip()
    is_default_db = not database_url
    if is_default_db:
        database_url = f"sqlite:///{Path.cwd() / DEFAULT_DATABASE_FILE}"
    # Heroku-style URLs say postgres://; SQLAlchemy wants a driver name.
    if database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgres://") :]
    elif database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
    batch = _positive_int(environ, "DRAIN_BATCH_SIZE", 500)
    return Config(
        webhook_secrets=parse_secrets(environ.get("STRIPE_WEBHOOK_SECRETS")),
        tolerance=_positive_int(environ, "STRIPE_WEBHOOK_TOLERANCE", DEFAULT_TOLERANCE_SECONDS),
        accept_mode=mode,
        stripe_api_key=(environ.get("STRIPE_API_KEY") or None),
        stripe_api_base=(environ.get("STRIPE_API_BASE") or None),
        stripe_revalidate=_parse_revalidate(environ.get("STRIPE_REVALIDATE")),
        stripe_api_rate=_rate(environ, "STRIPE_API_RATE", None),
        stripe_api_endpoint_rate=_rate(environ, "STRIPE_API_ENDPOINT_RATE", 25.0) or 25.0,
        database_url=database_url,
        database_url_is_default=is_default_db,
        redis_url=(environ.get("REDIS_URL") or "").strip() or None,
        portal_api_keys=_split(environ.get("PORTAL_API_KEYS")),
        operator_keys=parse_operator_keys(environ.get("OPERATOR_KEYS")),
        console_secret_key=_parse_console_secret(environ.get("CONSOLE_SECRET_KEY")),
        console_trusted_proxies=_non_negative_int(environ, "CONSOLE_TRUSTED_PROXIES", 0),
        sentry_dsn=(environ.get("SENTRY_DSN") or None),
        queue_name=(environ.get("RQ_QUEUE") or "stripe-events").strip(),
        drain_batch_size=batch,
        retry_intervals=_parse_intervals(environ.get("EVENT_RETRY_INTERVALS")),
        sweep_time_utc=_parse_sweep_time(environ.get("PAST_DUE_SWEEP_TIME")),
        event_retention_days=_retention_days(environ.get("EVENT_RETENTION_DAYS")),
        reconcile_time_utc=_parse_reconcile_time(environ.get("RECONCILE_TIME")),
        reconcile_repair=_flag(environ, "RECONCILE_REPAIR"),
        reconcile_days=_reconcile_days(environ.get("RECONCILE_DAYS")),
        entity_type_metadata_key=(environ.get("ENTITY_TYPE_METADATA_KEY") or "entity_type").strip(),
        entity_id_metadata_key=(environ.get("ENTITY_ID_METADATA_KEY") or "portal_entity_id").strip(),
        metered_price_ids=_split(environ.get("METERED_PRICE_IDS")),
        log_level=(environ.get("LOG_LEVEL") or "INFO").upper(),
        database_connect_timeout=_positive_int(environ, "DATABASE_CONNECT_TIMEOUT", 3),
        database_statement_timeout=_positive_int(environ, "DATABASE_STATEMENT_TIMEOUT", 10),
        database_idle_in_transaction_timeout=_positive_int(
            environ, "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", 30
        ),
        web_threads=_positive_int(environ, "GUNICORN_THREADS", 8),
        recovery_interval=_positive_int(environ, "RECOVERY_INTERVAL_SECONDS", 60),
        scheduler_lease_seconds=_positive_int(environ, "SCHEDULER_LEASE_SECONDS", 15),
        demo=demo,
    )


def require_secrets(config: Config) -> None:
    """Refuse to receive webhooks without a secret: an unverified endpoint is worse than none."""
    if not config.webhook_secrets:
        raise ConfigError(
            "STRIPE_WEBHOOK_SECRETS is not set. Set it to the endpoint's signing secret (whsec_…); "
            "several may be given, comma-separated, while rolling a secret"
        )


def is_live_key(api_key: str) -> bool:
    """Live keys are `sk_live_…` / `rk_live_…`; everything else runs against a sandbox."""
    return "_live_" in api_key[:8]


def key_mode_conflict(config: Config) -> str | None:
    """Why STRIPE_API_KEY cannot serve backfill or reconcile under STRIPE_ACCEPT_MODE, or None.

    A key reads its own mode's objects only; with the other mode accepted, every object fetched
    would be recorded as ignored and the mirror would never hold what it is compared with.
    """
    if not config.stripe_api_key:
        return None
    key_mode = "live" if is_live_key(config.stripe_api_key) else "test"
    if config.accept_mode in ("any", key_mode):
        return None
    return (
        f"STRIPE_ACCEPT_MODE={config.accept_mode} but STRIPE_API_KEY is a {key_mode}-mode key: every "
        f"object would be recorded as ignored; use a {config.accept_mode}-mode key, or set "
        f"STRIPE_ACCEPT_MODE={key_mode} or any"
    )
