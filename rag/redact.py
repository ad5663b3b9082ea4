"""Database passwords out of everything printed or logged.

A database URL may carry a password (``postgresql+asyncpg://rag:secret@db/rag``).
``masked_url`` is how a URL is shown to people (``rag config``, ``rag db upgrade``);
``mask_passwords`` catches one inside any other text (a driver's error message, a log
line, an exception's traceback), since those are written by code that never meant to
show a URL.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/@:]*):[^\s/]*@")
# A password's own "@" must be escaped as %40 in a URL; one that is not still ends up
# masked whole, since the match runs to the last "@" before the host.
_QUERY = re.compile(r"(?i)(?P<key>[?&]password=)[^&\s]*")


def mask_passwords(text: str) -> str:
    """``text`` with every ``scheme://user:password@`` and ``?password=`` value as ``***``."""
    if "://" not in text:
        return text
    text = _USERINFO.sub(r"\g<scheme>\g<user>:***@", text)
    return _QUERY.sub(r"\g<key>***", text)


def masked_url(url: str) -> str:
    """A URL fit to print: its password, if it has one, replaced by ``***``."""
    return mask_passwords(url)
