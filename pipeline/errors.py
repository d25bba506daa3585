"""The pipeline's error types: what is retried, what is dead-lettered, what stops a worker."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error eventpipe raises on purpose."""


class InvalidEvent(PipelineError):
    """An event or record that can never be stored: dead-lettered with its reason, offset committed,
    never retried."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SinkUnavailable(PipelineError):
    """The sink cannot take the batch now (down, disk full, read-only): pause, back off, do not commit."""


class ConfigError(PipelineError):
    """A setting or the tenants file is wrong; raised at start-up, never mid-stream."""


class ServiceMissing(PipelineError):
    """A tool the local services need (Java, Maven, PostgreSQL) is not installed."""


class UnstorableEvent(PipelineError):
    """The sink refused an event's own data (e.g. a value the database cannot represent): retrying
    cannot help; the event is dead-lettered with this reason."""
