from datetime import datetime, timedelta

import pytest

from giftmarket.domain import events
from giftmarket.domain.errors import ImageUnusable, NotFound
from giftmarket.domain.images import MAX_IMAGE_BYTES, PENDING_IMAGE_TTL, Image, ImageStatus

pytestmark = pytest.mark.unit


def requested(now: datetime, content_type: str = "image/png") -> Image:
    return Image.request(image_id="image-1", owner_id="sally", content_type=content_type, now=now)


def test_requested_image_is_pending_under_its_owners_prefix(now: datetime) -> None:
    image = requested(now)

    assert image.s3_key == "images/sally/image-1"
    assert (image.status, image.version) == (ImageStatus.PENDING, 1)
    assert image.events == [
        events.ImageRequested(
            aggregate_id="image-1",
            version=1,
            occurred_at=now,
            image_id="image-1",
            owner_id="sally",
            s3_key="images/sally/image-1",
            content_type="image/png",
        )
    ]


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "image/webp", "Image/PNG"])
def test_png_jpeg_and_webp_may_be_requested(content_type: str, now: datetime) -> None:
    assert requested(now, content_type).content_type == content_type.lower()


@pytest.mark.parametrize("content_type", ["image/gif", "text/plain", "application/pdf", ""])
def test_other_content_types_are_refused(content_type: str, now: datetime) -> None:
    with pytest.raises(ImageUnusable):
        requested(now, content_type)


def test_attaching_an_uploaded_image_marks_it_attached(now: datetime) -> None:
    image = requested(now)

    image.attach(
        by_user="sally",
        object_size=MAX_IMAGE_BYTES,
        object_content_type="image/png",
        now=now,
        sell_bid_id="ask-1",
    )

    assert (image.status, image.size_bytes, image.attached_at) == (
        ImageStatus.ATTACHED,
        MAX_IMAGE_BYTES,
        now,
    )
    assert image.version == 2
    attached = image.events[-1]
    assert isinstance(attached, events.ImageAttached)
    assert (attached.sell_bid_id, attached.order_id) == ("ask-1", None)


def test_attaching_someone_elses_image_is_not_found(now: datetime) -> None:
    image = requested(now)

    with pytest.raises(NotFound):
        image.ensure_attachable("mallory", 1_000, "image/png")


def test_attaching_an_image_that_was_never_uploaded_is_refused(now: datetime) -> None:
    with pytest.raises(ImageUnusable):
        requested(now).ensure_attachable("sally", None, None)


def test_attaching_an_image_over_5_mib_is_refused(now: datetime) -> None:
    with pytest.raises(ImageUnusable):
        requested(now).ensure_attachable("sally", MAX_IMAGE_BYTES + 1, "image/png")


@pytest.mark.parametrize("uploaded_type", ["image/gif", "text/html", "application/octet-stream"])
def test_attaching_an_upload_of_another_type_is_refused(uploaded_type: str, now: datetime) -> None:
    with pytest.raises(ImageUnusable):
        requested(now).ensure_attachable("sally", 1_000, uploaded_type)


def test_an_image_attaches_only_once(now: datetime) -> None:
    image = requested(now)
    image.attach(
        by_user="sally", object_size=1_000, object_content_type="image/png", now=now, order_id="o"
    )

    with pytest.raises(ImageUnusable):
        image.attach(
            by_user="sally",
            object_size=1_000,
            object_content_type="image/png",
            now=now,
            sell_bid_id="ask-2",
        )


def test_an_image_attaches_to_exactly_one_target(now: datetime) -> None:
    image = requested(now)

    with pytest.raises(ValueError):
        image.attach(by_user="sally", object_size=1, object_content_type="image/png", now=now)
    assert image.status is ImageStatus.PENDING


def test_deleted_image_can_no_longer_be_attached(now: datetime) -> None:
    image = requested(now)
    image.mark_deleted(now)

    with pytest.raises(ImageUnusable):
        image.ensure_attachable("sally", 1_000, "image/png")


def test_marking_deleted_twice_changes_nothing_the_second_time(now: datetime) -> None:
    image = requested(now)

    assert image.mark_deleted(now)
    assert not image.mark_deleted(now + timedelta(hours=1))
    assert (image.status, image.deleted_at, image.version) == (ImageStatus.DELETED, now, 2)


def test_pending_upload_is_abandoned_only_once_older_than_24_hours(now: datetime) -> None:
    image = requested(now)

    assert not image.is_abandoned_upload(now + PENDING_IMAGE_TTL)
    assert image.is_abandoned_upload(now + PENDING_IMAGE_TTL + timedelta(microseconds=1))


def test_attached_image_is_never_an_abandoned_upload(now: datetime) -> None:
    image = requested(now)
    image.attach(
        by_user="sally", object_size=1_000, object_content_type="image/png", now=now, order_id="o"
    )

    assert not image.is_abandoned_upload(now + timedelta(days=30))
