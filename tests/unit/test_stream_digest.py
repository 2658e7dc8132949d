"""The upload digest (recovery's proof that a rename happened) hashed off the event loop: the
same SHA-256 as the bytes in order, whatever their chunking, and never of a reused buffer."""

from __future__ import annotations

import hashlib
import os

from trove_api.services.files import _StreamDigest


async def test_the_digest_is_that_of_the_bytes_in_order_however_chunked() -> None:
    data = os.urandom(5 * _StreamDigest.BATCH_BYTES + 12345)
    for size in (1, 4096, 65536, _StreamDigest.BATCH_BYTES - 1, _StreamDigest.BATCH_BYTES + 7, len(data)):
        digest = _StreamDigest()
        for start in range(0, len(data), size):
            await digest.add(data[start : start + size])
        assert await digest.hexdigest() == hashlib.sha256(data).hexdigest()


async def test_a_reused_buffer_is_hashed_as_it_was_when_added() -> None:
    digest = _StreamDigest()
    buffer = bytearray(b"a" * 1000)
    await digest.add(buffer)  # type: ignore[arg-type]  # a producer handing out its own buffer
    buffer[:] = b"b" * 1000
    await digest.add(bytes(buffer))
    assert await digest.hexdigest() == hashlib.sha256(b"a" * 1000 + b"b" * 1000).hexdigest()


async def test_an_empty_stream() -> None:
    assert await _StreamDigest().hexdigest() == hashlib.sha256(b"").hexdigest()
