"""Errors the pipeline raises, by what the task should do about them."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: ``reason`` is what the audit trail shows."""

    @property
    def reason(self) -> str:
        return f"{type(self).__name__}: {self}"


class RetriableError(PipelineError):
    """Transient (PACS unreachable, database busy): retried with backoff, then ``failed``."""


class PermanentError(PipelineError):
    """Will fail again (no images, missing files): the job fails once with this reason."""


class BadInputError(PermanentError):
    """The series itself cannot be analysed: the job is ``quarantined``."""


class StaleRunError(PipelineError):
    """The job was re-queued (late instances) while this run was in flight: stop quietly."""
