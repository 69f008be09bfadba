"""Secrets out of every message: store passwords and keys found by parsing the DSN, not by pattern.

A password may hold any character: `#`, `?`, `/`, `@`, a space, `%`-escapes, quotes. A pattern that
stops at one of them shows the rest, and libpq itself may read such a DSN differently from what the
user meant (a raw `@` or `/` moves part of the password into the host name, which then appears in
its error messages). So each DSN is parsed twice, the tolerant way (userinfo ends at the last `@`)
and the way libpq reads it, and every form of its password (as written, decoded, %-encoded, as
libpq took it) is removed from a text, together with any piece of it of 4 or more characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

MASK = "***"
SHORTEST_PIECE = 4
"""A run of this many characters of a password is masked wherever it appears (shorter passwords: whole)."""

_SCHEME = re.compile(r"^\s*[a-z][a-z0-9+.-]*://", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@?#\s]*:)(?P<secret>[^@/?#\s]*)(?=@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^\s&]*)", re.I)


def is_url(dsn: str) -> bool:
    return bool(_SCHEME.match(dsn))


def _split_url(url: str) -> tuple[str, str | None, str | None, str]:
    """(scheme://, user, password as written or None, the rest after `@`).

    The userinfo ends at the last `@` before the query, or if there is none there, at the last `@` of all:
    an unescaped `@`, `/`, `?` or `#` in a password stays inside it, and an `@` in a query value
    (`?application_name=me@home`) stays outside."""
    head = _SCHEME.match(url)
    assert head is not None
    tail = url[head.end() :]
    query = tail.find("?")
    at = tail.rfind("@", 0, query) if query >= 0 else -1
    if at < 0:
        at = tail.rfind("@")
    if at < 0:
        return head.group(), None, None, tail
    user, colon, password = tail[:at].partition(":")
    return head.group(), user, (password if colon else None), tail[at + 1 :]


def _query_password(rest: str) -> tuple[str, list[str]]:
    """`rest` with the value of any `password=` query parameter masked, and those values."""
    path, question, query = rest.partition("?")
    if not question:
        return rest, []
    found, parts = [], []
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        if eq and unquote(name).strip().lower() == "password":
            found.append(value)
            item = f"{name}={MASK}"
        parts.append(item)
    return f"{path}?{'&'.join(parts)}", found


def _libpq_password(dsn: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(dsn).get("password")
    except Exception:  # unparseable: the tolerant parse is all there is
        return None


def passwords(dsn: str | None) -> set[str]:
    """Every form the password of a DSN or URL (key=value or URL form) may take in a message."""
    if not dsn:
        return set()
    written: list[str] = []
    parsed = _libpq_password(dsn)
    written += [parsed] if parsed else []
    if is_url(dsn):
        _, _, password, rest = _split_url(dsn)
        written += [password] if password else []
        written += _query_password(rest)[1]
    else:
        for match in _KV_PASSWORD.finditer(dsn):
            value = match["secret"]
            written.append(value)
            if value.startswith("'"):
                written.append(value[1:-1].replace("\\'", "'").replace("\\\\", "\\"))
        first = _KV_PASSWORD.search(dsn)
        if first and parsed is None:  # libpq cannot read it (an unclosed quote?): all that follows `password=`
            written.append(dsn[first.start("secret") :].strip())
    forms = set()
    for value in written:
        forms |= {value, unquote(value), quote(unquote(value), safe=""), quote(value, safe="")}
    return {form for form in forms if form}


def misread_password(dsn: str | None) -> bool:
    """True when libpq would read another password than the URL holds (an unescaped `@` or `/` in it):
    such a DSN is refused before any connection, as its error messages would quote parts of the password."""
    if not dsn or not is_url(dsn):
        return False
    password = _split_url(dsn)[2]
    return password is not None and (_libpq_password(dsn) or "") != unquote(password)


def describe_dsn(dsn: str | None) -> str:
    """The DSN as it can be shown: host, port, user, database; the password (wherever it is) masked."""
    if not dsn:
        return ""
    if is_url(dsn):
        head, user, password, rest = _split_url(dsn)
        rest = _query_password(rest)[0]
        shown = head.strip() + (f"{user}{':' + MASK if password is not None else ''}@" if user is not None else "")
        return redact(shown + rest, dsn)
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(dsn)
    except Exception:
        return "(a connection string that cannot be parsed)"
    if "password" in params:
        params["password"] = MASK
    return redact(make_conninfo(**params), dsn)


def redact(text: str | None, *dsns: str | None, keys: Iterable[str | None] = ()) -> str:
    """`text` without the passwords of these DSNs/URLs or these API keys, in any form or piece.

    A DSN or URL left in the text that none of them names is still masked by its shape (a last net)."""
    if not text:
        return ""
    secrets = {form for dsn in dsns for form in passwords(dsn)} | {k for k in keys if k}
    # A short form that is a piece of a longer one (libpq read `p` of `p@ss`) is masked as a piece only.
    secrets = {s for s in secrets if len(s) >= SHORTEST_PIECE or not any(s in t for t in secrets if t != s)}
    for secret in sorted(secrets, key=len, reverse=True):
        text = _mask_pieces(text, secret)
    text = _URL_PASSWORD.sub(lambda m: m["head"] + (MASK if m["secret"] else ""), text)
    return _KV_PASSWORD.sub(lambda m: m["head"] + MASK, text)


def _mask_pieces(text: str, secret: str) -> str:
    """Replace every run of `text` that is a piece of `secret` at least SHORTEST_PIECE long (or all of it)."""
    shortest = min(SHORTEST_PIECE, len(secret))
    out: list[str] = []
    i = 0
    while i < len(text):
        n = 0
        while i + n < len(text) and text[i : i + n + 1] in secret:
            n += 1
        if n >= shortest:
            out.append(MASK)
            i += n
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
