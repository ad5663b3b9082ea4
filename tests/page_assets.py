"""What a served HTML page refers to, for the tests that keep the pages offline."""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Anything that could load or send something to another host.
REMOTE = re.compile(r"""(?:https?:)?//[\w.-]+""")
# Attributes whose value the browser (or the page's script) fetches.
URL_ATTRIBUTES = frozenset({"src", "href", "action", "data-spec"})


class Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in URL_ATTRIBUTES and v]


def asset_urls(html: str) -> list[str]:
    """Every URL the page refers to, in-page fragments left out."""
    parser = Assets()
    parser.feed(html)
    return [url for url in parser.urls if not url.startswith("#")]
