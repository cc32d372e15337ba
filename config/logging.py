"""structlog set-up: JSON lines in production, a readable console in development, no secrets."""

import logging
import re

import structlog

# Keys whose values are never logged, whatever the caller passes.
SECRET_KEYS = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential|authorization|sec$|^t$|^cid$", re.I)
REDACTED = "[redacted]"
# A query string after a URL or path: brokers such as IBKR Flex carry the token in it (t=...).
QUERY_STRING = re.compile(r"(?<=[\w/.\-])\?[^\s\"'<>]*=[^\s\"'<>]*")


def redact_query_strings(text: str) -> str:
    return QUERY_STRING.sub(f"?{REDACTED}", text)


class RedactQueryStrings(logging.Filter):
    """Every log line, ours and third-party (urllib3 writes whole URLs), loses its query strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_query_strings(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_secrets(logger, method_name, event_dict):
    """Replace the value of every secret-looking key, at any depth of dicts."""

    def scrub(value):
        if isinstance(value, dict):
            return {k: (REDACTED if SECRET_KEYS.search(str(k)) else scrub(v)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(scrub(v) for v in value)
        return value

    return {k: (REDACTED if k != "event" and SECRET_KEYS.search(k) else scrub(v)) for k, v in event_dict.items()}


def configure_structlog(log_format: str) -> None:
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False) if log_format == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        cache_logger_on_first_use=True,
    )
