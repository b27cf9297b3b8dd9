"""The HazardWatch exception tree. Library exceptions (asyncua, pymodbus, psycopg) are
translated into it at the adapter boundary, so callers catch only these::

    HazardWatchError
    ├── ConfigError            malformed or inconsistent configuration; carries every issue found
    ├── BatchError             a ReadingBatch built from arrays of the wrong dtype, shape or length
    ├── StorageError           historian failures
    │   ├── DatabaseUnavailable    the database cannot be reached (spool and retry)
    │   └── SchemaError            migrations missing, or a database newer than the code
    ├── SourceError            a collector source lost its device (the runner reconnects)
    │   └── SourceConfigError      a source cannot be built from its device config
    ├── RuleError              a rule set cannot be compiled
    └── NotifyError            a notification channel failed
        └── RetryableNotifyError   a transient failure; the dispatcher retries
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "BatchError",
    "ConfigError",
    "ConfigIssue",
    "DatabaseUnavailable",
    "HazardWatchError",
    "NotifyError",
    "RetryableNotifyError",
    "RuleError",
    "SchemaError",
    "SourceConfigError",
    "SourceError",
    "StorageError",
]


class HazardWatchError(Exception):
    """Base of every error HazardWatch raises on purpose."""


@dataclass(frozen=True, order=True)
class ConfigIssue:
    """One problem in a configuration: where it is (file, line, path in the document) and what."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(HazardWatchError):
    """Configuration is invalid. ``issues`` lists every problem found, not just the first."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: Sequence[ConfigIssue] = sorted(set(issues))
        super().__init__("\n".join(str(i) for i in self.issues) or "invalid configuration")


class BatchError(HazardWatchError, ValueError):
    """A ReadingBatch was given arrays of the wrong dtype, shape or length."""


class StorageError(HazardWatchError):
    """The historian failed."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached; writers spool and retry."""


class SchemaError(StorageError):
    """The database schema does not match the code (missing migrations, or newer than the code)."""


class SourceError(HazardWatchError):
    """A collector source lost its device; the runner marks its tags BAD and reconnects."""


class SourceConfigError(SourceError):
    """A source cannot be built from its device configuration."""


class RuleError(HazardWatchError):
    """A rule set cannot be compiled."""


class NotifyError(HazardWatchError):
    """A notification channel failed permanently for this message."""


class RetryableNotifyError(NotifyError):
    """A notification channel failed transiently; the dispatcher retries."""
