"""Settings, all read from the environment in this one place (see .env.example)."""

import ipaddress
import json
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from config import localenv

BASE_DIR = Path(__file__).resolve().parent.parent
# Beside `make run`, plain manage.py finds its keys and private Redis in var/local.env.
LOCAL_MODE = localenv.apply_in_local_mode()

# What to do about a missing variable when the generic advice would do harm.
MISSING_SETTING_ADVICE = {
    "DJANGO_SECRET_KEY": "Next to `make run`, start it once: it writes var/local.env, which manage.py reads by itself.",
    "FIELD_ENCRYPTION_KEYS": (
        "Use the key(s) the stored credentials were encrypted with: a new key cannot read them. "
        "Next to `make run` they are in var/local.env, which manage.py reads by itself; "
        "only a new, empty installation makes a new key."
    ),
    "REDIS_URL": "Next to `make run`, it is in var/local.env while `make run` is running.",
}


def env(name, default=None, *, required=False):
    value = os.environ.get(name, default)
    if required and not value:
        advice = MISSING_SETTING_ADVICE.get(name, "")
        raise ImproperlyConfigured(
            f"Set the environment variable {name} (see .env.example for what it holds). {advice}".strip()
        )
    return value


def env_bool(name, default=False):
    return str(env(name, str(default))).strip().lower() in {"1", "true", "yes", "on"}


def env_int(name, default):
    raw = env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}.") from None


# How many syncs one worker process runs at once, on Celery's threads pool (docs/operations.md,
# "Workers"): a sync mostly waits on its broker, so a thread each costs little. The PostgreSQL
# pool of every process is sized to it.
SYNC_WORKER_CONCURRENCY = env_int("SYNC_WORKER_CONCURRENCY", 100)


def database_from_url(url):
    """Turn DATABASE_URL (sqlite:///path or postgres://user:pass@host:port/name) into Django's form."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = parsed.path[1:] if parsed.path.startswith("//") else parsed.path
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path or str(BASE_DIR / "var" / "db.sqlite3"),
            # A worker's threads and the web server write at once: WAL lets readers go on beside
            # the one writer, and a writer waits its turn for the lock (up to `timeout` s) instead
            # of failing; IMMEDIATE takes the write lock at BEGIN, so no transaction fails when it
            # would upgrade from reading to writing.
            "OPTIONS": {
                "timeout": 60,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
            },
        }
    if parsed.scheme in {"postgres", "postgresql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            # Django's own pool (psycopg_pool): a thread of the worker holds a connection only while
            # its task runs and gives it back at the task's end (Celery closes it), so a threads
            # worker of N syncs needs at most N connections, and none is opened per task. Pooling
            # excludes persistent connections (CONN_MAX_AGE stays 0).
            "OPTIONS": {
                "pool": {
                    "min_size": 2,
                    "max_size": env_int("DATABASE_POOL_MAX_SIZE", SYNC_WORKER_CONCURRENCY),
                    "timeout": 30,
                }
            },
        }
    raise ImproperlyConfigured(f"DATABASE_URL must start with sqlite:// or postgres://, got scheme {parsed.scheme!r}.")


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env("DJANGO_SECRET_KEY", required=True)
ALLOWED_HOSTS = [h.strip() for h in env("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

# --- HTTPS (all off by default, so `make run` works on plain http://localhost) --------------
# Behind a TLS-terminating proxy, "HTTP_X_FORWARDED_PROTO,https": the header the proxy sets
# (and strips from clients) that says the original request came over https.
_proxy_ssl_header = [part.strip() for part in env("DJANGO_SECURE_PROXY_SSL_HEADER", "").split(",") if part.strip()]
if _proxy_ssl_header and len(_proxy_ssl_header) != 2:
    raise ImproperlyConfigured("DJANGO_SECURE_PROXY_SSL_HEADER must be HEADER,VALUE: HTTP_X_FORWARDED_PROTO,https.")
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) or None
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_celery_beat",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "health_check",
    "axes",
    "brokers",
    "journal",
    "sync",
]

MIDDLEWARE = [
    # /healthz answers before host checks and HTTPS redirects: probes use plain http://127.0.0.1.
    "sync.health.liveness_middleware",
    "django.middleware.security.SecurityMiddleware",
    # gunicorn serves no files: the admin's, the pages' and the API page's static files come from here.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "journal.middleware.TraderTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
# Keeps the views', forms' and services' sensitive_variables in force on the DEBUG page too.
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.error_reports.CredentialSafeExceptionReporterFilter"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_from_url(env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# django-axes counts failed logins first (and refuses a locked-out one); then Django's own check.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Login throttling: after AXES_FAILURE_LIMIT wrong passwords for one username, or from one
# address, that username (or address) is refused for AXES_COOLOFF_TIME. Admins lift a lockout
# under Admin → Axes → Access attempts, or with manage.py axes_reset_username / axes_reset_ip.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "telemetry.client_ip.client_ip"
# The address of a client as the last TRUSTED_PROXY_COUNT proxies saw it (X-Forwarded-For), for
# axes, the sign-in limits and /metrics (telemetry.client_ip); 0 means clients connect directly
# and REMOTE_ADDR is theirs.
TRUSTED_PROXY_COUNT = env_int("DJANGO_TRUSTED_PROXY_COUNT", 0)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "brokers:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# Content Security Policy (django-csp): scripts, styles and everything else from this site
# only; the few inline <script>/<style> blocks carry the per-response nonce. Style attributes
# stay allowed (style-src-attr): they cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "style-src-attr": [UNSAFE_INLINE],
        # Swagger UI's stylesheet draws its icons as data: images.
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

REDIS_URL = env("REDIS_URL", required=True)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "tj",
    }
}

EMAIL_BACKEND = env("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# Where the file-based email backend (django.core.mail.backends.filebased) writes messages.
EMAIL_FILE_PATH = env("EMAIL_FILE_PATH", str(BASE_DIR / "var" / "mail"))
DEFAULT_FROM_EMAIL = env("DJANGO_DEFAULT_FROM_EMAIL", "journal@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# "name:email,name:email": the product managers told of every new broker.
MANAGERS = [tuple(item.split(":", 1)) for item in env("DJANGO_MANAGERS", "").split(",") if ":" in item]

# A run holds its connection's lock for this long at a time and keeps it through every wait:
# renewed every quarter of it while a step works, extended by the wait while a task waits
# for its retry or a rate-limit pause. A run that dies (killed worker, Redis outage) frees
# the connection within this many seconds. Tests shrink it together with the retry delays.
SYNC_LOCK_TTL_S = env_int("SYNC_LOCK_TTL_S", 300)
# How often runs left behind by a dead worker are looked for (a fifth of the lock's life).
SYNC_SWEEP_INTERVAL_S = SYNC_LOCK_TTL_S / 5
# How long the steps of one run share what they fetched (e.g. an IBKR report): its longest life.
SYNC_RUN_CACHE_TTL_S = env_int("SYNC_RUN_CACHE_TTL_S", 7200)

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# Ours: django-celery-beat's tables read incrementally, and a Redis lease so that of two beats
# only one dispatches (docs/operations.md, "Beat").
CELERY_BEAT_SCHEDULER = "sync.beat.scheduler:IncrementalScheduler"
# The standby beat takes over at most this long (plus a second and its load of the table)
# after the active one dies.
SYNC_BEAT_LEASE_TTL_S = env_int("SYNC_BEAT_LEASE_TTL_S", 10)
# A changed row is read again this long after its date_changed: the longest a writer's
# transaction (or its clock's skew) may lag behind the time it stamped.
SYNC_BEAT_CHANGE_OVERLAP_S = env_int("SYNC_BEAT_CHANGE_OVERLAP_S", 60)
# One pass of the background sweep over every PeriodicTask takes this long.
SYNC_BEAT_SWEEP_PASS_S = env_int("SYNC_BEAT_SWEEP_PASS_S", 3600)
# A sync is idempotent, so a message is acknowledged only once it ran: a killed worker's
# message goes back to the queue instead of being lost.
CELERY_TASK_ACKS_LATE = True
# Threads, not prefork: a run waits on brokers, limiter slots and reports far longer than it
# computes, and a thread waits for a few hundred KiB where a process costs ~100 MiB. Prefork
# stays available (SYNC_WORKER_POOL=prefork, or --pool prefork); docs/operations.md says why not gevent.
CELERY_WORKER_POOL = env("SYNC_WORKER_POOL", "threads")
CELERY_WORKER_CONCURRENCY = SYNC_WORKER_CONCURRENCY
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("SYNC_TASK_SOFT_TIME_LIMIT", 600)
CELERY_TASK_TIME_LIMIT = env_int("SYNC_TASK_TIME_LIMIT", 660)
CELERY_RESULT_EXPIRES = 3600
# Redis re-delivers an unacknowledged message after this long; it must exceed the longest
# countdown a retry or a rate-limit wait sets (see docs/operations.md).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 7200)}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Celery logs through Django's LOGGING (config/celery_app.py), not its own text format around ours.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A run's account tasks and its finish get a queue of their own, which every worker also
# consumes (workers read all of CELERY_TASK_QUEUES): in a burst of scheduled syncs they do
# not wait behind every other connection's start while their run's lock ages.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = (Queue("celery"), Queue("sync-accounts"))
CELERY_TASK_ROUTES = {
    "sync.tasks.sync_account": {"queue": "sync-accounts"},
    "sync.tasks.finish_sync": {"queue": "sync-accounts"},
}
# Housekeeping that beat runs besides the per-connection syncs (kept in the database by
# django-celery-beat like every other schedule).
CELERY_BEAT_SCHEDULE = {
    "close-interrupted-sync-runs": {"task": "sync.tasks.close_interrupted_runs", "schedule": SYNC_SWEEP_INTERVAL_S},
    "reconcile-sync-schedules": {"task": "sync.tasks.reconcile_schedules", "schedule": 3600.0},
    "prune-sync-logs": {"task": "sync.tasks.prune_sync_logs", "schedule": 86400.0},
}

# --- Sync ---------------------------------------------------------------------------------
SYNC_INTERVAL_DEFAULT_MIN = 15
SYNC_INTERVAL_SHORTEST_MIN = 5
SYNC_INTERVAL_LONGEST_MIN = 60
# "minutes" in real use; the real-process tests set "seconds" to see beat work in seconds.
SYNC_INTERVAL_UNIT = env("SYNC_INTERVAL_UNIT", "minutes")
if SYNC_INTERVAL_UNIT not in {"minutes", "seconds"}:
    raise ImproperlyConfigured("SYNC_INTERVAL_UNIT must be 'minutes' or 'seconds'.")
SYNC_FAILURE_NOTIFY_AFTER = env_int("SYNC_FAILURE_NOTIFY_AFTER", 3)
# Warn this many days before a trader's own credentials lapse (e.g. an IBKR Flex token).
SYNC_CREDENTIAL_EXPIRY_WARNING_DAYS = env_int("SYNC_CREDENTIAL_EXPIRY_WARNING_DAYS", 7)
# Waits before retries 1, 2 and 3 of a transiently failed sync: about 1, 5 and 15 minutes.
# (The real-process tests shorten them; there are always as many retries as steps.)
SYNC_RETRY_DELAYS_S = tuple(float(s) for s in env("SYNC_RETRY_DELAYS_S", "60,300,900").split(","))
# SyncLog rows older than this many days are deleted by the daily prune task.
SYNC_LOG_RETENTION_DAYS = env_int("SYNC_LOG_RETENTION_DAYS", 90)
SYNC_IMPORT_BATCH_SIZE = env_int("SYNC_IMPORT_BATCH_SIZE", 2000)
# The raw archive (sync.archiving): every broker answer a run read and every imported file, kept
# compressed so that `manage.py reparse` can run a fixed parser over the past without asking the
# broker again. Kept this many days (no longer than the runs' own logs, which take it with them)...
ARCHIVE_RETENTION_DAYS = env_int("ARCHIVE_RETENTION_DAYS", 90)
# ...and at most this many compressed bytes per run: a part that would pass it is not kept, and the
# run says so (its detail, and the part in the admin). 0 keeps nothing.
ARCHIVE_MAX_BYTES_PER_RUN = env_int("ARCHIVE_MAX_BYTES_PER_RUN", 64 * 2**20)
# The largest broker file a trader may import (page and API). Files stream row by row, so the limit
# guards the disk and the request's time, not memory: a year of a busy account's fills is far smaller.
FILE_IMPORT_MAX_BYTES = env_int("FILE_IMPORT_MAX_BYTES", 200 * 2**20)
# A connection with at most this many accounts syncs them inside its own task (each in a thread:
# their time is the broker's), with no chord; more fan out as one task per account across the workers.
SYNC_ACCOUNTS_IN_TASK = env_int("SYNC_ACCOUNTS_IN_TASK", 4)

# --- Brokers ------------------------------------------------------------------------------
# Comma-separated Fernet keys, newest first: credentials are encrypted with the first and
# read with any, so a key can be rotated (manage.py rotate_credentials_key).
FIELD_ENCRYPTION_KEYS = [k.strip() for k in env("FIELD_ENCRYPTION_KEYS", required=True).split(",") if k.strip()]
BROKER_HTTP_CONNECT_TIMEOUT_S = float(env("BROKER_HTTP_CONNECT_TIMEOUT_S", "5"))
BROKER_HTTP_READ_TIMEOUT_S = float(env("BROKER_HTTP_READ_TIMEOUT_S", "30"))
BROKER_HTTP_USER_AGENT = env("BROKER_HTTP_USER_AGENT", "TradeJournal/0.1 (+https://example.invalid/trade-journal)")
if not BROKER_HTTP_USER_AGENT.strip():
    # IBKR answers every Flex request without one with error 1020.
    raise ImproperlyConfigured("BROKER_HTTP_USER_AGENT may not be empty: brokers refuse requests without one.")
# A transient failure of an idempotent request is sent again this many times, after pauses
# of about 1, 2, 4 s (the base below, doubled each time, ±50%), before the run's own retry.
BROKER_HTTP_RETRIES = env_int("BROKER_HTTP_RETRIES", 2)
BROKER_HTTP_RETRY_BACKOFF_S = float(env("BROKER_HTTP_RETRY_BACKOFF_S", "1"))
# The pause between polls of an IBKR Flex report being generated.
IBKR_FLEX_POLL_PAUSE_S = float(env("IBKR_FLEX_POLL_PAUSE_S", "10"))
# The brokers this installation offers, comma-separated provider keys; a family key stands for
# all its members ("ccxt": one provider per crypto exchange). The demo broker is what `make run`
# syncs out of the box.
BROKER_PROVIDERS = [
    key.strip()
    for key in env(
        "BROKER_PROVIDERS",
        "demo,tradovate,tradovate_signin,ibkr_flex,alpaca,alpaca_connect,schwab,snaptrade,metatrader,projectx,ccxt",
    ).split(",")
    if key.strip()
]
# Base URL overrides per provider: <KEY>_BASE_URL (TRADOVATE_BASE_URL, IBKR_FLEX_BASE_URL,
# ALPACA_BASE_URL, ...) points a broker at its sandbox or a local simulator.
BROKER_BASE_URLS = {
    name.removesuffix("_BASE_URL").lower(): value
    for name, value in os.environ.items()
    if name.endswith("_BASE_URL") and value
}
# The domains whose hosts a Tradovate token answer may name (apiHosts): the session token is sent
# to them, so only Tradovate's and NinjaTrader's own (docs/brokers/tradovate.md "Organisation hosts").
TRADOVATE_API_HOST_DOMAINS = tuple(
    domain.strip().lower()
    for domain in env(
        "TRADOVATE_API_HOST_DOMAINS", "tradovateapi.com,tradovate.com,ninjatrader.com,ninjatrader.dev"
    ).split(",")
    if domain.strip()
)
# OAuth apps the operator registered at brokers (docs/brokers/<key>.md): <KEY>_CLIENT_ID and
# <KEY>_CLIENT_SECRET; <KEY>_OAUTH_AUTHORIZE_URL / <KEY>_OAUTH_TOKEN_URL point at a sandbox or
# simulator. A provider whose app is missing shows as "not set up on this installation".
BROKER_OAUTH_APPS = {
    name.removesuffix("_CLIENT_ID").lower(): {
        "client_id": value,
        "client_secret": os.environ.get(name.removesuffix("_CLIENT_ID") + "_CLIENT_SECRET", ""),
        "authorize_url": os.environ.get(name.removesuffix("_CLIENT_ID") + "_OAUTH_AUTHORIZE_URL", ""),
        "token_url": os.environ.get(name.removesuffix("_CLIENT_ID") + "_OAUTH_TOKEN_URL", ""),
    }
    for name, value in os.environ.items()
    if name.endswith("_CLIENT_ID") and value
}
# SnapTrade (docs/brokers/snaptrade.md): the operator's Commercial API key. Without it traders
# can still connect with their own Personal key, entered on the SnapTrade page.
SNAPTRADE_CLIENT_ID = env("SNAPTRADE_CLIENT_ID", "")
SNAPTRADE_CONSUMER_KEY = env("SNAPTRADE_CONSUMER_KEY", "")
# Ask SnapTrade for fresh brokerage data at most this often per connection (each refresh is
# billed; SnapTrade refuses it for real-time connections). 0: never, data is SnapTrade's daily copy.
SNAPTRADE_MANUAL_REFRESH_HOURS = env_int("SNAPTRADE_MANUAL_REFRESH_HOURS", 0)
# MetaTrader 4/5 through MetaApi (docs/brokers/metatrader.md). The operator's MetaApi token pays for
# every trader's terminal; without it each trader enters their own token on the connection. Either
# token can create and delete MetaApi accounts, so the trader's is stored encrypted like a password.
METAAPI_TOKEN = env("METAAPI_TOKEN", "")
# MetaApi bills deployed terminals by the hour: a sync deploys, reads and undeploys. True keeps
# them deployed (faster syncs, no minutes-long connect per sync, a bill for every hour).
METAAPI_KEEP_DEPLOYED = env_bool("METAAPI_KEEP_DEPLOYED", False)
# Where new MetaApi accounts run ("" lets MetaApi choose); reads always go to the account's own region.
METAAPI_REGION = env("METAAPI_REGION", "")
# The client (data) API's address for every region, for a simulator; "" builds it from the region.
METAAPI_CLIENT_URL = env("METAAPI_CLIENT_URL", "")
# While a terminal starts or loads history the run pauses this long between looks (lock held)...
METAAPI_CONNECT_POLL_S = float(env("METAAPI_CONNECT_POLL_S", "30"))
# ... and gives up (a retried failure that undeploys it) when it has not connected within this long.
# Keep it under the run's 20 pauses x the poll (sync/policy.py), or the run gives up first and the
# terminal stays deployed until the next sync.
METAAPI_CONNECT_TIMEOUT_S = float(env("METAAPI_CONNECT_TIMEOUT_S", "480"))
# ProjectX (docs/brokers/projectx.md): a TOML file of prop firms added to the shipped table
# (brokers/providers/projectx_firms.toml), for a firm that joins ProjectX or moves its host.
PROJECTX_FIRMS_FILE = env("PROJECTX_FIRMS_FILE", "")
# Tradovate (docs/brokers/tradovate.md): a TOML file of futures prop firms whose accounts are Tradovate
# accounts, added to the shipped table (brokers/providers/tradovate_firms.toml) for the broker picker.
TRADOVATE_FIRMS_FILE = env("TRADOVATE_FIRMS_FILE", "")
# The public address of /brokers/oauth/callback/, exactly as registered with each broker's app.
OAUTH_CALLBACK_URL = env("OAUTH_CALLBACK_URL", "")
# A sign-in must come back within this long; its state is single use and bound to the session.
OAUTH_STATE_MAX_AGE_S = env_int("OAUTH_STATE_MAX_AGE_S", 600)
# Warn this many days before an OAuth link's hard end (e.g. Schwab's 7 days), and again on the last day.
OAUTH_LINK_EXPIRY_WARNING_DAYS = env_int("OAUTH_LINK_EXPIRY_WARNING_DAYS", 2)
# Overrides of brokers/rate_limits.toml, as JSON: {"alpaca": {"requests": {"limit": 100}}}.
try:
    BROKER_RATE_LIMITS = json.loads(env("BROKER_RATE_LIMITS_JSON", "{}"))
except ValueError:
    raise ImproperlyConfigured("BROKER_RATE_LIMITS_JSON must be a JSON object (see .env.example).") from None
# The longest wait a broker's Retry-After (or penalty) may impose: one answer saying "wait
# 11,574 days" must not stop a broker for good.
BROKER_RETRY_AFTER_MAX_S = float(env("BROKER_RETRY_AFTER_MAX_S", "3600"))
# A wait for a rate-limit slot up to this long sleeps; a longer one re-queues the task.
BROKER_RATE_LIMIT_MAX_SLEEP_S = float(env("BROKER_RATE_LIMIT_MAX_SLEEP_S", "2"))
# How often the demo broker produces a fill per account (seconds of simulated trading).
DEMO_FILL_EVERY_S = env_int("DEMO_FILL_EVERY_S", 90)

# --- API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an API client without credentials gets 401 with WWW-Authenticate, not 403.
        "brokers.authentication.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# How long an API token made in the admin works (the admin may choose another lifetime per token).
API_TOKEN_LIFETIME_DAYS = env_int("API_TOKEN_LIFETIME_DAYS", 90)
SPECTACULAR_SETTINGS = {
    "TITLE": "Trade Journal API",
    "VERSION": "0.1.0",
    # Serve Swagger UI from our own static files: the API page must work without a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No badge from the public validator: the page loads nothing from other hosts.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    # A fill's side (BUY/SELL) and a round trip's or position's (LONG/SHORT) share the field name.
    "ENUM_NAME_OVERRIDES": {
        "FillSideEnum": "journal.models.Trade.Side",
        "RoundTripSideEnum": "journal.models.RoundTrip.Side",
    },
}
RATELIMIT_USE_CACHE = "default"
# "Sync now" per trader and connection, on pages and API alike (django-ratelimit syntax).
SYNC_NOW_RATE_LIMIT = env("SYNC_NOW_RATE_LIMIT", "3/m")
# "Test connection" per trader: each press is a login at the broker, which limits logins.
TEST_CONNECTION_RATE_LIMIT = env("TEST_CONNECTION_RATE_LIMIT", "5/m")
# Each step of signing in at a broker (Connect, Reconnect, the callback, the Personal-key form), per
# trader and per client address: a real sign-in takes two or three steps, a script hundreds. (The
# code exchanges themselves also book a per-trader budget, rate_limits.toml's [sign_in.*].)
SIGN_IN_RATE_LIMIT = env("SIGN_IN_RATE_LIMIT", "10/m")
SIGN_IN_ADDRESS_RATE_LIMIT = env("SIGN_IN_ADDRESS_RATE_LIMIT", "30/m")

# --- Health and metrics -------------------------------------------------------------------
# /readyz fails when beat has dispatched nothing for this long; beat sends the housekeeping
# task every minute, so a live beat dispatches at least that often.
BEAT_MAX_SILENCE_S = env_int("BEAT_MAX_SILENCE_S", 180)
# /readyz runs its checks at most once at a time per web process and answers from their last
# result for this long: the Celery ping waits its whole 2 s timeout, which a probe (or anyone
# on the internet) must not cost a web worker on every request.
READINESS_CACHE_S = env_int("READINESS_CACHE_S", 5)
# /metrics answers a request bearing this token (Authorization: Bearer ...) or coming from one
# of these networks (by default only this machine).
METRICS_TOKEN = env("METRICS_TOKEN", "")
try:
    METRICS_ALLOWED_NETWORKS = [
        ipaddress.ip_network(n.strip())
        for n in env("METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128").split(",")
        if n.strip()
    ]
except ValueError as exc:
    raise ImproperlyConfigured(
        f"METRICS_ALLOWED_NETWORKS must be comma-separated networks such as 10.0.0.0/8: {exc}"
    ) from None

# --- Logging ------------------------------------------------------------------------------
LOG_FORMAT = env("LOG_FORMAT", "console" if DEBUG else "json")
LOG_LEVEL = env("LOG_LEVEL", "INFO")
from config.logging import configure_structlog, logging_config  # noqa: E402  (needs LOG_FORMAT above)

# One formatter for Django's, Celery's and our own lines (gunicorn uses the same: config/gunicorn.py).
LOGGING = logging_config(LOG_FORMAT, LOG_LEVEL)
configure_structlog()
