"""Which models see images, and what an image costs in prompt tokens.

`[model] vision = "auto"` decides by the model's name: a model sees images when its
name (lower case, any "provider/" prefix dropped) matches one of VISION_PATTERNS, a
family known to take image input, unless it matches TEXT_ONLY_PATTERNS first. A model
the rule gets wrong is set by hand with `vision = true` or `false`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from bot.tokens import count_message

VISION_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        r"^gpt-4o",  # gpt-4o, gpt-4o-mini and dated versions
        r"^chatgpt-4o",
        r"^gpt-4\.1",
        r"^gpt-4\.5",
        r"^gpt-4-turbo",
        r"^gpt-4-vision",
        r"^gpt-5",
        r"^o1(?!-mini)",
        r"^o3(?!-mini)",
        r"^o4",
        r"^claude-(3|sonnet|opus|haiku)",  # every Claude from 3 on takes images
        r"^gemini",
        r"^grok-(4|[0-9.]+-vision)",
        r"^pixtral",
        r"^(mistral-(small|medium)-(2503|3|latest))",
        r"^gemma-?3",
        r"^llama-?3\.2.*vision",
        r"^llama-?4",
        r"llava",
        r"vision",
        r"[-_.]vl\b|-vl-|qwen.*vl",  # Qwen-VL and other "-vl" models
        r"minicpm-v",
        r"moondream",
    )
)
TEXT_ONLY_PATTERNS = tuple(re.compile(p) for p in (r"-audio", r"-realtime", r"-search", r"-tts"))

# OpenAI's rule for an image part: a flat cost at "low" detail; at "high" the image is
# fitted inside 2048x2048, its shorter side brought down to 768, and every 512-pixel
# tile costs 170 on top of the flat 85. "auto" lets the server choose; it is counted
# as high, so a budget is never overrun.
BASE_TOKENS = 85
TILE_TOKENS = 170
TILE_SIDE = 512


def sees_images(model: str, setting: str) -> bool:
    """True if `model` takes image content parts under `[model] vision`."""
    if setting in ("true", "false"):
        return setting == "true"
    name = model.strip().lower().rsplit("/", 1)[-1]
    if any(pattern.search(name) for pattern in TEXT_ONLY_PATTERNS):
        return False
    return any(pattern.search(name) for pattern in VISION_PATTERNS)


def image_tokens(width: int, height: int, detail: str) -> int:
    """Prompt tokens one image costs, by OpenAI's rule (see above)."""
    if detail == "low" or width <= 0 or height <= 0:
        return BASE_TOKENS
    scale = min(1.0, 2048 / max(width, height))
    scale *= min(1.0, 768 / (min(width, height) * scale))
    tiles = math.ceil(width * scale / TILE_SIDE) * math.ceil(height * scale / TILE_SIDE)
    return BASE_TOKENS + TILE_TOKENS * tiles


def content_tokens(content: Any) -> int:
    """Prompt tokens of a chat message's content, a string or content parts."""
    if isinstance(content, list):
        total = 0
        for part in content:
            if part.get("type") == "image_url":
                total += _image_part_tokens(part)
            else:
                total += count_message(str(part.get("text", "")))
        return total
    return count_message(str(content or ""))


def _image_part_tokens(part: dict[str, Any]) -> int:
    # The size is not kept with the part: count an image at the most one can cost.
    detail = str(part.get("image_url", {}).get("detail", "auto"))
    return image_tokens(2048, 768, detail)
