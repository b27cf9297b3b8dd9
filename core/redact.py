"""Credentials out of text: the password of every DSN or conninfo string becomes ``***``.

Libraries quote connection strings back in their errors (libpq echoes a malformed URL whole,
password included). Used at the storage boundary (storage/db.py) and by the logging setup as
the last line of defence (hazardwatch/logs.py). Over-redacting is preferred to leaking: in a
URL everything between ``user:`` and the last ``@`` of the authority is hidden.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact"]

MASK = "***"

# scheme://user:password@ — the password runs to the last '@' before '/', whitespace or a quote
# (an unencoded '@' in a password must not leave its tail visible).
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@'\"]*:)[^/\s'\"]*@", re.IGNORECASE)
# password=... in a libpq conninfo string or a URL query: quoted (with \' escapes) or up to a blank.
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|[^\s&]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every password of a DSN, URL or ``password=`` pair replaced by ``***``."""
    # The cheap test first: this runs on every log record.
    if "://" not in text and "password" not in text.lower():
        return text
    text = _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)
    return _KV_PASSWORD.sub(rf"\g<1>{MASK}", text)
