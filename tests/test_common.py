"""Shared adapter helpers: splitting long answers and disarming pings."""

from __future__ import annotations

import random

import pytest

from adapters.common import FENCE, Throttle, neutralise_broadcasts, split_message


def balanced(part: str) -> bool:
    return sum(line.strip().startswith(FENCE) for line in part.splitlines()) % 2 == 0


CASES = {
    "prose": "word " * 3000,
    "code": "intro\n\n```python\n"
    + "\n".join(f"x = {i}  # line" for i in range(600))
    + "\n```\nend",
    "long fence line": "```json " + '{"k": 1} ' * 400 + "\n" + "y\n" * 50 + "```",
    "no spaces": "x" * 9000,
    "many blocks": "\n".join(f"```\nblock {i}\n" + "z " * 300 + "\n```" for i in range(12)),
}


@pytest.mark.parametrize("limit", [100, 2000, 4000])
@pytest.mark.parametrize("name", sorted(CASES))
def test_parts_fit_and_keep_fences_balanced(name: str, limit: int) -> None:
    text = CASES[name]
    parts = split_message(text, limit)
    assert all(len(part) <= limit for part in parts)
    assert all(balanced(part) for part in parts)
    joined = "".join(parts).replace(FENCE, "").replace("\n", "").replace(" ", "")
    original = text.replace(FENCE, "").replace("\n", "").replace(" ", "")
    assert joined.replace("json", "").replace("python", "") == original.replace("json", "").replace(
        "python", ""
    )


def test_random_texts_always_progress() -> None:
    chooser = random.Random(7)
    pieces = ["word ", "\n", "```", "```py ", "x" * 50, "\n\n", "a b c "]
    for _ in range(200):
        text = "".join(chooser.choice(pieces) for _ in range(chooser.randint(1, 800)))
        parts = split_message(text, 120)
        assert all(len(part) <= 120 for part in parts)


def test_short_text_is_one_part() -> None:
    assert split_message("hello", 2000) == ["hello"]


@pytest.mark.parametrize(
    "ping",
    [
        "<!channel>", "<!here>", "<!everyone>", "<!here|here>", "@channel", "@here",
        "@everyone", "<!subteam^S123|@oncall>", "<!subteam^S123>", "<@U123ABC>",
        "<@W99|bob>", "@EVERYONE",
    ],
)  # fmt: skip
def test_pings_are_disarmed(ping: str) -> None:
    text = neutralise_broadcasts(f"hey {ping} look")
    assert ping not in text
    assert "<!" not in text and "<@" not in text
    for word in ("@channel", "@here", "@everyone"):
        assert word not in text.lower()


def test_ordinary_text_is_untouched() -> None:
    text = "Email me at a@b.c; the @param tag; <https://x.y|link>"
    assert neutralise_broadcasts(text) == text


async def test_throttle_edits_at_most_once_an_interval_and_shows_everything() -> None:
    now = [0.0]
    edits: list[str] = []

    async def edit(text: str) -> None:
        edits.append(text)

    throttle = Throttle(edit, interval=1.0, clock=lambda: now[0])
    for second, delta in [(0.0, "a"), (0.4, "b"), (0.9, "c"), (1.0, "d"), (1.5, "e")]:
        now[0] = second
        await throttle.add(delta)
    assert edits == ["a", "abcd"]  # the first at once, then one a second
    assert throttle.text == "abcde"
    await throttle.flush()
    assert edits[-1] == "abcde" and throttle.shown == "abcde"
    throttle.text = "replaced"  # a final answer that differs from the stream
    await throttle.flush()
    assert edits[-1] == "replaced"
