"""Database locations: telling a PostgreSQL URL from a SQLite path, and keeping passwords out of text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

POSTGRES_SCHEMES: tuple[str, ...] = ("postgresql://", "postgres://")

# The `password=` keyword of a libpq connection string or URL query, in any message.
_PASSWORD_PARAM = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)


def is_postgres_url(value: Path | str) -> bool:
    """True when `value` names a PostgreSQL server (a `postgresql://` URL), not a file."""
    return isinstance(value, str) and value.lower().startswith(POSTGRES_SCHEMES)


def check_postgres_url(url: str) -> str:
    """The URL when it names a database on a server; ValueError (without the password) if not."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsing the port is the check)
    except ValueError as exc:
        raise ValueError(f"not a valid PostgreSQL URL ({redact_url(url)}): {exc}") from None
    if not parts.path.strip("/"):
        raise ValueError(f"the PostgreSQL URL {redact_url(url)} names no database "
                         "(postgresql://user@host:5432/DATABASE)")
    return url


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***` (safe to log and to show)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    return _PASSWORD_PARAM.sub(r"\1***", urlunsplit(parts._replace(netloc=netloc)))


def url_password(url: str) -> str | None:
    """The password a URL carries, if any (to scrub it from driver messages)."""
    return urlsplit(url).password


def scrub(text: str, url: str) -> str:
    """`text` with the URL's password (and any `password=` value) removed."""
    password = url_password(url)
    if password:  # as written in the URL, and as the driver decoded it
        text = text.replace(password, "***").replace(unquote(password), "***")
    return _PASSWORD_PARAM.sub(r"\1***", text)


def store_identity(url: str) -> str:
    """Which database a URL names, without user or password: `postgresql://host:port/db`."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"postgresql://{host}:{parts.port or 5432}/{parts.path.strip('/')}"


def with_database_secret(data: Any, current: Path | str) -> Any:
    """A submitted config with a redacted `database` URL (as the API shows it) given back the
    password of the one in force, so a config read, edited and applied keeps its secret."""
    if (isinstance(data, dict) and is_postgres_url(current) and isinstance(current, str)
            and data.get("database") == redact_url(current) != current):
        return {**data, "database": current}
    return data
