"""Voucher images in S3: presigned uploads and downloads, HEAD to check an upload."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from giftmarket.commands.context import StoredObject

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
    return boto3.client("s3", region_name=region, endpoint_url=endpoint_url, config=config)


class S3ImageStore:
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
