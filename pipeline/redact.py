"""Scrub credentials from text before it reaches a log, a manifest or an error."""

from __future__ import annotations

import re

_PATTERNS = [
    # user:password@ in URLs, with or without the scheme (libraries echo bucket names)
    (re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+:[^@\s]+@"), r"\g<pre>***@"),
    (re.compile(r"(?<![\w/])[^\s/@:\"'=]+:[^\s@\"']+@"), "***@"),
    # key=value / "key": "value" for secret-looking keys
    (
        re.compile(
            r"(?P<key>(?:aws_)?(?:secret(?:_access)?_key|session_token|access_key(?:_id)?|password|passwd|token|secret|key_id)['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}&]+",
            re.IGNORECASE,
        ),
        r"\g<key>***",
    ),
    # AWS access key ids
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "***"),
]


_KNOWN: set[str] = set()


def register(*secrets: str) -> None:
    """Remember values that must never be printed (from storage options, URLs)."""
    _KNOWN.update(s for s in secrets if isinstance(s, str) and len(s) >= 4)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    for s in sorted(set(secrets) | _KNOWN, key=len, reverse=True):
        if s:
            text = text.replace(s, "***")
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text
