"""Likely personal data in text that leaves: e-mail addresses, phone numbers, URLs, IP
addresses and key-like strings.

A reviewer's aid, not a guarantee: the patterns lean towards flagging (a 9-digit order number
may show as a phone number), because a false alarm costs a glance and a miss costs a leak.
"""

from __future__ import annotations

import re

EMAIL, PHONE, URL, IP, KEY = "e-mail", "phone", "URL", "IP address", "key-like"
KINDS = (EMAIL, PHONE, URL, IP, KEY)

_PATTERN = re.compile(
    r"(?P<email>[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
    r"|(?P<url>\b(?:https?|ftp|file)://[^\s<>\"'`]+|\bwww\.[A-Za-z0-9-]+\.[^\s<>\"'`]+)"
    r"|(?P<key>-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|\b(?:sk|pk|rk)[-_](?:live_|test_|proj-|ant-)?[A-Za-z0-9_-]{16,}"
    r"|\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}|\bAKIA[0-9A-Z]{16}\b|\bAIza[0-9A-Za-z_-]{30,}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    r"|\b[Bb]earer\s+[A-Za-z0-9._~+/=-]{16,}"
    r"|(?<![A-Za-z0-9_+/=-])[A-Za-z0-9_+/=-]{32,}(?![A-Za-z0-9_+/=-]))"
    r"|(?P<ip>\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b)"
    r"|(?P<phone>(?<![\w.+-])\+?\(?\d[\d ().-]{6,}\d(?![\w.-]))"
)
_GROUP_KIND = {"email": EMAIL, "url": URL, "key": KEY, "ip": IP, "phone": PHONE}
_UUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DIGIT = re.compile(r"\d")
_DECIMAL = re.compile(r"\d+\.\d+")


def find(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every likely personal datum in TEXT, in order, not overlapping."""
    if not _may_hold(text):
        return []
    found = []
    for match in _PATTERN.finditer(text):
        kind = _GROUP_KIND[match.lastgroup or ""]
        if kind == KEY and not _looks_like_key(match.group()):
            continue
        if kind == PHONE and not _looks_like_phone(match.group()):
            continue
        found.append((match.start(), match.end(), kind))
    return found


def _may_hold(text: str) -> bool:
    """A test in C-speed string methods that rules out most text before the regex (which
    costs ~0.1 µs a character): an e-mail needs an @, a URL a scheme or www., a phone number
    or an IP address digits, and the keys looked for are random tokens, which hold digits
    (a private key has its header)."""
    if "@" in text or "://" in text or "www." in text or "-----BEGIN" in text:
        return True
    return _DIGIT.search(text) is not None


def _looks_like_key(found: str) -> bool:
    """Long tokens are keys when they mix letters and digits and are not an id's UUID."""
    if not found[:3].isalnum() or len(found) < 32 or " " in found:
        return True  # one of the named prefixes
    if _UUID.fullmatch(found) or (_UUID.search(found) and len(found) < 40):
        return False
    return any(c.isdigit() for c in found) and any(c.isalpha() for c in found)


def _looks_like_phone(found: str) -> bool:
    """8 to 15 digits, written as people write phone numbers; not a date or a decimal."""
    digits = sum(c.isdigit() for c in found)
    return 8 <= digits <= 15 and not _DATE.fullmatch(found) and not _DECIMAL.fullmatch(found)
