"""The web chat's Markdown: CommonMark plus GitHub tables and strikethrough
(markdown-it-py), rendered on the server and sanitised (nh3) before the page sees it.

Raw HTML in an answer is escaped (html=False): a model writing <script> shows the text.
nh3 then keeps only the tags below, whatever markdown-it produced. Only a finished
answer is rendered (once, not per streamed chunk): while it streams the page shows
plain text, so half-written Markdown never flickers and the hot path stays cheap.
"""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt

_PARSER = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(
    ["table", "strikethrough"]
)
TAGS = {
    "p", "br", "hr", "em", "strong", "del", "code", "pre", "blockquote", "a",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip


def render(text: str) -> str:
    """Sanitised HTML for one finished answer."""
    return nh3.clean(
        _PARSER.render(text),
        tags=TAGS,
        attributes={"a": {"href"}, "ol": {"start"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )
