"""Destination URLs as text: which strings are URLs, `file://` as a local path, and the normalised
form a URL is confined and written by (`tasks.core.url_files`). No I/O and no fsspec here, so the
settings and the local file checks can use it.

A URL is `scheme://...` at the start of the string (`s3://bucket/out`, `memory://x`,
`file:///srv/out`); anything else is a local path, as before. A URL is normalised before it is
compared with a root or written to: empty and `.` path segments are dropped (`s3://b/a//x/./y` is
`s3://b/a/x/y`), and `..`, a backslash, a control character, a `?query` or a `#fragment` are
refused (a store would read them as another object, a version or nothing at all). Credentials in
the URL (`ftp://user:pass@host/out`) are kept for the file system and never shown: `shown` has no
`user:password@` part.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

#: `scheme://` at the start: a URL, not a local path
_URL_START = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_url(text: str) -> bool:
    """True for `scheme://...` (a destination URL, `file://` included); False for a local path."""
    return _URL_START.match(text) is not None


def is_file_url(text: str) -> bool:
    return text[:7].lower() == "file://"


def file_url_path(url: str) -> str:
    """The local path of a `file://` URL (`file:///srv/out`, `file://localhost/srv/out`, percent-decoded).

    Raises ValueError for another host (`file://server/share` is not a local path).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"a file:// URL names a local path (file:///srv/out), not a host ({parts.netloc!r})")
    if parts.query or parts.fragment:
        raise ValueError("a file:// URL has no ?query or #fragment")
    return urllib.parse.unquote(parts.path) or "/"


@dataclass(frozen=True)
class ParsedUrl:
    """A URL split and normalised: compare `protocol`, `user`, `host`, `segments`; write `url`; show `shown`."""

    protocol: str
    user: str  #: the user name in the URL (`abfs://container@account/...` names its container there), or ""
    host: str  #: host[:port], or the bucket (`s3://bucket/...`); "" for `memory:///x`
    segments: tuple[str, ...]
    url: str  #: normalised, with the credentials it was given (for the file system only)
    shown: str  #: normalised, without credentials: what messages, logs and results show
    #: for a `child`: the URL it is below (what the file system is opened with) and the segments added to it,
    #: so a name is never parsed as URL syntax (`what?.md` stays a name, not a query)
    base: str = ""
    below: tuple[str, ...] = ()

    def child(self, name: str) -> ParsedUrl:
        """The URL of `name` (a relative name such as `sub/a.md`) below this one; ValueError for `..` and the like."""
        extra = _segments(name)
        if not extra:
            raise ValueError(f"{name!r} names no object below {self.shown}")
        return ParsedUrl(
            self.protocol,
            self.user,
            self.host,
            self.segments + extra,
            _join(self.url, extra),
            _join(self.shown, extra),
            self.base or self.url,
            self.below + extra,
        )

    def within(self, root: ParsedUrl) -> bool:
        """True if this URL is `root` or below it: same protocol and host, the root's user (if it names one),
        and the root's path segments as a prefix (`s3://b/a` holds `s3://b/a/x`, not `s3://b/ab`)."""
        return (
            self.protocol == root.protocol
            and self.host == root.host
            and (not root.user or self.user == root.user)
            and self.segments[: len(root.segments)] == root.segments
        )


def parse_url(text: str) -> ParsedUrl:
    """Split and normalise a URL (see the module docstring); ValueError saying what is wrong, without secrets."""
    if not is_url(text):
        raise ValueError("not a URL (scheme://...)")
    if _CONTROL.search(text):
        raise ValueError("a URL may not contain control characters")
    if "?" in text or "#" in text:
        raise ValueError("a destination URL has no ?query or #fragment")
    scheme, rest = text.split("://", 1)
    netloc, _, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    user = urllib.parse.unquote(userinfo.partition(":")[0]) if at else ""
    segments = _segments(path)
    protocol = scheme.lower()
    base = f"{protocol}://{netloc}"
    shown_base = f"{protocol}://{host}"
    return ParsedUrl(protocol, user, host, segments, _join(base, segments), _join(shown_base, segments))


def shown_url(text: str) -> str:
    """`text` for a message: a URL without its `user:password@` part (best effort, also for malformed URLs)."""
    if not is_url(text):
        return text
    scheme, rest = text.split("://", 1)
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"


def _segments(path: str) -> tuple[str, ...]:
    if "\\" in path:
        raise ValueError("a URL path may not contain a backslash")
    segments = tuple(s for s in path.split("/") if s not in ("", "."))
    if any(s == ".." or urllib.parse.unquote(s) in (".", "..") for s in segments):
        raise ValueError("a URL path may not contain '..'")
    return segments


def _join(base: str, segments: tuple[str, ...]) -> str:
    return base + "/" + "/".join(segments) if segments else base
