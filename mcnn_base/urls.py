"""URLs with passwords: masked for display, scrubbed out of database error texts."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["mask_url", "scrub"]


def mask_url(url: str) -> str:
    """Hide the password of a URL such as ``postgresql://user:secret@host/db``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def scrub(text: str, url: str) -> str:
    """``text`` without the password of ``url`` (database errors may quote the URL)."""
    password = urlsplit(url).password
    if not password:
        return text
    for secret in {password, unquote(password)}:
        text = text.replace(secret, "***")
    return text
