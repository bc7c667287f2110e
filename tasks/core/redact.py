"""Keep secrets out of messages: every text a provider sends back, and every URL shown, passes here.

A provider may echo a key back in another form than the one sent: URL-encoded
(a key in a query string), with spaces or dashes between its characters, or
partly masked (``sk-te****cdef``). `redact` removes each of those forms of the
secrets it is given, the Basic-auth header form of URL credentials, and anything
shaped like an API key. `public_url` drops the ``user:password@`` part of a URL,
so a base URL can be shown in messages and logs.
"""

from __future__ import annotations

import base64
import functools
import re
import urllib.parse

_KEYLIKE = re.compile(r"\b(sk|sk-ant|sk-proj|key)-[A-Za-z0-9_\-*]{6,}")
#: a visible head, a run of mask characters, a visible tail: a partly masked secret if head and tail fit one
_MASKED = re.compile(r"([A-Za-z0-9_\-+/=%]*)(?:[*•·#]{3,}|\.{3,}|…)([A-Za-z0-9_\-+/=%]*)")
#: characters a provider may put between a secret's characters when it echoes it
_SPACER = r"[\s\-_.,:|]{0,3}"
#: fewest characters of a secret a masked echo may show before it counts as the secret
_MASK_MIN_VISIBLE = 4
_SHORTEST_SECRET = 4


def redact(text: str, *secrets: str | None) -> str:
    """`text` with each secret (in any of the forms above), and anything shaped like an API key, replaced by ***."""
    for secret in secrets:
        if secret and len(secret) >= _SHORTEST_SECRET:
            text = _pattern(secret).sub("***", text)
            text = _MASKED.sub(functools.partial(_unmask, secret), text)
    return _KEYLIKE.sub(lambda m: m.group(1) + "-***", text)


@functools.lru_cache(maxsize=64)
def _pattern(secret: str) -> re.Pattern[str]:
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        base64.b64encode(secret.encode()).decode(),
    }
    spaced = _SPACER.join(re.escape(c) for c in secret)  # s k - t e s t, s-k-t-e-s-t, ...
    alternatives = sorted((re.escape(f) for f in forms), key=len, reverse=True)
    return re.compile("|".join([*alternatives, spaced]), re.IGNORECASE)


def _unmask(secret: str, match: re.Match[str]) -> str:
    head, tail = match.group(1), match.group(2)
    shown = len(head) + len(tail)
    if shown >= _MASK_MIN_VISIBLE and secret.startswith(head) and secret.endswith(tail) and shown < len(secret):
        return "***"
    return match.group(0)


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The credentials in a URL's userinfo (user, password and the ``user:password`` Basic-auth pair)."""
    if not url:
        return ()
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    found = [s for s in (password, f"{user}:{password}" if user and password else "") if s]
    if user and not password:
        found.append(user)  # a token given as the user name
    return tuple(found)


def public_url(url: str) -> str:
    """`url` without its ``user:password@`` part: what messages and logs may show."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
