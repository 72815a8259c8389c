"""Edges of moderation, redaction, secret masking and the audit log found by trying to
break them: secrets glued to punctuation in a stream, input shapes that made a pattern
scan quadratic, ids that looked like card numbers, paths around redaction."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.redaction import SECRET_MASK, SecretStream, mask_secrets

SCAN_SECONDS = 120
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


SCAN = """
import sys
from bot.redaction import Redactor, mask_secrets
text = sys.argv[1] * (1_000_000 // len(sys.argv[1]))
Redactor().redact(text)
mask_secrets(text)
"""


@pytest.mark.parametrize("unit", ["11 ", "11-", "1 11 ", "+1 (55) 11 ", "a@b.", "bearer ."])
def test_the_built_in_patterns_scan_a_megabyte_of_hostile_input_in_one_pass(unit: str) -> None:
    # A quadratic scan of 1 MB runs for hours, a linear one well under a second: the
    # bound only tells "ends" from "never ends" (a regex holds the GIL, so a thread
    # could not be waited for; a process can).
    done = subprocess.run([sys.executable, "-c", SCAN, unit], timeout=SCAN_SECONDS, check=False)
    assert done.returncode == 0
