"""Which images the daily cleanup deletes, as of an instant. Pure: no I/O here.

- an upload slot still `PENDING` 24 hours after it was asked for (the seller never used it);
- the image of an ask cancelled more than 7 days ago, or expired more than 7 days ago (the
  same retention, counted from the moment the expiry job closed it);
- an object under the images prefix that no image row names, 24 hours after its upload;
- an image a run already decided to delete (`DELETING`) whose S3 delete did not finish.

Never the image of an open ask or of any order, whatever its status says: the guard looks at
what refers to the image, not only at the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from giftmarket.domain.errors import InvalidField
from giftmarket.domain.images import (
    CANCELLED_ASK_IMAGE_RETENTION,
    PENDING_IMAGE_TTL,
    UNTRACKED_OBJECT_TTL,
    Image,
    ImageStatus,
)
from giftmarket.domain.orderbook import BidStatus


class CleanupReason(StrEnum):
    ABANDONED_UPLOAD = "abandoned_upload"
    CANCELLED_ASK = "cancelled_ask"
    EXPIRED_ASK = "expired_ask"
    UNTRACKED_OBJECT = "untracked_object"
    UNFINISHED_DELETION = "unfinished_deletion"


@dataclass(frozen=True)
class ImageUsage:
    """What refers to an image: the ask it was attached to (at most one) and orders."""

    ask_status: BidStatus | None = None
    ask_changed_at: datetime | None = None  # a closed ask's closing time
    in_order: bool = False

    @property
    def live(self) -> bool:
        return self.in_order or self.ask_status is BidStatus.OPEN


UNUSED = ImageUsage()

# Asks that left the book unsold, and why their image goes once the retention is over.
_WITHDRAWN = {
    BidStatus.CANCELLED: CleanupReason.CANCELLED_ASK,
    BidStatus.EXPIRED: CleanupReason.EXPIRED_ASK,
}
WITHDRAWN_ASK_STATUSES = frozenset(_WITHDRAWN)


@dataclass(frozen=True)
class CleanupCandidate:
    """An image row a run looks at: found by the rules' SQL, decided by `reason_to_delete`
    under the row's lock."""

    image_id: str
    s3_key: str
    reason: CleanupReason


@dataclass(frozen=True)
class CleanupRules:
    as_of: datetime

    def __post_init__(self) -> None:
        if self.as_of.tzinfo is None or self.as_of.utcoffset() is None:
            raise InvalidField("as_of", "must be an instant with a time zone.")

    @classmethod
    def at(cls, as_of: datetime | None, now: datetime) -> CleanupRules:
        """The rules as of `as_of` (a backfill) or of now. Never a future instant: uploads
        still in progress would count as abandoned."""
        if as_of is None:
            return cls(now)
        rules = cls(as_of)
        if as_of > now:
            raise InvalidField("as_of", "must not be in the future.")
        return rules

    @property
    def pending_before(self) -> datetime:
        return self.as_of - PENDING_IMAGE_TTL

    @property
    def cancelled_before(self) -> datetime:
        return self.as_of - CANCELLED_ASK_IMAGE_RETENTION

    @property
    def untracked_before(self) -> datetime:
        return self.as_of - UNTRACKED_OBJECT_TTL

    def reason_to_delete(self, image: Image, usage: ImageUsage) -> CleanupReason | None:
        """Why `image` goes now, or None if it stays."""
        if image.status is ImageStatus.DELETED or usage.live:
            return None
        if image.status is ImageStatus.DELETING:
            return CleanupReason.UNFINISHED_DELETION
        if image.status is ImageStatus.PENDING:
            return CleanupReason.ABANDONED_UPLOAD if image.is_abandoned_upload(self.as_of) else None
        withdrawn = None if usage.ask_status is None else _WITHDRAWN.get(usage.ask_status)
        if (
            withdrawn is not None
            and usage.ask_changed_at is not None
            and usage.ask_changed_at < self.cancelled_before
        ):
            return withdrawn
        return None

    def untracked_object_expired(self, last_modified: datetime) -> bool:
        """An object no row names goes once it is older than the 24 hours an upload takes."""
        return last_modified < self.untracked_before
