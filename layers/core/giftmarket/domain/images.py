"""Gifticon images: uploaded straight to S3, then attached to an ask or a sell-now order."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Self

from giftmarket.domain import events
from giftmarket.domain.errors import ImageUnusable, NotFound
from giftmarket.domain.events import DomainEvent

ALLOWED_CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
MAX_IMAGE_BYTES = 5 * 1024 * 1024
IMAGES_PREFIX = "images/"
PENDING_IMAGE_TTL = timedelta(hours=24)
CANCELLED_ASK_IMAGE_RETENTION = timedelta(days=7)
UNTRACKED_OBJECT_TTL = timedelta(hours=24)


class ImageStatus(StrEnum):
    PENDING = "PENDING"
    ATTACHED = "ATTACHED"
    # The cleanup decided, under the row's lock, that the image goes, and committed that
    # before touching S3: from here on nothing can attach it. DELETED once S3 confirms.
    DELETING = "DELETING"
    DELETED = "DELETED"


def normalize_content_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def s3_key_for(owner_id: str, image_id: str) -> str:
    return f"{IMAGES_PREFIX}{owner_id}/{image_id}"


@dataclass(eq=False, kw_only=True)
class Image:
    id: str
    owner_id: str
    s3_key: str
    content_type: str
    status: ImageStatus
    size_bytes: int | None
    created_at: datetime
    attached_at: datetime | None
    deleted_at: datetime | None
    version: int
    events: list[DomainEvent] = field(default_factory=list, repr=False)

    @classmethod
    def request(cls, *, image_id: str, owner_id: str, content_type: str, now: datetime) -> Self:
        content_type = normalize_content_type(content_type)
        if content_type not in ALLOWED_CONTENT_TYPES:
            raise ImageUnusable(f"content type must be one of {sorted(ALLOWED_CONTENT_TYPES)}.")
        image = cls(
            id=image_id,
            owner_id=owner_id,
            s3_key=s3_key_for(owner_id, image_id),
            content_type=content_type,
            status=ImageStatus.PENDING,
            size_bytes=None,
            created_at=now,
            attached_at=None,
            deleted_at=None,
            version=1,
        )
        image.events.append(
            events.ImageRequested(
                aggregate_id=image.id,
                version=image.version,
                occurred_at=now,
                image_id=image.id,
                owner_id=owner_id,
                s3_key=image.s3_key,
                content_type=content_type,
            )
        )
        return image

    def ensure_attachable(
        self, by_user: str, object_size: int | None, object_content_type: str | None
    ) -> None:
        """`object_size` and `object_content_type` come from S3 (HEAD); None means the
        object was never uploaded."""
        if by_user != self.owner_id:
            raise NotFound("image")
        if self.status is not ImageStatus.PENDING:
            raise ImageUnusable("the image is already used or deleted.")
        if object_size is None or object_content_type is None:
            raise ImageUnusable("the image has not been uploaded.")
        if object_size > MAX_IMAGE_BYTES:
            raise ImageUnusable(f"the image is larger than {MAX_IMAGE_BYTES} bytes.")
        if normalize_content_type(object_content_type) not in ALLOWED_CONTENT_TYPES:
            raise ImageUnusable("the uploaded object is not a PNG, JPEG or WebP image.")

    def attach(
        self,
        *,
        by_user: str,
        object_size: int | None,
        object_content_type: str | None,
        now: datetime,
        sell_bid_id: str | None = None,
        order_id: str | None = None,
    ) -> None:
        if (sell_bid_id is None) == (order_id is None):
            raise ValueError("an image attaches to exactly one sell bid or order")
        self.ensure_attachable(by_user, object_size, object_content_type)
        self.status = ImageStatus.ATTACHED
        self.size_bytes = object_size
        self.attached_at = now
        self.version += 1
        self.events.append(
            events.ImageAttached(
                aggregate_id=self.id,
                version=self.version,
                occurred_at=now,
                image_id=self.id,
                owner_id=self.owner_id,
                sell_bid_id=sell_bid_id,
                order_id=order_id,
            )
        )

    def is_abandoned_upload(self, now: datetime) -> bool:
        return self.status is ImageStatus.PENDING and self.created_at < now - PENDING_IMAGE_TTL

    def begin_deletion(self, *, reason: str, now: datetime) -> bool:
        """Returns whether anything changed. Whether the image may go (no open ask, no
        order) is the cleanup's decision (`domain.image_cleanup`), not the image's."""
        if self.status in (ImageStatus.DELETING, ImageStatus.DELETED):
            return False
        self.status = ImageStatus.DELETING
        self.version += 1
        self.events.append(
            events.ImageDeletionStarted(
                aggregate_id=self.id,
                version=self.version,
                occurred_at=now,
                image_id=self.id,
                owner_id=self.owner_id,
                s3_key=self.s3_key,
                reason=reason,
            )
        )
        return True

    def mark_deleted(self, now: datetime) -> bool:
        """Returns whether anything changed; deleting twice is harmless. Whether the image
        may go (no open ask, no order) is the cleanup job's decision, not the image's."""
        if self.status is ImageStatus.DELETED:
            return False
        self.status = ImageStatus.DELETED
        self.deleted_at = now
        self.version += 1
        self.events.append(
            events.ImageDeleted(
                aggregate_id=self.id,
                version=self.version,
                occurred_at=now,
                image_id=self.id,
                owner_id=self.owner_id,
                s3_key=self.s3_key,
            )
        )
        return True
