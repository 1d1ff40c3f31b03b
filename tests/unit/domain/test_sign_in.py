from datetime import UTC, datetime, timedelta

import pytest

from giftmarket.domain.errors import DomainError
from giftmarket.domain.sign_in import FailureWindow, TooManyAttempts, lockout

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 14, 3, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=900)


def failed(times: int, *, at: datetime = T0) -> FailureWindow:
    window = FailureWindow.opened(at, WINDOW)
    for _ in range(times - 1):
        window = window.counted(at, WINDOW)
    return window


def test_a_subject_below_its_limit_may_try() -> None:
    assert failed(4).retry_after(T0, limit=5) is None


def test_the_limit_locks_out_until_the_window_opened_by_the_first_failure_ends() -> None:
    window = failed(5)

    assert window.retry_after(T0, limit=5) == 900
    assert window.retry_after(T0 + timedelta(seconds=899), limit=5) == 1
    assert window.retry_after(T0 + WINDOW, limit=5) is None


def test_retry_after_rounds_up_to_a_whole_second() -> None:
    assert failed(5).retry_after(T0 + timedelta(seconds=899, milliseconds=1), limit=5) == 1
    assert failed(5).retry_after(T0 + timedelta(seconds=0.5), limit=5) == 900


def test_later_failures_count_in_the_same_window_without_moving_its_end() -> None:
    window = failed(1).counted(T0 + timedelta(seconds=600), WINDOW)

    assert window.failures == 2
    assert window.started_at == T0
    assert window.expires_at == T0 + WINDOW


def test_a_failure_after_the_window_opens_a_new_one_counting_from_one() -> None:
    later = T0 + WINDOW + timedelta(seconds=1)

    window = failed(5).counted(later, WINDOW)

    assert (window.started_at, window.failures, window.expires_at) == (later, 1, later + WINDOW)
    assert window.retry_after(later, limit=5) is None


def test_uncounting_takes_one_failure_back_and_the_last_one_closes_the_window() -> None:
    assert failed(3).uncounted(T0) == failed(2)
    assert failed(1).uncounted(T0) is None
    assert failed(3).uncounted(T0 + WINDOW) is None


def test_lockout_waits_for_every_locked_subject_and_ignores_the_others() -> None:
    email = failed(5)
    address = failed(50, at=T0 + timedelta(seconds=100))

    assert lockout([(email, 5), (address, 50)], T0 + timedelta(seconds=200)) == 800
    assert lockout([(email, 5), (failed(3), 50)], T0) == 900
    assert lockout([(None, 5), (failed(49), 50)], T0) is None
    assert lockout([], T0) is None


def test_too_many_attempts_is_a_domain_error_with_its_code_and_at_least_one_second() -> None:
    error = TooManyAttempts(0)

    assert isinstance(error, DomainError)
    assert error.code == "too_many_attempts"
    assert error.retry_after_seconds == 1
    assert TooManyAttempts(42).retry_after_seconds == 42
