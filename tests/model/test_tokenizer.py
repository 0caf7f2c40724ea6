"""ByteTokenizer: round trips, specials, padding."""

from __future__ import annotations

import pytest
import torch

from cl.model import ByteTokenizer


def test_round_trip_unicode(tok: ByteTokenizer) -> None:
    text = "naïve café — 東京 🚀"
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert len(ids) == len(text.encode("utf-8")) + 2
    assert tok.decode(ids) == text


def test_decode_stops_at_eos_and_skips_specials(tok: ByteTokenizer) -> None:
    ids = [tok.bos_id, 104, tok.pad_id, 105, tok.eos_id, 106]
    assert tok.decode(ids) == "hi"
    assert tok.decode(torch.tensor(ids), stop_at_eos=False) == "hij"


def test_special_ids_are_distinct_and_outside_bytes(tok: ByteTokenizer) -> None:
    specials = {tok.pad_id, tok.bos_id, tok.eos_id, tok.cls_id}
    assert len(specials) == 4 and min(specials) >= 256 and max(specials) < tok.vocab_size


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_pads_on_the_requested_side(tok: ByteTokenizer, side: str) -> None:
    out = tok.batch(["abc", "x"], pad_side=side)  # type: ignore[arg-type]
    assert out.shape == (2, 4) and out.dtype == torch.long
    short = out[1].tolist()
    if side == "left":
        assert short == [tok.pad_id, tok.pad_id, tok.bos_id, ord("x")]
    else:
        assert short == [tok.bos_id, ord("x"), tok.pad_id, tok.pad_id]
    assert [tok.decode(row) for row in out] == ["abc", "x"]


def test_batch_truncates_keeping_the_prompt_end(tok: ByteTokenizer) -> None:
    out = tok.batch(["abcdef"], max_len=3, pad_side="left")
    assert tok.decode(out[0]) == "def"
    out = tok.batch(["abcdef"], max_len=3, pad_side="right")
    assert out[0].tolist() == [tok.bos_id, ord("a"), ord("b")]


def test_bad_arguments(tok: ByteTokenizer) -> None:
    with pytest.raises(ValueError, match="expects a str, got bytes"):
        tok.encode(b"abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one text"):
        tok.batch([])
    with pytest.raises(ValueError, match="pad_side must be"):
        tok.batch(["a"], pad_side="middle")  # type: ignore[arg-type]
