"""The images bucket through the application's own S3 client, on moto: listing (with its
timestamps parsed fast) and batched deletes. Paging through more than one listing page is
covered on the real stack (tests/integration/test_image_janitor.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from moto import mock_aws

from giftmarket.adapters import images
from giftmarket.adapters.images import S3ImageStore, build_s3_client

BUCKET = "images-bucket"


@pytest.fixture
def parsed_times() -> Iterator[list[str]]:
    """The store's client, built while a spy stands in for its timestamp parser."""
    seen: list[str] = []
    real = images.parse_s3_timestamp

    def spy(value: Any) -> datetime:
        seen.append(value)
        return real(value)

    with mock.patch.object(images, "parse_s3_timestamp", spy):
        yield seen


@pytest.fixture
def store(parsed_times: list[str]) -> Iterator[S3ImageStore]:
    with mock_aws():
        client = build_s3_client("us-east-1", None)
        client.create_bucket(Bucket=BUCKET)
        yield S3ImageStore(client, BUCKET)
        client.close()


def put(store: S3ImageStore, key: str) -> None:
    store._s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")


def test_listing_names_the_prefix_with_times_from_the_fast_parser(
    store: S3ImageStore, parsed_times: list[str]
) -> None:
    keys = [f"images/u/{n:04d}" for n in range(5)] + ["other/x"]
    for key in keys:
        put(store, key)

    listed = list(store.list_objects("images/"))

    assert [o.key for o in listed] == keys[:-1]
    now = datetime.now(UTC)
    assert all(now - timedelta(minutes=5) < o.last_modified <= now for o in listed)
    assert len(parsed_times) >= len(listed)


def test_delete_objects_deletes_what_it_is_given_and_refuses_more_than_1000(
    store: S3ImageStore,
) -> None:
    for key in ("images/u/a", "images/u/b"):
        put(store, key)

    assert store.delete_objects(["images/u/a", "images/u/never-uploaded"]) == {}
    assert [o.key for o in store.list_objects("images/")] == ["images/u/b"]
    with pytest.raises(ValueError):
        store.delete_objects([f"k{n}" for n in range(1_001)])
