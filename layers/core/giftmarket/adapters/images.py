"""Voucher images in S3: presigned uploads and downloads, HEAD to check an upload, and the
listing and batched deletes of the image cleanup."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import parse_timestamp

from giftmarket.commands.ports import (
    MAX_KEYS_PER_DELETE,
    ImageObjects,
    ImageStore,
    ListedObject,
    StoredObject,
)

UPLOAD_URL_TTL_SECONDS = 600
DOWNLOAD_URL_TTL_SECONDS = 300


def build_s3_client(region: str | None, endpoint_url: str | None) -> Any:
    # Path-style addressing when an endpoint is given (LocalStack): virtual-host names
    # like bucket.localhost would need DNS that a machine without network does not have.
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        connect_timeout=2,
        read_timeout=5,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    session = botocore.session.get_session()
    parsers = session.get_component("response_parser_factory")
    parsers.set_parser_defaults(timestamp_parser=parse_s3_timestamp)
    return boto3.session.Session(botocore_session=session).client(
        "s3", region_name=region, endpoint_url=endpoint_url, config=config
    )


def parse_s3_timestamp(value: Any) -> datetime:
    """The ISO 8601 times of S3's XML answers parsed by the standard library. botocore's
    default parser (dateutil) takes ~130 µs each: most of the time a listing of the images
    prefix spends in Python. Anything else (HTTP-date headers) still goes to botocore's."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    found: datetime = parse_timestamp(value)
    return found


class S3ImageStore(ImageStore, ImageObjects):
    def __init__(self, client: Any, bucket: str) -> None:
        self._s3 = client
        self._bucket = bucket

    def presign_upload(self, key: str, content_type: str) -> str:
        # The content type is signed: the upload must declare the type the seller asked for.
        url: str = self._s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self._bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=UPLOAD_URL_TTL_SECONDS,
        )
        return url

    def describe(self, key: str) -> StoredObject | None:
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return StoredObject(size=int(head["ContentLength"]), content_type=head.get("ContentType"))

    def close(self) -> None:
        self._s3.close()

    def presign_download(self, key: str) -> str:
        url: str = self._s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": key},
            ExpiresIn=DOWNLOAD_URL_TTL_SECONDS,
        )
        return url

    def list_objects(self, prefix: str) -> Iterator[ListedObject]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", ()):
                yield ListedObject(key=item["Key"], last_modified=item["LastModified"])

    def delete_objects(self, keys: Sequence[str]) -> dict[str, str]:
        if len(keys) > MAX_KEYS_PER_DELETE:
            raise ValueError(f"DeleteObjects takes at most {MAX_KEYS_PER_DELETE} keys")
        if not keys:
            return {}
        try:
            # Quiet: the answer lists only the keys S3 could not delete.
            response = self._s3.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "ClientError"))
            return dict.fromkeys(keys, code)
        except BotoCoreError as exc:
            return dict.fromkeys(keys, type(exc).__name__)
        return {
            str(error["Key"]): str(error.get("Code", "Unknown"))
            for error in response.get("Errors", ())
        }
