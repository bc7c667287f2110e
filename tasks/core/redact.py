"""Keep secrets out of messages: every text a provider sends back passes here."""

from __future__ import annotations

import re

_KEYLIKE = re.compile(r"\b(sk|sk-ant|sk-proj|key)-[A-Za-z0-9_\-*]{6,}")


def redact(text: str, *secrets: str | None) -> str:
    """`text` with each secret, and anything shaped like an API key, replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _KEYLIKE.sub(lambda m: m.group(1) + "-***", text)
