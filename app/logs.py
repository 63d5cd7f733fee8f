"""Structured logging: a message plus key=value fields (or one JSON object per line)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from app.domain.secrets import mask_urls_in_text

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class StructuredFormatter(logging.Formatter):
    """Renders `extra={...}` fields after the message, so logs stay greppable and parseable.
    Every URL in a line (a field, a message, an exception's text) has its credentials masked:
    delivery errors and dead-letter reasons quote webhook URLs, which may carry secrets."""

    def __init__(self, json_lines: bool = False) -> None:
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        return mask_urls_in_text(self._format(record))

    def _format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        at = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        message = record.getMessage()
        if self.json_lines:
            line = {"at": at, "level": record.levelname, "logger": record.name,
                    "message": message, **fields}
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
            return json.dumps(line, default=str)
        rendered = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        text = f"{at} {record.levelname:<7} {record.name}: {message}" + (f" {rendered}" if rendered else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (" " in text or not text) else text


def logging_config(json_lines: bool) -> dict[str, Any]:
    """A dictConfig for the faust worker (`logging_config` setting)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": StructuredFormatter, "json_lines": json_lines}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": "INFO"},
        # aiokafka reports every reconnect and rebalance step at INFO.
        "loggers": {"aiokafka": {"level": "WARNING"}},
    }
