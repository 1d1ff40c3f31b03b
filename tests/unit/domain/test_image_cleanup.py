from datetime import UTC, datetime, timedelta

import pytest

from giftmarket.domain import events
from giftmarket.domain.errors import ImageUnusable, InvalidField
from giftmarket.domain.image_cleanup import UNUSED, CleanupReason, CleanupRules, ImageUsage
from giftmarket.domain.images import Image, ImageStatus
from giftmarket.domain.orderbook import BidStatus

AS_OF = datetime(2025, 3, 14, 18, 0, tzinfo=UTC)  # 03:00 in Seoul
TICK = timedelta(microseconds=1)
DAY = timedelta(days=1)
RULES = CleanupRules(AS_OF)


def image(created_at: datetime, status: ImageStatus = ImageStatus.PENDING) -> Image:
    requested = Image.request(
        image_id="image-1", owner_id="sally", content_type="image/png", now=created_at
    )
    requested.events.clear()
    requested.status = status
    return requested


def cancelled_ask(closed_at: datetime) -> ImageUsage:
    return ImageUsage(ask_status=BidStatus.CANCELLED, ask_changed_at=closed_at)


OPEN_ASK = ImageUsage(ask_status=BidStatus.OPEN, ask_changed_at=AS_OF - 30 * DAY)
MATCHED_ASK = ImageUsage(
    ask_status=BidStatus.MATCHED, ask_changed_at=AS_OF - 30 * DAY, in_order=True
)
SOLD_NOW = ImageUsage(in_order=True)


def test_pending_upload_goes_only_once_older_than_24_hours() -> None:
    assert RULES.reason_to_delete(image(AS_OF - DAY), UNUSED) is None
    assert RULES.reason_to_delete(image(AS_OF - DAY - TICK), UNUSED) is (
        CleanupReason.ABANDONED_UPLOAD
    )


def test_image_of_a_cancelled_ask_goes_only_after_7_days() -> None:
    old = image(AS_OF - 30 * DAY, ImageStatus.ATTACHED)

    assert RULES.reason_to_delete(old, cancelled_ask(AS_OF - 6 * DAY)) is None
    assert RULES.reason_to_delete(old, cancelled_ask(AS_OF - 7 * DAY)) is None
    assert RULES.reason_to_delete(old, cancelled_ask(AS_OF - 7 * DAY - TICK)) is (
        CleanupReason.CANCELLED_ASK
    )


def test_image_of_an_expired_ask_goes_7_days_after_it_expired_not_after_it_was_listed() -> None:
    old = image(AS_OF - 30 * DAY, ImageStatus.ATTACHED)

    def expired_ask(closed_at: datetime) -> ImageUsage:
        return ImageUsage(ask_status=BidStatus.EXPIRED, ask_changed_at=closed_at)

    assert RULES.reason_to_delete(old, expired_ask(AS_OF - 7 * DAY)) is None
    assert RULES.reason_to_delete(old, expired_ask(AS_OF - 7 * DAY - TICK)) is (
        CleanupReason.EXPIRED_ASK
    )
    # An expired ask is no open ask: its image is not live, but an order's always is.
    assert not expired_ask(AS_OF - 30 * DAY).live
    in_order = ImageUsage(BidStatus.EXPIRED, AS_OF - 30 * DAY, in_order=True)
    assert RULES.reason_to_delete(old, in_order) is None


@pytest.mark.parametrize("status", list(ImageStatus))
@pytest.mark.parametrize(
    "usage", [OPEN_ASK, MATCHED_ASK, SOLD_NOW], ids=["open", "sold", "sell-now"]
)
def test_an_image_of_an_open_ask_or_an_order_never_goes_whatever_its_status(
    status: ImageStatus, usage: ImageUsage
) -> None:
    assert RULES.reason_to_delete(image(AS_OF - 365 * DAY, status), usage) is None


def test_an_attached_image_goes_for_a_cancelled_ask_only() -> None:
    old = image(AS_OF - 30 * DAY, ImageStatus.ATTACHED)

    assert RULES.reason_to_delete(old, UNUSED) is None
    assert RULES.reason_to_delete(old, MATCHED_ASK) is None


def test_an_unfinished_deletion_goes_at_any_age() -> None:
    fresh = image(AS_OF, ImageStatus.DELETING)

    assert RULES.reason_to_delete(fresh, UNUSED) is CleanupReason.UNFINISHED_DELETION


def test_a_deleted_image_is_not_deleted_again() -> None:
    assert RULES.reason_to_delete(image(AS_OF - 30 * DAY, ImageStatus.DELETED), UNUSED) is None


def test_an_untracked_object_goes_only_once_older_than_24_hours() -> None:
    assert not RULES.untracked_object_expired(AS_OF - DAY)
    assert RULES.untracked_object_expired(AS_OF - DAY - TICK)


def test_rules_need_an_instant_with_a_time_zone() -> None:
    with pytest.raises(InvalidField):
        CleanupRules(datetime(2025, 3, 14, 18, 0))


def test_rules_run_as_of_now_or_a_past_instant_never_a_future_one() -> None:
    assert CleanupRules.at(None, AS_OF).as_of == AS_OF
    assert CleanupRules.at(AS_OF - DAY, AS_OF).as_of == AS_OF - DAY
    with pytest.raises(InvalidField):
        CleanupRules.at(AS_OF + TICK, AS_OF)


def test_an_image_being_deleted_can_no_longer_be_attached() -> None:
    pending = image(AS_OF - 2 * DAY)

    assert pending.begin_deletion(reason="abandoned_upload", now=AS_OF)
    assert (pending.status, pending.version) == (ImageStatus.DELETING, 2)
    assert not pending.begin_deletion(reason="abandoned_upload", now=AS_OF + TICK)
    assert len(pending.events) == 1
    with pytest.raises(ImageUnusable):
        pending.ensure_attachable("sally", 1_000, "image/png")


def test_deleting_records_the_decision_then_the_deletion_one_version_each() -> None:
    going = image(AS_OF - 2 * DAY)

    going.begin_deletion(reason="abandoned_upload", now=AS_OF)
    assert going.mark_deleted(AS_OF + TICK)

    common = {"image_id": "image-1", "owner_id": "sally", "s3_key": "images/sally/image-1"}
    assert going.events == [
        events.ImageDeletionStarted(
            aggregate_id="image-1", version=2, occurred_at=AS_OF, reason="abandoned_upload",
            **common,
        ),
        events.ImageDeleted(aggregate_id="image-1", version=3, occurred_at=AS_OF + TICK, **common),
    ]  # fmt: skip
    assert (going.status, going.deleted_at) == (ImageStatus.DELETED, AS_OF + TICK)
