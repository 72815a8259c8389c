"""What the safety features cost on the hot paths, in-process (no sockets).

    python bench/safety_bench.py

- secret masking of a streamed answer, per piece (on by default: redaction.mask_secrets);
- redacting a prompt before each model call, by history size (only with
  redaction.enabled);
- the masking of one finished answer.

Best of several rounds, so other processes on the machine inflate the figures less.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.redaction import SecretStream, mask_secrets, redact_prompt

ANSWER = (
    "Sure. Set OPENAI_BASE_URL to your gateway, restart Parley, and ask again; if the "
    "answer is slow, look at the first-token figure on /metrics before anything else. "
) * 20
PLAIN = "Please look at the first-token figure on the metrics page before anything else. "
TURN = "Please email bob@example.com about order 12345 and call +1 555 010 4477 tomorrow. "


def best(work: Callable[[], object], rounds: int = 7) -> float:
    fastest = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        fastest = min(fastest, time.perf_counter() - started)
    return fastest


def stream_masking() -> None:
    pieces = re.findall(r"\S+\s*|\s+", ANSWER)  # a word a piece, as models stream

    def run() -> None:
        stream = SecretStream()
        for piece in pieces:
            stream.feed(piece)
        stream.flush()

    seconds = best(run)
    print(f"secret masking while streaming: {seconds / len(pieces) * 1e6:.2f} us per piece "
          f"({len(pieces)} pieces)")  # fmt: skip
    print(f"secret masking of the finished answer ({len(ANSWER)} chars): "
          f"{best(lambda: mask_secrets(ANSWER)) * 1e6:.0f} us")  # fmt: skip


def prompt_redaction() -> None:
    for kind, turn in (("each with an e-mail and a phone", TURN), ("plain text", PLAIN)):
        for size in (10, 100, 1000):
            prompt = [{"role": "system", "content": "You are Parley."}] + [
                {"role": "user" if i % 2 == 0 else "assistant", "content": turn * 3}
                for i in range(size)
            ]
            seconds = best(lambda prompt=prompt: redact_prompt(prompt, ()), rounds=5)  # type: ignore[misc]
            print(f"prompt redaction, {size:>4} history messages ({kind}): "
                  f"{seconds * 1e3:.2f} ms per call")  # fmt: skip


if __name__ == "__main__":
    stream_masking()
    prompt_redaction()
