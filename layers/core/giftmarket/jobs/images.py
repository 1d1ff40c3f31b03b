"""The daily orphaned-image cleanup (PRODUCT.md, "Orphaned images"): the same code for the
scheduled function, `sam local invoke` and `giftmarket jobs clean-images`.

Image rows are cleaned in batches of at most 1000 (one DeleteObjects request), each in
three steps, in this order:

1. Claim, one transaction: lock the batch's image rows (FOR UPDATE, id order), decide each
   again with what refers to it now (`CleanupRules.reason_to_delete`: still a candidate, not
   in an open ask, not in any order) and set those that go to `DELETING`. This guard runs in
   the transaction that marks the row.
2. Delete the claimed keys from S3, only once the claim has committed.
3. Confirm, one transaction: the rows whose objects S3 deleted become `DELETED` (and
   `ImageDeleted` goes to the outbox). Keys S3 refused stay `DELETING`; every later run
   takes `DELETING` rows again, so they are retried until S3 deletes them.

Why this order: a seller attaches an image under the same row lock, and only a `PENDING`
one. An attach either commits before the claim locks the row (the claim then sees the ask
or order and leaves the image alone) or waits for the claim and finds `DELETING` (and is
refused). Deleting from S3 while holding the lock and marking afterwards would leave a
window: if that transaction failed after the S3 delete, the row would be `PENDING` again
with no object, and an attach that checked the object (HEAD, before taking its lock) could
still complete. Here a run that dies anywhere leaves its rows `PENDING` (nothing done) or
`DELETING` (unattachable, finished by the next run), never an attachable row without an
object.

Objects no row names have nothing to lock: rows are created before their upload URL
exists, so such a key cannot gain one; the keys are still looked up again right before
their delete.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from giftmarket.commands.context import CommandContext
from giftmarket.commands.executor import CommandExecutor, Work
from giftmarket.commands.ports import (
    MAX_KEYS_PER_DELETE,
    ImageObjects,
    UnitOfWork,
    UnitOfWorkFactory,
)
from giftmarket.domain.errors import InvalidField
from giftmarket.domain.image_cleanup import (
    UNUSED,
    CleanupCandidate,
    CleanupReason,
    CleanupRules,
    ImageUsage,
)
from giftmarket.domain.images import IMAGES_PREFIX, Image, ImageStatus

R = TypeVar("R")


class Outcome(StrEnum):
    DELETED = "deleted"
    WOULD_DELETE = "would_delete"
    FAILED = "failed"  # S3 did not delete it; the next run tries again
    SKIPPED_LIVE = "skipped_live"  # in an open ask or an order when checked under its lock
    SKIPPED = "skipped"  # no longer a candidate when checked again (e.g. another run's)


@dataclass(frozen=True)
class CleanupEntry:
    image_id: str | None  # None: an object that no image row names
    key: str
    reason: CleanupReason
    outcome: Outcome
    detail: str | None = None  # S3's error code, or why a candidate stays

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "key": self.key,
            "reason": self.reason.value,
            "outcome": self.outcome.value,
            "detail": self.detail,
        }


@dataclass
class CleanupReport:
    as_of: datetime
    dry_run: bool
    entries: list[CleanupEntry] = field(default_factory=list)

    def counts(self) -> Counter[Outcome]:
        return Counter(entry.outcome for entry in self.entries)

    @property
    def deleted(self) -> int:
        return self.counts()[Outcome.DELETED]

    @property
    def would_delete(self) -> int:
        return self.counts()[Outcome.WOULD_DELETE]

    @property
    def failed(self) -> int:
        return self.counts()[Outcome.FAILED]

    @property
    def skipped_live(self) -> int:
        return self.counts()[Outcome.SKIPPED_LIVE]

    def summary(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "as_of": self.as_of.isoformat(),
            "dry_run": self.dry_run,
            **{outcome.value: counts[outcome] for outcome in Outcome},
        }

    def as_dict(self, *, max_entries: int | None = None) -> dict[str, Any]:
        shown = self.entries if max_entries is None else self.entries[:max_entries]
        answer = {**self.summary(), "entries": [entry.as_dict() for entry in shown]}
        if len(shown) < len(self.entries):
            answer["entries_not_shown"] = len(self.entries) - len(shown)
        return answer


def parse_as_of(text: str) -> datetime:
    """An ISO-8601 instant with its time zone (`2025-03-14T03:00:00+09:00`, `...Z`)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InvalidField("as_of", f"{text!r} is not an ISO-8601 date and time.") from exc
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidField("as_of", f"{text!r} has no time zone; add one, e.g. +09:00 or Z.")
    return value


@dataclass(frozen=True)
class CleanupRequest:
    as_of: datetime | None = None
    dry_run: bool = False

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> CleanupRequest:
        """From an EventBridge Scheduler event: `as_of` and `dry_run` may be given at the
        top level (the schedule's input) or under `detail`; both are optional."""
        if not isinstance(event, Mapping):
            raise InvalidField("event", "the event must be a JSON object.")
        detail = event.get("detail")
        source: Mapping[str, Any] = detail if isinstance(detail, Mapping) else {}
        source = {**source, **{k: event[k] for k in ("as_of", "dry_run") if k in event}}
        as_of, dry_run = source.get("as_of"), source.get("dry_run", False)
        if as_of is not None and not isinstance(as_of, str):
            raise InvalidField("as_of", "as_of must be an ISO-8601 string.")
        if not isinstance(dry_run, bool):
            raise InvalidField("dry_run", "dry_run must be true or false.")
        return cls(as_of=None if as_of is None else parse_as_of(as_of), dry_run=dry_run)


@dataclass
class ImageJanitor:
    commands: CommandExecutor
    objects: ImageObjects
    batch_size: int = MAX_KEYS_PER_DELETE

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_KEYS_PER_DELETE:
            raise ValueError(f"batch_size must be between 1 and {MAX_KEYS_PER_DELETE}")

    def run(self, as_of: datetime | None = None, *, dry_run: bool = False) -> CleanupReport:
        rules = CleanupRules.at(as_of, self.commands.context.clock())
        report = CleanupReport(rules.as_of, dry_run)
        for batch in self.candidate_batches(rules):
            entries = self.preview(rules, batch) if dry_run else self.clean(rules, batch)
            report.entries.extend(entries)
        for keys in self.untracked_batches(rules):
            entries = self.preview_untracked(keys) if dry_run else self.clean_untracked(keys)
            report.entries.extend(entries)
        return report

    # -- image rows ---------------------------------------------------------------------

    def candidate_batches(self, rules: CleanupRules) -> Iterator[list[CleanupCandidate]]:
        after = ""
        while True:
            page = self._execute(
                functools.partial(_candidates, rules=rules, after=after, limit=self.batch_size)
            )
            if not page:
                return
            yield page
            after = page[-1].image_id

    def preview(self, rules: CleanupRules, batch: Sequence[CleanupCandidate]) -> list[CleanupEntry]:
        going, staying = self._execute(
            functools.partial(_decide, rules=rules, batch=batch, lock=False)
        )
        entries = {c.image_id: _entry(c, Outcome.WOULD_DELETE) for c in going}
        return _in_order(batch, entries | staying)

    def clean(self, rules: CleanupRules, batch: Sequence[CleanupCandidate]) -> list[CleanupEntry]:
        going, staying = self._execute(
            functools.partial(_decide, rules=rules, batch=batch, lock=True)
        )
        refused = self.objects.delete_objects([c.s3_key for c in going]) if going else {}
        deleted = [c.image_id for c in going if c.s3_key not in refused]
        if deleted:
            self._execute(functools.partial(_confirm, image_ids=deleted))
        entries = {
            c.image_id: _entry(c, Outcome.FAILED, refused[c.s3_key])
            if c.s3_key in refused
            else _entry(c, Outcome.DELETED)
            for c in going
        }
        return _in_order(batch, entries | staying)

    # -- objects without a row ------------------------------------------------------------

    def untracked_batches(self, rules: CleanupRules) -> Iterator[list[str]]:
        """Keys under the images prefix older than the rules allow and named by no row,
        in batches, while the listing goes on (a bucket can hold millions of images)."""
        old: list[str] = []
        orphans: list[str] = []
        for listed in self.objects.list_objects(IMAGES_PREFIX):
            if rules.untracked_object_expired(listed.last_modified):
                old.append(listed.key)
            if len(old) == self.batch_size:
                orphans += self._untracked(old)
                old = []
            while len(orphans) >= self.batch_size:
                yield orphans[: self.batch_size]
                orphans = orphans[self.batch_size :]
        orphans += self._untracked(old)
        while orphans:
            yield orphans[: self.batch_size]
            orphans = orphans[self.batch_size :]

    def preview_untracked(self, keys: Sequence[str]) -> list[CleanupEntry]:
        return [_untracked_entry(key, Outcome.WOULD_DELETE) for key in keys]

    def clean_untracked(self, keys: Sequence[str]) -> list[CleanupEntry]:
        named = set(keys) - set(self._untracked(keys))
        orphans = [key for key in keys if key not in named]
        refused = self.objects.delete_objects(orphans) if orphans else {}
        entries = []
        for key in keys:
            if key in named:
                entries.append(_untracked_entry(key, Outcome.SKIPPED, "an image row names it"))
            elif key in refused:
                entries.append(_untracked_entry(key, Outcome.FAILED, refused[key]))
            else:
                entries.append(_untracked_entry(key, Outcome.DELETED))
        return entries

    def _untracked(self, keys: Sequence[str]) -> list[str]:
        if not keys:
            return []
        known = self._execute(functools.partial(_existing_keys, keys=keys))
        return [key for key in keys if key not in known]

    def _execute(self, work: Work[R]) -> R:
        return self.commands.transaction(work)[0]


# -- the transactions (each runs in its own unit of work, retried on a lost race) ----------


def _candidates(
    uow: UnitOfWork, ctx: CommandContext, *, rules: CleanupRules, after: str, limit: int
) -> list[CleanupCandidate]:
    return uow.images.cleanup_candidates(rules, after=after, limit=limit)


def _existing_keys(uow: UnitOfWork, ctx: CommandContext, *, keys: Sequence[str]) -> set[str]:
    return uow.images.existing_keys(keys)


def _decide(
    uow: UnitOfWork,
    ctx: CommandContext,
    *,
    rules: CleanupRules,
    batch: Sequence[CleanupCandidate],
    lock: bool,
) -> tuple[list[CleanupCandidate], dict[str, CleanupEntry]]:
    """The guard: which of the batch go, decided on the rows as they are now (locked when
    `lock`, and then set to DELETING when they go), and why the others stay."""
    ids = [candidate.image_id for candidate in batch]
    images = uow.images.get_many(ids, lock=lock)
    usage = uow.images.usage(list(images))
    going: list[CleanupCandidate] = []
    staying: dict[str, CleanupEntry] = {}
    for candidate in batch:
        image = images.get(candidate.image_id)
        use = usage.get(candidate.image_id, UNUSED)
        reason = None if image is None else rules.reason_to_delete(image, use)
        if image is None or reason is None:
            staying[candidate.image_id] = _staying(candidate, image, use)
            continue
        if lock:
            image.begin_deletion(reason=reason.value, now=ctx.clock())
        going.append(CleanupCandidate(image.id, image.s3_key, reason))
    return going, staying


def _confirm(uow: UnitOfWork, ctx: CommandContext, *, image_ids: Sequence[str]) -> None:
    now = ctx.clock()
    for image in uow.images.get_many(image_ids, lock=True).values():
        if image.status is ImageStatus.DELETING:
            image.mark_deleted(now)


# -- report entries ------------------------------------------------------------------------


def _entry(
    candidate: CleanupCandidate, outcome: Outcome, detail: str | None = None
) -> CleanupEntry:
    return CleanupEntry(candidate.image_id, candidate.s3_key, candidate.reason, outcome, detail)


def _staying(candidate: CleanupCandidate, image: Image | None, use: ImageUsage) -> CleanupEntry:
    if use.in_order:
        return _entry(candidate, Outcome.SKIPPED_LIVE, "in an order")
    if use.live:
        return _entry(candidate, Outcome.SKIPPED_LIVE, "in an open ask")
    status = "gone" if image is None else image.status.value
    return _entry(candidate, Outcome.SKIPPED, f"no longer a candidate ({status})")


def _untracked_entry(key: str, outcome: Outcome, detail: str | None = None) -> CleanupEntry:
    return CleanupEntry(None, key, CleanupReason.UNTRACKED_OBJECT, outcome, detail)


def _in_order(
    batch: Sequence[CleanupCandidate], entries: Mapping[str, CleanupEntry]
) -> list[CleanupEntry]:
    return [entries[candidate.image_id] for candidate in batch]


def clean_images(
    unit_of_work: UnitOfWorkFactory,
    context: CommandContext,
    images: object,
    *,
    retries: int,
    as_of: datetime | None = None,
    dry_run: bool = False,
) -> CleanupReport:
    """The orphaned-image cleanup as of `as_of` (default now): the scheduled function and
    `giftmarket jobs clean-images` both come here, with the container's parts."""
    if not isinstance(images, ImageObjects):
        raise RuntimeError("the image store cannot list or delete objects")
    # No fast path for its events: nothing waits for them, and the relay sends a batch's
    # thousand ImageDeleted rows within a minute without slowing the run.
    commands = CommandExecutor(unit_of_work, context, retries=retries)
    return ImageJanitor(commands, images).run(as_of, dry_run=dry_run)
