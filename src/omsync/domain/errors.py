"""Refusals of the domain: one root, :class:`DomainError`, so that the API maps every one of
them to its OMS error body in one place (``omsync.api.errors.domain_error_handler``) and the
engine, the dashboard and the CLI catch them without knowing which layer raised them.

Each class also keeps the builtin base it had before (``LookupError``, ``RuntimeError``) so
that code catching those keeps working.
"""

from __future__ import annotations

__all__ = ["BacklogFull", "DomainError", "TaskBusy", "TaskLimitReached", "TaskNotFound"]


class DomainError(Exception):
    """Root of the refusals of the domain."""


class TaskNotFound(DomainError, LookupError):
    """The task does not exist (or belongs to another project: a project never learns that
    another project's task exists)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.task_id = task_id


class TaskBusy(DomainError, RuntimeError):
    """The operation is not allowed in the task's current status; the message says why."""


class TaskLimitReached(DomainError, RuntimeError):
    """The project already owns ``limit`` tasks, the configured maximum."""

    def __init__(self, project_id: str, limit: int) -> None:
        super().__init__(f"project {project_id} already owns {limit} sync tasks")
        self.project_id = project_id
        self.limit = limit


class BacklogFull(DomainError, RuntimeError):
    """The task's pending backlog is at its configured bound (``pending`` keys); the caller
    should retry after ``retry_after`` seconds."""

    def __init__(self, pending: int, retry_after: int, *, task_id: str = "") -> None:
        super().__init__(f"{pending} keys pending")
        self.pending = pending
        self.retry_after = retry_after
        self.task_id = task_id
