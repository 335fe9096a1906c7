"""The task lifecycle and the key-state machine of ``omsync.domain.lifecycle``."""

from __future__ import annotations

import pytest

from omsync.domain.errors import DomainError, TaskBusy
from omsync.domain.lifecycle import (
    KEY_TRANSITIONS,
    SETTLED_KEY_STATES,
    KeyState,
    TaskOperation,
    accepted_state,
    check_task_operation,
    claims_allowed,
    final_state,
)
from omsync.domain.model import OutcomeKind, TaskStatus


@pytest.mark.parametrize(("status", "operation", "after"), [
    (TaskStatus.STOPPED, TaskOperation.START, TaskStatus.SYNCHRONIZING),
    (TaskStatus.SYNCHRONIZING, TaskOperation.STOP, TaskStatus.STOPPED),
    (TaskStatus.STOPPED, TaskOperation.DELETE, None),
])
def test_allowed_task_operations(status: TaskStatus, operation: TaskOperation, after: TaskStatus | None) -> None:
    assert check_task_operation(status, operation) == after
    assert check_task_operation(status.value, operation) == after  # as read from the database


@pytest.mark.parametrize(("status", "operation", "message"), [
    ("SYNCHRONIZING", TaskOperation.START, "the task is SYNCHRONIZING; only a STOPPED task can become SYNCHRONIZING"),
    ("STOPPED", TaskOperation.STOP, "the task is STOPPED; only a SYNCHRONIZING task can become STOPPED"),
    ("SYNCHRONIZING", TaskOperation.DELETE, "a synchronizing task cannot be deleted; stop it first"),
])
def test_refused_task_operations_say_why(status: str, operation: TaskOperation, message: str) -> None:
    with pytest.raises(TaskBusy) as refused:
        check_task_operation(status, operation)
    assert str(refused.value) == message
    assert isinstance(refused.value, DomainError)


def test_only_a_synchronizing_task_is_copied() -> None:
    assert claims_allowed(TaskStatus.SYNCHRONIZING)
    assert not claims_allowed(TaskStatus.STOPPED)
    assert not claims_allowed("STOPPED")


def test_accept_makes_settled_and_unknown_keys_pending_and_leaves_open_ones() -> None:
    assert accepted_state(None) == (KeyState.PENDING, True)
    assert accepted_state(KeyState.DONE) == (KeyState.PENDING, True)
    assert accepted_state(KeyState.FAILED) == (KeyState.PENDING, True)
    assert accepted_state(KeyState.PENDING) == (KeyState.PENDING, False)
    assert accepted_state(KeyState.INFLIGHT) == (KeyState.INFLIGHT, False)
    assert {s for s in KeyState if not s.is_open} == SETTLED_KEY_STATES


def test_outcomes_and_transitions_agree() -> None:
    assert final_state(OutcomeKind.FAILURE) is KeyState.FAILED
    assert final_state(OutcomeKind.SUCCESS) is KeyState.DONE
    assert final_state(OutcomeKind.SKIP) is KeyState.DONE
    for kind in OutcomeKind:
        assert final_state(kind) in KEY_TRANSITIONS[KeyState.INFLIGHT]  # an outcome ends a claim
    for state in KeyState:
        after, _ = accepted_state(state)
        assert after == state or after in KEY_TRANSITIONS[state]  # accepting is an allowed move
    assert KEY_TRANSITIONS[KeyState.PENDING] == {KeyState.INFLIGHT}  # only a claim leaves pending
