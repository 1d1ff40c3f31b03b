"""Voucher images the reliability tests list with: an upload slot asked for through the
command executor, and a small PNG put where the slot says, in the stack's LocalStack S3."""

from __future__ import annotations

import boto3

from giftmarket.bootstrap import Container
from giftmarket.commands import catalog
from giftmarket.commands.executor import CommandExecutor

PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 1024


def uploaded_image(run: CommandExecutor, container: Container, seller_id: str) -> str:
    """The id of an image of `seller_id`'s, uploaded and ready to attach."""
    slot, _ = run.execute(catalog.RequestImageUpload(seller_id, "image/png"))
    s3 = boto3.client(
        "s3",
        endpoint_url=container.settings.aws_endpoint_url,
        region_name=container.settings.aws_region,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 - LocalStack
    )
    s3.put_object(
        Bucket=container.settings.images_bucket,
        Key=f"images/{seller_id}/{slot.image_id}",
        Body=PNG,
        ContentType="image/png",
    )
    return slot.image_id
