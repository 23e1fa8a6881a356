"""From one host's :class:`~hasql_core.dsn.Dsn` to what ``create_async_engine`` takes.

The DSN's scheme picks SQLAlchemy's dialect (``postgresql+asyncpg``, ``postgresql+psycopg``; a plain
``postgresql://``, ``postgres://`` or a key=value DSN means asyncpg, as in hasql). The URL is built
as a :class:`sqlalchemy.engine.URL` object, never as text, so no host, user or password needs quoting
and the password never exists in a string SQLAlchemy could log.

libpq parameters in the DSN's query keep their libpq meaning for both dialects:

- psycopg hands every query parameter to libpq, so they go into the URL's query unchanged;
- asyncpg takes keyword arguments instead and passes unknown ones to the server, so for it the
  parameters are translated into ``connect_args`` (see :func:`asyncpg_connect_args`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import URL

from hasql_core.dsn import Dsn
from hasql_core.errors import ConfigurationError, DsnError

__all__ = [
    "DEFAULT_DIALECT",
    "asyncpg_connect_args",
    "dialect_of",
    "engine_arguments",
    "merge_connect_args",
]

#: The dialect of DSNs whose scheme names none (``postgresql://``, ``postgres://``, key=value).
DEFAULT_DIALECT = "asyncpg"

#: Dialects known to work; others with an async driver are passed to SQLAlchemy as given.
TESTED_DIALECTS = frozenset({"asyncpg", "psycopg"})

#: libpq parameters asyncpg reads only from a DSN string (TLS files and the like): they are handed
#: to asyncpg in a ``dsn`` connect argument that holds nothing else.
_ASYNCPG_DSN_ONLY = frozenset(
    {
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslpassword",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "service",
    }
)

#: asyncpg keyword arguments that may be written in the DSN's query, with their types.
_ASYNCPG_TYPED: Mapping[str, type] = {
    "ssl": str,
    "timeout": float,
    "command_timeout": float,
    "statement_cache_size": int,
    "max_cached_statement_lifetime": float,
    "max_cacheable_statement_size": int,
    "prepared_statement_cache_size": int,
    "passfile": str,
    "krbsrvname": str,
    "gsslib": str,
}

#: libpq client parameters that are no server settings and that asyncpg has no use for: passing
#: them on would make the server refuse the session ("unrecognized configuration parameter").
_ASYNCPG_DROPPED = frozenset(
    {
        "target_session_attrs",
        "load_balance_hosts",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "channel_binding",
        "gssencmode",
        "gssdelegation",
        "requirepeer",
        "require_auth",
        "sslcompression",
        "sslsni",
        "sslcertmode",
        "sslkeylogfile",
        "requiressl",
        "replication",
        "servicefile",
        "min_protocol_version",
        "max_protocol_version",
        "sslcrldir",
        "oauth_issuer",
        "oauth_client_id",
        "oauth_client_secret",
        "oauth_scope",
    }
)


def dialect_of(dsn: Dsn, default: str = DEFAULT_DIALECT) -> str:
    """The SQLAlchemy dialect driver the DSN's scheme names: the part after ``+``
    (``postgresql+psycopg``), or ``default`` for ``postgresql://``, ``postgres://`` and key=value
    DSNs."""
    scheme = (dsn.scheme or "").lower()
    _, plus, driver = scheme.partition("+")
    if not plus:
        return default
    if driver == "psycopg_async":  # SQLAlchemy's explicit name of psycopg's async variant
        return "psycopg"
    return driver


def _number(key: str, value: str, kind: type) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise DsnError(f"{key} must be a number, got {value!r}") from None


def asyncpg_connect_args(dsn: Dsn) -> dict[str, Any]:
    """The ``connect_args`` that give asyncpg the DSN's query parameters with libpq's meaning.

    - ``sslmode`` becomes asyncpg's ``ssl`` (asyncpg takes libpq's mode names), ``connect_timeout``
      its ``timeout`` (seconds; zero or less means none, as in libpq);
    - asyncpg's own arguments (``ssl``, ``command_timeout``, ``statement_cache_size``,
      ``prepared_statement_cache_size``, ...) are passed with their types;
    - the TLS file parameters (``sslrootcert``, ``sslcert``, ...) go in a ``dsn`` holding only
      them, read by asyncpg's libpq-compatible code;
    - ``hostaddr`` is dropped (the host connected to is the DSN's host), as are the other libpq
      client parameters asyncpg has no use for (``target_session_attrs``, ``keepalives``, ...);
    - ``fallback_application_name`` is the ``application_name`` when none is given; every other
      parameter (``application_name``, ``options``, ``search_path``, ...) is a server setting,
      sent in ``server_settings`` at connect.
    """
    args: dict[str, Any] = {}
    settings: dict[str, str] = {}
    dsn_only: dict[str, str] = {}
    fallback_name: str | None = None
    for key, value in dsn.params:
        if key == "sslmode":
            args.setdefault("ssl", value)
        elif key == "connect_timeout":
            seconds = _number(key, value, float)
            if seconds > 0:
                args.setdefault("timeout", seconds)
        elif key in _ASYNCPG_TYPED:
            kind = _ASYNCPG_TYPED[key]
            args[key] = value if kind is str else _number(key, value, kind)
        elif key in _ASYNCPG_DSN_ONLY:
            dsn_only[key] = value
        elif key == "fallback_application_name":
            fallback_name = value
        elif key in _ASYNCPG_DROPPED or key == "hostaddr":
            continue
        else:
            settings[key] = value
    if fallback_name and "application_name" not in settings:
        settings["application_name"] = fallback_name
    if settings:
        args["server_settings"] = settings
    if dsn_only:
        args["dsn"] = "postgresql://?" + urlencode(sorted(dsn_only.items()))
    return args


def merge_connect_args(derived: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """The DSN's connect arguments overridden by the user's; ``server_settings`` merged key by key.

    Neither mapping is modified; the result shares no dict with the user's.
    """
    merged = {**derived, **user}
    if "server_settings" in derived or user.get("server_settings") is not None:
        merged["server_settings"] = {
            **derived.get("server_settings", {}),
            **(user.get("server_settings") or {}),
        }
    return merged


def engine_arguments(
    dsn: Dsn, options: Mapping[str, Any], default_dialect: str = DEFAULT_DIALECT
) -> tuple[URL, dict[str, Any]]:
    """The URL and keyword arguments of ``create_async_engine`` for the host of ``dsn``.

    ``options`` are the user's ``pool_factory_kwargs``: they are copied, never modified; the copy
    gets ``connect_args`` merged from the DSN's parameters (the user's ``connect_args`` win).
    """
    if "url" in options:
        raise ConfigurationError(
            "pool_factory_kwargs must not hold 'url': each host's URL comes from the DSN"
        )
    dialect = dialect_of(dsn, default_dialect)
    query: dict[str, str] = {}
    derived: dict[str, Any] = {}
    if dialect == "asyncpg":
        derived = asyncpg_connect_args(dsn)
    else:
        # libpq reads them itself; the host is chosen by hasql-core, never by libpq.
        query = {
            k: v for k, v in dsn.params if k not in ("target_session_attrs", "load_balance_hosts")
        }
    url = URL.create(
        f"postgresql+{dialect}",
        username=dsn.user,
        password=dsn.password,
        host=dsn.host,
        port=dsn.port,
        database=dsn.database,
        query=query,
    )
    kwargs = dict(options)
    user_args = kwargs.get("connect_args") or {}
    if not isinstance(user_args, Mapping):
        raise ConfigurationError(f"connect_args must be a dict, got {type(user_args).__name__}")
    if dialect == "psycopg" and "async_creator" not in kwargs:
        from .driver import bounded_cancel_connection_class

        derived["async_creator_fn"] = bounded_cancel_connection_class().connect
    if derived or user_args:
        kwargs["connect_args"] = merge_connect_args(derived, user_args)
    return url, kwargs
