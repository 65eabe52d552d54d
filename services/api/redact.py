"""Secrets never reach the logs: URL parameters that could carry a credential are masked in every log record of
the api process (uvicorn's access and WebSocket lines log the full path with its query string)."""

from __future__ import annotations

import logging
import re

SECRET_PARAM = re.compile(r"(?i)([?&;](?:token|ticket|access_token|api_key|key)=)[^&\s\"';]*")
MASK = "[redacted]"
LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn", "netlapse", "")


def redact(text: str) -> str:
    """``/x?since=1&ticket=abc`` → ``/x?since=1&ticket=[redacted]``."""
    return SECRET_PARAM.sub(lambda m: m.group(1) + MASK, text)


class RedactSecrets(logging.Filter):
    """Masks secret URL parameters in a record's message and arguments (the record still gets logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def install() -> None:
    """Add the filter to uvicorn's loggers and the root logger, and to their handlers (a filter on a logger does
    not see records of its children; one on a handler sees everything the handler writes). Idempotent."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        targets: list[logging.Filterer] = [logger, *logger.handlers]
        for target in targets:
            if not any(isinstance(f, RedactSecrets) for f in target.filters):
                target.addFilter(RedactSecrets())
