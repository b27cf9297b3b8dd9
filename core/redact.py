"""Credentials out of text: the password of every DSN or conninfo string becomes ``***``.

Libraries quote connection strings back in their errors (libpq echoes a malformed URL whole,
password included). Used at the storage boundary (storage/db.py) and by the logging setup as
the last line of defence (hazardwatch/logs.py). Over-redacting is preferred to leaking: in a
URL everything between ``user:`` and the last ``@`` of the authority is hidden.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "mask_email", "mask_phone", "redact"]

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


# Personal data (issue 12): phone numbers and e-mail addresses fit for logs, screens and journals.
_MOBILE = re.compile(r"^(\+?86)?(1\d{2})(\d{4})(\d{4})$")
_LANDLINE = re.compile(r"^(0\d{2,3})(-?)(\d{7,8})$")


def mask_phone(phone: str) -> str:
    """A phone number fit for logs and screens: a mobile keeps its first 3 and last 4 digits
    (138****1234, +86 kept), a landline its area code and last 2 (0358-*****00); anything else
    keeps only its last 2 characters."""
    p = phone.replace(" ", "")
    if m := _MOBILE.match(p):
        return f"{m.group(1) or ''}{m.group(2)}****{m.group(4)}"
    if m := _LANDLINE.match(p):
        local = m.group(3)
        return f"{m.group(1)}{m.group(2)}{'*' * (len(local) - 2)}{local[-2:]}"
    return "*" * max(len(p) - 2, 2) + p[-2:] if len(p) > 2 else "**"


def mask_email(email: str) -> str:
    """``w***@example.com``: the first character of the local part and the domain."""
    local, at, domain = email.partition("@")
    return f"{local[:1]}***{at}{domain}" if at else "***"
