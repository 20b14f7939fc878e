"""Secrets in storage URLs: the one place that masks them, for every output and file.

SQLAlchemy takes a password as `user:password@host` and, for many drivers, as query
parameters (`?password=...`, `&passwd=...`, `sslpassword`, tokens, keys). `mask_url`
hides all of them; `scrub` hides them in any text (a driver's error message) that may
quote the URL or its parts.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote_plus

__all__ = ["MASK", "is_secret_key", "mask_url", "scrub"]

MASK = "***"
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|credential|auth|session|cookie", re.I)
_USERINFO = re.compile(r"(//[^/?#@:\s'\"]*):[^/?#@\s'\"]*@")
_QUERY = re.compile(r"([?&;]([^=&;#\s'\"]*)=)([^&;#\s'\"]*)")


def is_secret_key(name: str) -> bool:
    """Whether a URL query parameter named `name` may hold a secret."""
    return bool(_SECRET_KEY.search(name))


def _regex_mask(url: str) -> str:
    url = _USERINFO.sub(rf"\1:{MASK}@", url)
    return _QUERY.sub(lambda m: m.group(1) + MASK if is_secret_key(m.group(2)) else m.group(0),
                      url)


def mask_url(url: str) -> str:
    """`url` with its password and every secret-looking query parameter shown as ***."""
    if url.startswith("journal:"):
        return url  # a file path
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        query = {k: (MASK if is_secret_key(k) else v) for k, v in parsed.query.items()}
        shown = parsed.set(query=query).render_as_string(hide_password=True)
        shown = shown.replace(quote(MASK, safe=""), MASK)
    except Exception:  # not a URL SQLAlchemy reads: mask what looks like a secret
        shown = url
    return _regex_mask(shown)


def _secrets(url: str) -> set[str]:
    found: set[str] = set()
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if parsed.password:
            found.add(str(parsed.password))
        for key, value in parsed.query.items():
            if is_secret_key(key):
                found.update([value] if isinstance(value, str) else value)
    except Exception:
        pass
    for match in _USERINFO.finditer(url):
        found.add(url[match.end(1) + 1:match.end() - 1])
    for match in _QUERY.finditer(url):
        if is_secret_key(match.group(2)):
            found.add(match.group(3))
    found |= {unquote_plus(s) for s in found}
    return {s for s in found if s and s != MASK}


def scrub(text: str, url: str) -> str:
    """`text` with `url` shown masked and no secret of it left, as given or URL-encoded."""
    text = text.replace(url, mask_url(url))
    for secret in sorted(_secrets(url), key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, MASK)
    return _regex_mask(text)
