"""structlog set-up: JSON lines in production, a readable console in development, no secrets."""

import logging
import re
from collections.abc import Mapping

import structlog

# Keys whose values are never logged, whatever the caller passes.
SECRET_KEYS = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential|authorization|sec$|^t$|^cid$", re.I)
REDACTED = "[redacted]"
# A query string after a URL or path: brokers such as IBKR Flex carry the token in it (t=...).
QUERY_STRING = re.compile(r"(?<=[\w/.\-])\?[^\s\"'<>]*=[^\s\"'<>]*")


def redact_query_strings(text: str) -> str:
    return QUERY_STRING.sub(f"?{REDACTED}", text)


def redact_urls(logger, method_name, event_dict):
    """Every line, ours and third-party (urllib3 writes whole URLs at DEBUG), loses its query strings."""

    def scrub(value):
        if isinstance(value, str):
            return redact_query_strings(value)
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(scrub(v) for v in value)
        return value

    return {k: scrub(v) if k != "_record" else v for k, v in event_dict.items()}


def redact_secrets(logger, method_name, event_dict):
    """Replace the value of every secret-looking key, at any depth of dicts."""

    def scrub(value):
        if isinstance(value, dict):
            return {k: (REDACTED if SECRET_KEYS.search(str(k)) else scrub(v)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(scrub(v) for v in value)
        return value

    return {k: (REDACTED if k != "event" and SECRET_KEYS.search(k) else scrub(v)) for k, v in event_dict.items()}


def gunicorn_access_fields(logger, method_name, event_dict):
    """Turn gunicorn's access line into fields (method, path without the query string, status, duration)."""
    record = event_dict.get("_record")
    atoms = event_dict.pop("positional_args", None)
    if record is not None and record.name == "gunicorn.access" and isinstance(atoms, Mapping):
        event_dict.update(
            event="http_request",
            method=atoms["m"],
            path=atoms["U"],
            status=atoms["s"],
            duration_ms=round(int(atoms["D"]) / 1000, 1),
            remote_addr=atoms["h"],
        )
    return event_dict


# Run on every line, ours (structlog) and everyone else's (Django, Celery, gunicorn) alike.
SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    redact_secrets,
    redact_urls,
]


def formatter(log_format: str) -> structlog.stdlib.ProcessorFormatter:
    """The one formatter of every line. json: one JSON object per line; console: readable key=value lines."""
    if log_format == "console":
        render = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.dev.ConsoleRenderer(colors=False),
        ]
    else:
        render = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    return structlog.stdlib.ProcessorFormatter(
        processors=render,
        foreign_pre_chain=[*SHARED_PROCESSORS, gunicorn_access_fields],
        # Hands gunicorn's access atoms to gunicorn_access_fields (which removes them).
        pass_foreign_args=True,
    )


def logging_config(log_format: str, level: str) -> dict:
    """The stdlib logging config (Django's LOGGING, gunicorn's logconfig_dict) around that formatter."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structlog": {"()": formatter, "log_format": log_format}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structlog"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # At DEBUG urllib3 logs every request line with its query string; ours (brokers.http) log the path.
            "urllib3": {"level": "WARNING"},
            # gunicorn's own loggers hand their lines to the root handler instead of printing text.
            "gunicorn.error": {"handlers": [], "propagate": True},
            "gunicorn.access": {"handlers": [], "propagate": True, "level": "INFO"},
            # runserver's request lines (make run) have a plain handler of Django's own, which would
            # print OAuth codes, states and ?token= query strings: ours redacts them like any line.
            "django.server": {"handlers": ["console"], "propagate": False, "level": "INFO"},
        },
    }


def configure_structlog() -> None:
    """Our own log calls go through the same stdlib handler, so every line has one format."""
    # Python's warnings (Celery's, Django's) become log lines in that format too.
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        cache_logger_on_first_use=True,
    )
