"""The image cleanup's application service on the in-memory fakes: batching, the report,
dry runs and refused keys, without servers (the real primary and S3 are in
tests/integration/test_image_janitor.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from tests.support.fakes import FakeClock, FakeStore, FakeUnitOfWork, make_context

from giftmarket.commands.executor import CommandExecutor
from giftmarket.commands.ports import ImageObjects, ListedObject
from giftmarket.domain.image_cleanup import CleanupReason
from giftmarket.domain.images import Image, ImageStatus
from giftmarket.domain.users import User
from giftmarket.jobs.images import ImageJanitor, Outcome

DAY = timedelta(days=1)


@dataclass
class FakeObjects(ImageObjects):
    """A bucket: key → last modified; `refuse` keys are never deleted."""

    objects: dict[str, datetime] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)
    requests: list[list[str]] = field(default_factory=list)

    def list_objects(self, prefix: str) -> Iterator[ListedObject]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ListedObject(key, self.objects[key])

    def delete_objects(self, keys: Sequence[str]) -> dict[str, str]:
        self.requests.append(list(keys))
        for key in keys:
            if key not in self.refuse:
                self.objects.pop(key, None)
        return {key: "AccessDenied" for key in keys if key in self.refuse}


@dataclass
class World:
    store: FakeStore
    clock: FakeClock
    bucket: FakeObjects
    owner: User

    def janitor(self, batch_size: int = 1000) -> ImageJanitor:
        commands = CommandExecutor(
            lambda: FakeUnitOfWork(self.store), make_context(clock=self.clock)
        )
        return ImageJanitor(commands, self.bucket, batch_size=batch_size)

    def pending(self, requested_at: datetime) -> Image:
        image = Image.request(
            image_id=f"01IMAGE{len(self.store.rows['images']):019d}",
            owner_id=self.owner.id,
            content_type="image/png",
            now=requested_at,
        )
        with FakeUnitOfWork(self.store) as uow:
            uow.images.add(image)
            uow.commit()
        self.bucket.objects[image.s3_key] = requested_at
        return image

    def status(self, image: Image) -> ImageStatus:
        status: ImageStatus = self.store.rows["images"][image.id].status
        return status


@pytest.fixture
def world() -> World:
    clock = FakeClock()
    store = FakeStore()
    owner = User.sign_up(
        user_id="01OWNER0000000000000000000",
        email="owner@example.com",
        nickname="owner",
        password_hash="x",
        admin_emails=(),
        now=clock.now - 30 * DAY,
    )
    with FakeUnitOfWork(store) as uow:
        uow.users.add(owner)
        uow.commit()
    return World(store, clock, FakeObjects(), owner)


def test_rows_and_untracked_objects_go_in_requests_of_at_most_the_batch_size(
    world: World,
) -> None:
    old = [world.pending(world.clock.now - 2 * DAY) for _ in range(5)]
    young = world.pending(world.clock.now - DAY)
    strays = [f"images/nobody/{n}" for n in range(3)]
    for key in strays:
        world.bucket.objects[key] = world.clock.now - 2 * DAY

    report = world.janitor(batch_size=2).run()

    assert [len(keys) for keys in world.bucket.requests] == [2, 2, 1, 2, 1]
    assert [(e.image_id, e.reason, e.outcome) for e in report.entries] == [
        *((image.id, CleanupReason.ABANDONED_UPLOAD, Outcome.DELETED) for image in old),
        *((None, CleanupReason.UNTRACKED_OBJECT, Outcome.DELETED) for _ in strays),
    ]
    assert {world.status(image) for image in old} == {ImageStatus.DELETED}
    assert world.status(young) is ImageStatus.PENDING
    assert set(world.bucket.objects) == {young.s3_key}
    assert report.summary()["deleted"] == 8


def test_a_dry_run_reports_the_same_entries_and_touches_nothing(world: World) -> None:
    old = world.pending(world.clock.now - 2 * DAY)
    world.bucket.objects["images/nobody/x"] = world.clock.now - 2 * DAY
    outbox, objects = list(world.store.outbox), dict(world.bucket.objects)
    rows = dict(world.store.rows["images"])

    preview = world.janitor().run(dry_run=True)

    assert [(e.image_id, e.key, e.outcome) for e in preview.entries] == [
        (old.id, old.s3_key, Outcome.WOULD_DELETE),
        (None, "images/nobody/x", Outcome.WOULD_DELETE),
    ]
    assert world.bucket.requests == [] and world.bucket.objects == objects
    assert world.store.rows["images"] == rows and world.store.outbox == outbox


def test_a_refused_key_stays_deleting_and_the_next_run_finishes_it(world: World) -> None:
    image = world.pending(world.clock.now - 2 * DAY)
    world.bucket.refuse = {image.s3_key}

    first = world.janitor().run()
    world.bucket.refuse = set()
    second = world.janitor().run()

    assert [(e.outcome, e.detail) for e in first.entries] == [(Outcome.FAILED, "AccessDenied")]
    assert [(e.reason, e.outcome) for e in second.entries] == [
        (CleanupReason.UNFINISHED_DELETION, Outcome.DELETED)
    ]
    assert world.status(image) is ImageStatus.DELETED
    assert [type(e).__name__ for e in world.store.events if e.aggregate_id == image.id] == [
        "ImageRequested",
        "ImageDeletionStarted",
        "ImageDeleted",
    ]
