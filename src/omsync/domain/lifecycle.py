"""The two state machines of omsync as plain types and transitions; the ledger persists them.

**Task lifecycle** (``TaskStatus``): a task is SYNCHRONIZING or STOPPED. In both, events are
accepted and held in the ledger; only a SYNCHRONIZING task's keys are claimed and copied; only a
STOPPED task may be deleted. Start is STOPPED → SYNCHRONIZING, stop is SYNCHRONIZING → STOPPED;
any other request is refused with :class:`~omsync.domain.errors.TaskBusy`.

**Key states** (one ledger row per task and key):

- ``pending``: accepted occurrences wait for a copy (due at ``due_at``);
- ``inflight``: a worker holds the key under a lease (claim);
- ``done``: the latest generation has its outcome (SUCCESS or SKIP);
- ``failed``: the latest generation ended in FAILURE (listed, re-drivable).

A key is *open* (counted in the task's backlog) while pending or in flight. Accepting an
occurrence of a settled key (done, failed, or never seen) makes it pending; an open key only
gains a generation. A claim takes pending to inflight; the final outcome takes inflight to done or
failed; a retryable error or a released lease puts it back to pending; a re-drive takes failed to
pending.
"""

from __future__ import annotations

import enum

from omsync.domain.errors import TaskBusy
from omsync.domain.model import OutcomeKind, TaskStatus

__all__ = [
    "KEY_TRANSITIONS",
    "SETTLED_KEY_STATES",
    "KeyState",
    "TaskOperation",
    "accepted_state",
    "check_task_operation",
    "claims_allowed",
    "final_state",
]


class KeyState(enum.StrEnum):
    """The state of a key's ledger row (the stored value is the enum's value)."""

    PENDING = "pending"
    INFLIGHT = "inflight"
    DONE = "done"
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        """Whether the key still waits for an outcome (pending or in flight)."""
        return self in (KeyState.PENDING, KeyState.INFLIGHT)


# The states an accepted occurrence turns into pending (see :func:`accepted_state`).
SETTLED_KEY_STATES: frozenset[str] = frozenset({KeyState.DONE.value, KeyState.FAILED.value})

# Every allowed move of a key: accept/re-drive (→ pending), claim (→ inflight), outcome (→ done
# or failed), retry later or lease released (inflight → pending).
KEY_TRANSITIONS: dict[KeyState, frozenset[KeyState]] = {
    KeyState.PENDING: frozenset({KeyState.INFLIGHT}),
    KeyState.INFLIGHT: frozenset({KeyState.DONE, KeyState.FAILED, KeyState.PENDING}),
    KeyState.DONE: frozenset({KeyState.PENDING}),
    KeyState.FAILED: frozenset({KeyState.PENDING}),
}


def accepted_state(state: KeyState | None) -> tuple[KeyState, bool]:
    """The key's state after an accepted occurrence, and whether it newly became pending (it
    was settled or unknown, ``None``): the backlog bound counts those."""
    if state is None or state in SETTLED_KEY_STATES:
        return KeyState.PENDING, True
    return state, False


def final_state(kind: OutcomeKind) -> KeyState:
    """Where a final outcome leaves the key: FAILURE → failed, SUCCESS and SKIP → done."""
    return KeyState.FAILED if kind is OutcomeKind.FAILURE else KeyState.DONE


class TaskOperation(enum.StrEnum):
    """What an operator asks of a task."""

    START = "start"
    STOP = "stop"
    DELETE = "delete"


# operation → (the status it requires, the status it leaves; None: the task is gone)
_TASK_OPERATIONS: dict[TaskOperation, tuple[TaskStatus, TaskStatus | None]] = {
    TaskOperation.START: (TaskStatus.STOPPED, TaskStatus.SYNCHRONIZING),
    TaskOperation.STOP: (TaskStatus.SYNCHRONIZING, TaskStatus.STOPPED),
    TaskOperation.DELETE: (TaskStatus.STOPPED, None),
}


def check_task_operation(status: TaskStatus | str, operation: TaskOperation) -> TaskStatus | None:
    """The task's status after ``operation`` (None after a delete) when allowed from ``status``.

    Raises :class:`~omsync.domain.errors.TaskBusy`, saying why, when the task is not in the
    status the operation requires."""
    required, target = _TASK_OPERATIONS[operation]
    if status == required.value:
        return target
    if operation is TaskOperation.DELETE:
        raise TaskBusy("a synchronizing task cannot be deleted; stop it first")
    assert target is not None
    raise TaskBusy(f"the task is {status}; only a {required.value} task can become {target.value}")


def claims_allowed(status: TaskStatus | str) -> bool:
    """Whether the task's keys may be claimed and copied (only while SYNCHRONIZING)."""
    return status == TaskStatus.SYNCHRONIZING.value
