"""Edges of moderation, redaction, secret masking and the audit log found by trying to
break them: secrets glued to punctuation in a stream, input shapes that made a pattern
scan quadratic, ids that looked like card numbers, paths around redaction."""

from __future__ import annotations


import pytest

from bot.redaction import SECRET_MASK, SecretStream, mask_secrets

GLUED = [
    "token=sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4 next",
    "<xoxb-1234567890-abcdefghij> next",
    "**AKIAIOSFODNN7EXAMPLE** next",
    "(MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789) next",
    "x=Bearer abcdefghijklmnop1234. next",
    "**bearer\nabcdefghijklmnop1234** next",
]


@pytest.mark.parametrize("text", GLUED)
@pytest.mark.parametrize("size", [1, 2, 5, 9])
def test_a_secret_glued_to_punctuation_is_masked_however_the_stream_splits_it(
    text: str, size: int
) -> None:
    assert SECRET_MASK in mask_secrets(text)
    stream = SecretStream()
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    shown = "".join(stream.feed(piece) for piece in pieces) + stream.flush()
    assert shown == mask_secrets(text)
