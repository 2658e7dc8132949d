"""S3SnapshotStore: tarballs as objects in an S3-compatible bucket (AWS, MinIO, SeaweedFS), via boto3.

boto3 blocks, so every call runs in a worker thread. Uploads are multipart with one part
being filled while at most one other is in flight, so memory stays near two part sizes
whatever the snapshot's size; a failed upload is aborted, leaving no object and no parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from trove_api.stores.snapshots.base import READ_CHUNK
from trove_core.errors import SnapshotNotFoundError, SnapshotStoreUnavailableError, TroveError
from trove_core.settings import Settings

log = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "404", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}


@dataclass
class _ObjectReader:
    body: Any
    size: int
    key: str

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                data: bytes = await asyncio.to_thread(self.body.read, READ_CHUNK)
            except (BotoCoreError, ClientError, OSError) as exc:
                raise _unavailable(exc, f"reading {self.key}") from exc
            if not data:
                return
            yield data

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.body.close)


class S3SnapshotStore:
    kind = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        region: str,
        prefix: str = "",
        create_bucket: bool = True,
        part_size: int = 8 * 1024 * 1024,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.prefix = prefix
        self.create_bucket = create_bucket
        self.part_size = part_size
        self._bucket_ready = False
        # This process's multipart uploads in progress: the sweep never aborts them.
        self._uploading: set[str] = set()
        config = Config(
            signature_version="s3v4",
            # Self-hosted servers (MinIO, SeaweedFS) rarely have per-bucket DNS names.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        )
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
            config=config,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3SnapshotStore:
        assert settings.s3_bucket is not None  # the settings validator requires it
        secret = settings.s3_secret_access_key
        return cls(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            region=settings.s3_region,
            prefix=settings.s3_prefix,
            create_bucket=settings.s3_create_bucket,
            part_size=settings.s3_part_size_mb * 1024 * 1024,
        )

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self.client, method), **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise SnapshotNotFoundError(f"Snapshot data {what} is missing from the store") from exc
            raise _unavailable(exc, what) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc, what) from exc

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            await asyncio.to_thread(self.client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in _MISSING | _NO_BUCKET or not self.create_bucket:
                raise _unavailable(exc, f"bucket {self.bucket}") from exc
            with contextlib.suppress(SnapshotStoreUnavailableError):
                await self._call(f"bucket {self.bucket}", "create_bucket", Bucket=self.bucket)
            await self._call(f"bucket {self.bucket}", "head_bucket", Bucket=self.bucket)
        except BotoCoreError as exc:
            raise _unavailable(exc, f"bucket {self.bucket}") from exc
        self._bucket_ready = True

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        await self._ensure_bucket()
        name = self._key(key)
        buffer = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        in_flight: asyncio.Task[None] | None = None
        number = 0

        async def send(number: int, data: bytes) -> None:
            answer = await self._call(
                name,
                "upload_part",
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})

        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if len(buffer) < self.part_size:
                    continue
                if upload_id is None:
                    started = await self._call(name, "create_multipart_upload", Bucket=self.bucket, Key=name)
                    upload_id = started["UploadId"]
                    self._uploading.add(upload_id)
                if in_flight is not None:
                    await in_flight
                data = bytes(buffer[: self.part_size])
                del buffer[: self.part_size]
                number += 1
                in_flight = asyncio.create_task(send(number, data))
            if upload_id is None:
                # Small tarball: one plain PUT.
                await self._call(name, "put_object", Bucket=self.bucket, Key=name, Body=bytes(buffer))
                return size
            if in_flight is not None:
                await in_flight
                in_flight = None
            if buffer:
                await send(number + 1, bytes(buffer))
            parts.sort(key=lambda p: int(p["PartNumber"]))
            await self._call(
                name,
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            return size
        except BaseException:
            if in_flight is not None:
                in_flight.cancel()
                with contextlib.suppress(BaseException):
                    await in_flight
            if upload_id is not None:
                with contextlib.suppress(TroveError):
                    await self._call(
                        name, "abort_multipart_upload", Bucket=self.bucket, Key=name, UploadId=upload_id
                    )
            raise
        finally:
            self._uploading.discard(upload_id or "")

    async def open(self, key: str) -> _ObjectReader:
        name = self._key(key)
        answer = await self._call(name, "get_object", Bucket=self.bucket, Key=name)
        return _ObjectReader(body=answer["Body"], size=int(answer.get("ContentLength", 0)), key=name)

    async def delete(self, key: str) -> None:
        name = self._key(key)
        with contextlib.suppress(SnapshotNotFoundError):
            await self._call(name, "delete_object", Bucket=self.bucket, Key=name)

    async def sweep(self, stale_s: float) -> int:
        """Abort incomplete multipart uploads under our prefix started over ``stale_s`` ago:
        a killed create leaves its parts billed and invisible until aborted."""
        cutoff = datetime.now(UTC) - timedelta(seconds=stale_s)
        answer = await self._call(
            self.prefix, "list_multipart_uploads", Bucket=self.bucket, Prefix=self.prefix
        )
        aborted = 0
        for upload in answer.get("Uploads", []):
            if upload["UploadId"] in self._uploading or upload["Initiated"] >= cutoff:
                continue
            with contextlib.suppress(TroveError):
                await self._call(
                    upload["Key"],
                    "abort_multipart_upload",
                    Bucket=self.bucket,
                    Key=upload["Key"],
                    UploadId=upload["UploadId"],
                )
                aborted += 1
        return aborted

    async def check(self) -> None:
        await self._ensure_bucket()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _unavailable(exc: BaseException, what: str) -> SnapshotStoreUnavailableError:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "?"))
        reason = f"{code}: {error.get('Message', '')}".strip()
    else:
        code, reason = type(exc).__name__, str(exc)
    # The full reason can name the endpoint: for the log only; the error code is enough to act on.
    return SnapshotStoreUnavailableError(
        f"S3 snapshot store failed on {what}: {code}",
        retry_after=5,
        internal=f"S3 snapshot store failed on {what}: {reason}",
    )
