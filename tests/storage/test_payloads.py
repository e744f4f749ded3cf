"""Stored payload compression: Zstandard frames, zlib streams of older rows still read, and
blobs that are neither (or would inflate past the cap) refused with a clear error."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import zstandard

from storage import payloads
from storage.payloads import ZSTD_MAGIC, PayloadError, compress, decompress
from storage.reference_members import decode_columns, encode_columns


def test_payloads_are_zstandard_frames_that_round_trip() -> None:
    raw = b'{"x": {"f": [1.5, null]}}' * 100
    packed = compress(raw)
    assert packed[:4] == ZSTD_MAGIC
    assert len(packed) < len(raw) // 10
    assert decompress(packed) == raw


def test_the_reused_compressor_writes_the_frames_a_fresh_one_writes() -> None:
    """Each thread keeps one compressor: the same bytes as ``zstandard.compress`` every time,
    whatever it compressed before, and in another thread."""
    import threading

    raws = [b'{"x": {"f": [1.5, null]}}' * 100, b"", b"abc" * 50_000, bytes(range(256)) * 64]
    assert [compress(r) for r in raws * 2] == [zstandard.compress(r, payloads.LEVEL) for r in raws * 2]
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.extend(compress(r) for r in raws))
    t.start()
    t.join()
    assert got == [zstandard.compress(r, payloads.LEVEL) for r in raws]


def test_zlib_payloads_written_before_are_still_read() -> None:
    """A store upgraded in place keeps its old rows: zlib level 6 (reference members) and 1
    (window samples) were the formats before."""
    cols = {"age": np.array([1.5, np.nan, 3.0]), "plan": np.array(["a", None, "b"], dtype=object)}
    new = decode_columns(encode_columns(cols))
    import orjson

    old_json = orjson.dumps({"age": {"f": [1.5, None, 3.0]}, "plan": {"s": ["a", None, "b"]}})
    for level in (1, 6):
        old = decode_columns(zlib.compress(old_json, level))
        assert old["age"].tolist()[0] == 1.5 and np.isnan(old["age"][1]) and old["age"][2] == 3.0
        assert old["plan"].tolist() == new["plan"].tolist() == ["a", None, "b"]
    assert np.array_equal(new["age"], old["age"], equal_nan=True)


def test_a_blob_of_another_format_is_refused() -> None:
    with pytest.raises(PayloadError, match="not readable"):
        decompress(b"not a payload at all")
    with pytest.raises(PayloadError, match="not readable"):
        decompress(ZSTD_MAGIC + b"\x00" * 16)  # a Zstandard magic number, then garbage


@pytest.mark.parametrize("header_size", [True, False])
def test_a_payload_inflating_past_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch, header_size: bool) -> None:
    """A blob written by another program cannot make a report expand it into memory without
    bound: a frame whose header states a size above the cap, one that states none, and a zlib
    bomb are each refused."""
    monkeypatch.setattr(payloads, "MAX_PAYLOAD", 1000)
    raw = b"x" * 5000
    frame = zstandard.ZstdCompressor(level=1, write_content_size=header_size).compress(raw)
    with pytest.raises(PayloadError):
        decompress(frame)
    with pytest.raises(PayloadError, match="beyond 1000 bytes"):
        decompress(zlib.compress(raw))
    assert decompress(zstandard.compress(b"x" * 1000, 1)) == b"x" * 1000


def test_a_truncated_or_empty_zlib_stream_is_refused() -> None:
    """zlib.decompress refused these before; the streaming inflater must too."""
    whole = zlib.compress(b'{"a": {"f": [1.0, 2.0, 3.0]}}' * 20)
    for cut in (b"", whole[: len(whole) // 2], whole[:-4]):  # nothing, half, no checksum
        with pytest.raises(PayloadError, match="not readable"):
            decompress(cut)


def test_a_payload_over_the_cap_is_never_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payloads, "MAX_PAYLOAD", 1000)
    with pytest.raises(PayloadError, match="over the 1000-byte limit"):
        compress(b"x" * 1001)
    assert decompress(compress(b"x" * 1000)) == b"x" * 1000
