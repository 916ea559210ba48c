"""structlog set-up: JSON lines in production, a console renderer on a TTY, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from streams.support.secrets import Secret

_SECRET_NAMES = re.compile(
    r"(secret|token|password|passwd|authorization|api[_-]?key|routing_key|webhook_url|signature|totp)",
    re.IGNORECASE,
)
_REDACTED = "[redacted]"


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace values of secret-looking keys and every :class:`Secret` with a marker.

    Applies one level into dict values too (``headers={"Authorization": ...}``).
    """
    for key, value in list(event_dict.items()):
        if isinstance(value, Secret) or (_SECRET_NAMES.search(key) and value is not None):
            event_dict[key] = _REDACTED
        elif isinstance(value, dict):
            event_dict[key] = {
                k: _REDACTED
                if isinstance(v, Secret) or (isinstance(k, str) and _SECRET_NAMES.search(k))
                else v
                for k, v in value.items()
            }
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and route stdlib logging (faust, aiokafka) through it."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            # A stdlib record's exc_info is a (type, value, traceback) tuple: rendered as it
            # is, JSON gets "<traceback object at ...>" and the traceback is lost. Format it
            # into an "exception" string, as structlog's own chain does.
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.processors.format_exc_info,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.getLevelName(level.upper()))
    # Python warnings (a library's DeprecationWarning, "coroutine ... was never awaited")
    # are printed raw to stderr otherwise: through logging, they are JSON lines too.
    logging.captureWarnings(True)
    # Faust and aiokafka are chatty at INFO about every rebalance step.
    # mode logs "Starting..." for every service under the module's own logger name.
    for noisy in ("aiokafka", "kafka", "faust", "mode", "streams", "abc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
