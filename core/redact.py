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

# scheme://user: and the rest of the URL (up to whitespace or a quote). The password runs to the
# last '@' before the query ('?'): an unencoded '@' or '/' in a password must not leave its tail
# visible (generated passwords often hold '/'), while an '@' in a query value is not one.
_URL_USER = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@'\"]*:)([^\s'\"]*)", re.IGNORECASE)
# password=... in a libpq conninfo string or a URL query: quoted (with \' escapes) or up to a blank.
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|[^\s&]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every password of a DSN, URL or ``password=`` pair replaced by ``***``."""
    # The cheap test first: this runs on every log record.
    if "://" not in text and "password" not in text.lower():
        return text
    text = _URL_USER.sub(_mask_url_password, text)
    return _KV_PASSWORD.sub(rf"\g<1>{MASK}", text)


def _mask_url_password(m: re.Match[str]) -> str:
    rest = m.group(2)
    at = rest.rfind("@", 0, rest.find("?") if "?" in rest else len(rest))
    return m.group(0) if at < 0 else f"{m.group(1)}{MASK}{rest[at:]}"
