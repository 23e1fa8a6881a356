"""Multi-host PostgreSQL connection strings (DSNs), read the way libpq reads them.

The core cannot depend on libpq, yet every pool and monitor connection is made from the
single-host DSNs this module cuts out of the one multi-host DSN the application gives. So
:func:`parse_dsn` reads both forms libpq accepts -- URLs (``postgresql://``, ``postgres://``) and
``key=value`` strings -- with libpq's own rules, works out the servers libpq would try, in its
order, and :func:`split_dsn` gives one single-host :class:`Dsn` per server that makes libpq (or any
driver) connect to exactly that server with every other setting unchanged. Secrets never appear in
``str()``/``repr()`` of a :class:`Dsn`, nor in any :class:`~hasql_core.errors.DsnError`: error
messages name the problem, the part of the DSN and the fix, and never quote the DSN.

libpq's rules, as followed here
-------------------------------
- **URL.** User info ends at the first ``@`` before the first ``/``; the user name ends at its
  first ``:``, the password is the rest. Hosts are a comma-separated list of ``name[:port]`` or
  ``[ipv6][:port]``; the database is the path; settings in the query (``key=value`` joined by
  ``&``) override the rest of the URL (``?host=/tmp`` replaces the hosts). Every part is
  percent-decoded (``+`` is not a space); raw spaces at the ends of a part are dropped and a raw
  space inside a part is refused (libpq 17 and later). A query item without ``=`` or with a second
  ``=`` is refused. ``ssl=true`` means ``sslmode=require``.
- **key=value.** Settings are separated by whitespace; a value may be single-quoted, and ``\\``
  escapes the next character. The last of a repeated setting wins; ``requiressl=1`` means
  ``sslmode=require`` (any other value ``sslmode=prefer``).
- **Hosts, ports, addresses.** ``host``, ``hostaddr`` and ``port`` are comma-separated lists.
  There is one server per ``hostaddr`` entry when ``hostaddr`` is given (``host`` must then have as
  many entries), else one per ``host`` entry. One port applies to every host; otherwise ports pair
  with hosts by position; an empty entry means port 5432. Two servers that differ only in
  ``hostaddr`` are two servers.
- **What the DSN does not say.** ``host``, ``hostaddr`` and ``port`` missing from the DSN come, as
  in libpq, from the service file (``service=`` or ``PGSERVICE``), then from ``PGHOST``,
  ``PGHOSTADDR`` and ``PGPORT`` (an empty DSN takes everything from there). A setting given empty
  (``port=''``, ``hostaddr=''``) keeps them away, as in libpq; so does the port list libpq makes
  for a URL with several hosts: ``postgresql://db1,db2/`` is both on 5432 even with ``PGPORT`` set.
  What they give is written into each single-host DSN, so every driver connects where libpq would.
  A port nobody gave stays ungiven (libpq's default, 5432, applies; no ``port=5432`` is added).
  Everything else (user, password, ``PGUSER``, the rest of the service file, ``~/.pgpass``) is left
  to libpq or the driver, unchanged: the ``service`` setting is passed on to every host.

hasql's one deliberate reading beyond libpq
-------------------------------------------
In a URL whose hosts carry no port except the last one, that port applies to every host:
``postgresql://db1,db2,db3:6432/`` is db1, db2 and db3 on 6432 (hasql's documented rule; libpq
would put db1 and db2 on 5432). Only the exact shape counts: if any other host is written with a
``:`` (``db1:,db2:6432`` or ``db1:5433,db2,db3:6432``) ports pair by position as in libpq, so
``db2`` above is on 5432. To get libpq's reading of the short form, write ``db1:5432,db2:5432,db3:6432``.

Where this module differs from libpq: refused with a DsnError
-------------------------------------------------------------
- no host at all (libpq would use its built-in socket directory, which differs between builds),
  or an empty entry in the host list: name every host, e.g. ``host=/var/run/postgresql``;
- a ``hostaddr`` entry without a host name: give the name too (or the address itself as host);
- a port that is a number but not 1..65535 (libpq would skip that host): fix the port;
- a host name no server can have (holding a space, ``@``, ``/``, ``?``, quotes, control
  characters...): a raw ``@`` in a URL password is the usual cause; write it as ``%40``;
- a service defined only in libpq's built-in system directory, which this module cannot see:
  set ``PGSYSCONFDIR`` (or ``PGSERVICEFILE``) to the file's directory (or file), or name the hosts;
  an LDAP lookup in a service file: name the hosts;
- ``requiressl`` (or ``ssl``) as a parameter of a :class:`Dsn` built by hand: libpq translates
  these names while reading a DSN, so write ``sslmode``.

Accepted beyond libpq (libpq refuses these, so nothing is read differently): the schemes
``postgresql+<driver>://`` and any capitalisation of the scheme, whitespace before a URL, and
parameter names libpq does not know (passed on to the driver; asyncpg sends them to the server
as settings, libpq-based drivers refuse them when connecting). A host listed twice with the same
port and ``hostaddr`` is one server and is kept once.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, unquote

import attrs

from hasql_core.errors import DsnError

__all__ = [
    "ADDRESS_PARAMS",
    "CLIENT_ONLY_PARAMS",
    "DEFAULT_PORT",
    "HOST_SELECTION_PARAMS",
    "LIBPQ_PARAMETERS",
    "SECRET_PARAMS",
    "STARTUP_PARAMS",
    "Dsn",
    "HostPort",
    "Trait",
    "for_one_host",
    "is_secret_param",
    "parse_dsn",
    "redact_dsn",
    "split_dsn",
]

DEFAULT_PORT = 5432


# --- libpq knowledge, in one table ---


class Trait(enum.Enum):
    """What a libpq connection parameter is, for the code that must treat it specially."""

    #: Says which server to connect to (``host``, ``hostaddr``, ``port``): split per host.
    ADDRESS = "address"
    #: Picks among several hosts (``target_session_attrs``, ``load_balance_hosts``): meaningless,
    #: even harmful, in a single-host DSN, since hasql-core routes by role itself.
    HOST_SELECTION = "host-selection"
    #: Its value is a secret: never shown.
    SECRET = "secret"
    #: Sent to the server in the startup packet (``user``, ``dbname``, ``options``, ...); every
    #: other libpq parameter is read by the client library only.
    STARTUP = "startup"
    #: Configures TLS.
    TLS = "tls"
    #: Names a local file libpq reads or writes.
    FILE = "file"


_A, _HS, _S, _ST, _T, _F = (
    Trait.ADDRESS,
    Trait.HOST_SELECTION,
    Trait.SECRET,
    Trait.STARTUP,
    Trait.TLS,
    Trait.FILE,
)

#: Every connection parameter libpq 18 knows, with its traits. libpq refuses any other name; this
#: module passes other names on to the driver (see the module documentation). ``requiressl`` and
#: the URL's ``ssl=true`` are spellings of ``sslmode`` and never appear in a :class:`Dsn`.
LIBPQ_PARAMETERS: Mapping[str, frozenset[Trait]] = MappingProxyType(
    {
        name: frozenset(traits)
        for name, traits in {
            "service": (),
            "user": (_ST,),
            "password": (_S,),
            "passfile": (_F,),
            "channel_binding": (),
            "connect_timeout": (),
            "dbname": (_ST,),
            "host": (_A,),
            "hostaddr": (_A,),
            "port": (_A,),
            "client_encoding": (_ST,),
            "options": (_ST,),
            "application_name": (_ST,),
            "fallback_application_name": (_ST,),
            "keepalives": (),
            "keepalives_idle": (),
            "keepalives_interval": (),
            "keepalives_count": (),
            "tcp_user_timeout": (),
            "sslmode": (_T,),
            "sslnegotiation": (_T,),
            "sslcompression": (_T,),
            "sslcert": (_T, _F),
            "sslkey": (_T, _F),
            "sslcertmode": (_T,),
            "sslpassword": (_T, _S),
            "sslrootcert": (_T, _F),
            "sslcrl": (_T, _F),
            "sslcrldir": (_T, _F),
            "sslsni": (_T,),
            "sslkeylogfile": (_T, _F),
            "requirepeer": (),
            "require_auth": (),
            "min_protocol_version": (),
            "max_protocol_version": (),
            "ssl_min_protocol_version": (_T,),
            "ssl_max_protocol_version": (_T,),
            "gssencmode": (),
            "krbsrvname": (),
            "gsslib": (),
            "gssdelegation": (),
            "replication": (_ST,),
            "target_session_attrs": (_HS,),
            "load_balance_hosts": (_HS,),
            "scram_client_key": (_S,),
            "scram_server_key": (_S,),
            "oauth_issuer": (),
            "oauth_client_id": (),
            "oauth_client_secret": (_S,),
            "oauth_scope": (),
        }.items()
    }
)


def _having(trait: Trait) -> frozenset[str]:
    return frozenset(name for name, traits in LIBPQ_PARAMETERS.items() if trait in traits)


#: ``host``, ``hostaddr``, ``port``: which server. :func:`split_dsn` gives each host its own.
ADDRESS_PARAMS = _having(Trait.ADDRESS)
#: Parameters that pick among hosts. :func:`for_one_host` drops them: with
#: ``target_session_attrs=read-write`` a standby's pool could never connect.
HOST_SELECTION_PARAMS = _having(Trait.HOST_SELECTION)
#: Parameters whose values are secrets. Any parameter whose name contains "password", "secret",
#: "token" or "passwd" is treated as secret too (see :func:`is_secret_param`).
SECRET_PARAMS = _having(Trait.SECRET)
#: Parameters sent to the server in the startup packet (``fallback_application_name`` becomes
#: ``application_name`` when that is not given).
STARTUP_PARAMS = _having(Trait.STARTUP)
#: libpq parameters read by the client library only, never sent to the server. A driver that
#: turns parameters it does not know into server settings (asyncpg does) must not pass these on.
CLIENT_ONLY_PARAMS = frozenset(LIBPQ_PARAMETERS) - STARTUP_PARAMS

_ENV_VARS = {"host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT"}
_SECRET_WORDS = ("password", "secret", "token", "passwd")
_MASK = "***"
# libpq splits key=value strings on isspace() in the C locale.
_WS = " \t\n\r\f\v"
# Names that are fields of Dsn rather than entries of Dsn.params.
_FIELD_KEYS = frozenset({"host", "port", "user", "password", "dbname"})
# Spellings of sslmode that libpq translates while parsing.
_SSLMODE_ALIASES = frozenset({"ssl", "requiressl"})
_FORMS = (
    "accepted forms are a URL such as 'postgresql://user@db1:5432,db2:5432/dbname?sslmode=require'"
    " (also postgres:// and postgresql+driver://) or key=value settings such as"
    " 'host=db1,db2 port=5432 user=app dbname=app'"
)
_NO_HOST = (
    "no host given (in the DSN, its service or PGHOST); name every host, e.g."
    " postgresql://user@db1,db2/dbname or host=/var/run/postgresql"
)

_URL_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_PG_SCHEME = re.compile(r"postgres(?:ql)?(?:\+[A-Za-z0-9_][A-Za-z0-9_.\-]*)?", re.IGNORECASE)
_HEX = "0123456789abcdefABCDEF"
_AUTHORITY_NAME = re.compile(r"[A-Za-z0-9._~\-]+")
_AUTHORITY_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:%[A-Za-z0-9._~\-]+)?")
# Characters no server name holds; named (one at a time) in error messages.
_BAD_HOST_CHARS = ",/@[]?#'\"\\=` "
_INT = re.compile(r"[ \t\n\r\f\v]*([+-]?)([0-9]+)[ \t\n\r\f\v]*")

# libpq's keywords. Redaction of free text ends a secret value only where one of these starts,
# so that a password holding spaces or '&' is hidden whole.
_KEYWORDS = "|".join(sorted(LIBPQ_PARAMETERS, key=len, reverse=True))
_ASSIGNMENT = re.compile(r"(?:^|(?<=[\s?&;,]))([A-Za-z0-9_.%+\-]+)[ \t\n\r\f\v]*=[ \t\n\r\f\v]*")
# A secret libpq keyword written without '=' (a typo in key=value settings), followed by a word.
_SECRET_WORD = re.compile(
    r"(?<!\S)(?:" + "|".join(sorted(SECRET_PARAMS)) + r")(?=[ \t\n\r\f\v]+[^=\s])",
    re.IGNORECASE,
)
_NEXT_KEY = re.compile(r"(?:&|[ \t\n\r\f\v]+)(?:" + _KEYWORDS + r")[ \t\n\r\f\v]*=", re.IGNORECASE)
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:/*")


def is_secret_param(key: str) -> bool:
    """Return whether the value of parameter ``key`` is a secret that must never be shown."""
    lowered = key.lower()
    return lowered in SECRET_PARAMS or any(word in lowered for word in _SECRET_WORDS)


# --- validation shared by the attrs classes and the parsers ---


def _check_text(value: str, what: str) -> None:
    if "\x00" in value:
        raise DsnError(f"the {what} contains a NUL character, which libpq cannot pass on")
    # Checked without encoding: a UnicodeEncodeError would carry the whole value along.
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise DsnError(f"the {what} is not valid Unicode (it holds lone surrogates)")


def _host_problem(host: str) -> str | None:
    """Why ``host`` cannot name a server, or None. Never quotes ``host``."""
    if not host:
        return "it is empty"
    if "," in host:
        return "it contains ',', which separates hosts"
    if host[0] in "/@":
        return None  # a Unix-socket directory (or abstract socket name) may be any path
    for ch in host:
        if ch in _BAD_HOST_CHARS:
            return f"it contains {ch!r}"
        if not ch.isprintable() or ch.isspace():
            return "it contains whitespace or a control character"
    return None


def _validate_host(_: object, __: object, host: str) -> None:
    if not isinstance(host, str):
        raise DsnError(f"a host must be a str, not {type(host).__name__}")
    _check_text(host, "host name")
    problem = _host_problem(host)
    if problem:
        raise DsnError(
            f"invalid host name: {problem}; give a DNS name, an IP address (IPv6 in brackets only"
            " in a URL) or a Unix-socket directory starting with '/'"
        )


def _validate_port(_: object, __: object, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise DsnError("invalid port; a port is a whole number from 1 to 65535")


def _key_problem(key: str) -> str | None:
    if not key or not key.isprintable() or any(ch in _WS or ch == "=" for ch in key):
        return (
            "invalid parameter name; names must be non-empty and hold no whitespace, control"
            " characters or '='"
        )
    if key in _SSLMODE_ALIASES:
        return f"the parameter name {key!r} is a spelling of sslmode; write sslmode=require"
    return None


def _shown_key(key: str) -> str:
    """``key`` quoted if libpq knows it (so it holds no secret), else a neutral phrase."""
    return repr(key) if key in LIBPQ_PARAMETERS else "a parameter"


def _validate_optional_text(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise DsnError(f"Dsn.{attribute.name} must be a str or None")
    _check_text(value, attribute.name)


def _to_hosts(value: Iterable[HostPort]) -> tuple[HostPort, ...]:
    return tuple(value)


def _to_params(value: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((key, val) for key, val in value)


def _validate_scheme(_: object, __: object, scheme: str | None) -> None:
    if scheme is not None and not (isinstance(scheme, str) and _PG_SCHEME.fullmatch(scheme)):
        raise DsnError("unsupported scheme; use postgresql, postgres or postgresql+<driver>")


def _validate_hosts(_: object, __: object, hosts: tuple[HostPort, ...]) -> None:
    if not hosts:
        raise DsnError(_NO_HOST)
    if not all(isinstance(host, HostPort) for host in hosts):
        raise DsnError("Dsn.hosts must hold HostPort instances")


def _validate_params(_: object, __: object, params: tuple[tuple[str, str], ...]) -> None:
    seen: set[str] = set()
    for key, value in params:
        if not isinstance(key, str) or not isinstance(value, str):
            raise DsnError("Dsn.params must hold (str, str) pairs")
        problem = _key_problem(key)
        if problem:
            raise DsnError(problem)
        if key in _FIELD_KEYS:
            raise DsnError(f"parameter {key!r} belongs in its own Dsn field, not in Dsn.params")
        if key in seen:
            raise DsnError(f"{_shown_key(key)} is given twice in Dsn.params")
        seen.add(key)
        _check_text(value, f"value of {_shown_key(key)}")


# --- the data model ---


@attrs.frozen
class HostPort:
    """One server address: ``host`` and TCP ``port`` (for a socket directory, the socket's number).

    ``host`` is a DNS name, an IPv4 address, an IPv6 address written without brackets, or a
    Unix-socket directory (starting with "/") or abstract socket name (starting with "@").
    ``port`` is 1..65535: the port libpq connects to. ``port_given`` is False when nothing (the
    DSN, its service, ``PGPORT``) gave a port, so that libpq's default applies; DSNs written from
    this one then leave the port out. It takes no part in equality. Invalid values raise
    :class:`DsnError`.
    """

    host: str = attrs.field(validator=_validate_host)
    port: int = attrs.field(validator=_validate_port)
    port_given: bool = attrs.field(default=True, eq=False, kw_only=True)

    @property
    def is_socket(self) -> bool:
        """Whether ``host`` names a Unix-socket directory rather than a network host."""
        return self.host[0] in "/@"

    def __str__(self) -> str:
        if ":" in self.host and not self.is_socket:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@attrs.frozen(repr=False)
class Dsn:
    """A parsed connection string: one or more hosts plus the settings shared by all of them.

    ``scheme`` is the URL scheme as given (``None`` for the key=value form) and decides the form
    :meth:`redacted` writes. ``user``, ``password`` and ``database`` are ``None`` when not given;
    an empty string is an explicitly empty value, which libpq treats differently (``user=''``
    ignores ``PGUSER``). ``params`` holds every other setting in the order given, with string
    values, ``hostaddr`` included: a comma-separated list with one entry per host (an empty entry:
    connect by name), or ``''`` for none. Construction validates all of this and raises
    :class:`DsnError`; ``str()`` and ``repr()`` never show a secret.
    """

    scheme: str | None = attrs.field(validator=_validate_scheme)
    hosts: tuple[HostPort, ...] = attrs.field(converter=_to_hosts, validator=_validate_hosts)
    user: str | None = attrs.field(default=None, validator=_validate_optional_text)
    password: str | None = attrs.field(default=None, validator=_validate_optional_text)
    database: str | None = attrs.field(default=None, validator=_validate_optional_text)
    params: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_to_params, validator=_validate_params
    )

    def __attrs_post_init__(self) -> None:
        addrs = self._hostaddrs()
        if addrs is not None and len(addrs) != len(self.hosts):
            raise DsnError(
                f"could not match {len(addrs)} hostaddr values to {len(self.hosts)} hosts;"
                " give one hostaddr per host, in the same order"
            )

    def _hostaddrs(self) -> list[str] | None:
        """The hostaddr entry of each host, or None when no hostaddr is set."""
        for key, value in self.params:
            if key == "hostaddr":
                return value.split(",") if value else [""] * len(self.hosts)
        return None

    @property
    def host(self) -> str:
        """The host of a single-host DSN; :class:`DsnError` if there are several."""
        return self._only_host().host

    @property
    def port(self) -> int:
        """The port of a single-host DSN; :class:`DsnError` if there are several hosts."""
        return self._only_host().port

    def _only_host(self) -> HostPort:
        if len(self.hosts) != 1:
            raise DsnError(
                f"this DSN has {len(self.hosts)} hosts, so it has no single host or port;"
                " use split_dsn() to get one DSN per host"
            )
        return self.hosts[0]

    def options(self) -> dict[str, str]:
        """Every parameter other than host, port, user, password and dbname, as a dict."""
        return dict(self.params)

    def with_host(self, host: str, port: int) -> Dsn:
        """Return a copy that connects to ``host``:``port`` only.

        ``hostaddr`` is dropped, since it gave the addresses of the replaced hosts.
        """
        params = [(key, value) for key, value in self.params if key != "hostaddr"]
        return attrs.evolve(self, hosts=(HostPort(host, port),), params=params)

    def _ports_given(self) -> bool:
        return any(hp.port_given for hp in self.hosts)

    def to_url(self, *, redact: bool = False) -> str:
        """Write this DSN as a URL that :func:`parse_dsn` (and libpq) reads back to it.

        The scheme is :attr:`scheme` or ``postgresql``. Hosts go in the authority, each with its
        port when any port is given; they go in the query as ``host=...&port=...`` instead when
        one cannot be written there plainly (a socket directory, a non-ASCII name) or when several
        hosts have no port given (libpq would read bare authority hosts as on port 5432, not as
        ports left to ``PGPORT``). Empty user, password and database go in the query. With
        ``redact=True`` the password and every secret parameter read ``***``.
        """
        userinfo = ""
        query: list[str] = []
        if self.user or self.password:
            userinfo = _pct(self.user or "")
            if self.password:
                userinfo += ":" + (_MASK if redact else _pct(self.password))
            userinfo += "@"
        ports_given = self._ports_given()
        several = len(self.hosts) > 1
        if all(_fits_authority(hp) for hp in self.hosts) and (ports_given or not several):
            # libpq reads bare authority hosts "db1,db2" as each on port 5432 (PGPORT unused).
            plain = several and all(hp.port == DEFAULT_PORT for hp in self.hosts)
            with_ports = ports_given and not plain
            netloc = ",".join(_authority_host(hp, with_ports) for hp in self.hosts)
        else:
            netloc = ""
            query.append("host=" + ",".join(_pct(hp.host) for hp in self.hosts))
            if ports_given:
                query.append("port=" + _port_list(self.hosts))
        for key, value in (("user", self.user), ("password", self.password)):
            if value == "":
                query.append(f"{key}=")
        if self.database == "":
            query.append("dbname=")
        for key, value in self.params:
            shown = _MASK if redact and is_secret_param(key) else quote(value, safe=",")
            query.append(f"{_pct(key)}={shown}")
        scheme = self.scheme or "postgresql"
        url = f"{scheme}://{userinfo}{netloc}/{_pct(self.database or '')}"
        return url + ("?" + "&".join(query) if query else "")

    def to_conninfo(self, *, redact: bool = False) -> str:
        """Write this DSN as libpq key=value settings that :func:`parse_dsn` reads back to it.

        Values are single-quoted, with backslash escapes, where libpq needs it; the port is left
        out when no host's port was given. With ``redact=True`` the password and every secret
        parameter read ``***``.
        """
        pairs = [("host", ",".join(hp.host for hp in self.hosts))]
        if self._ports_given():
            pairs.append(("port", _port_list(self.hosts)))
        for key, value in (
            ("user", self.user),
            ("password", self.password),
            ("dbname", self.database),
        ):
            if value is not None:
                pairs.append((key, value))
        pairs.extend(self.params)
        return " ".join(
            f"{key}={_MASK if redact and is_secret_param(key) else _conninfo_quote(value)}"
            for key, value in pairs
        )

    def redacted(self) -> str:
        """This DSN in the form it was given in (URL or key=value), every secret as ``***``."""
        if self.scheme is None:
            return self.to_conninfo(redact=True)
        return self.to_url(redact=True)

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"Dsn({self.redacted()!r})"


def _pct(text: str) -> str:
    return quote(text, safe="")


def _fits_authority(hp: HostPort) -> bool:
    return not hp.is_socket and bool(
        _AUTHORITY_NAME.fullmatch(hp.host) or _AUTHORITY_IPV6.fullmatch(hp.host)
    )


def _authority_host(hp: HostPort, with_port: bool) -> str:
    host = f"[{quote(hp.host, safe=':')}]" if ":" in hp.host else hp.host
    return f"{host}:{hp.port}" if with_port else host


def _port_list(hosts: tuple[HostPort, ...]) -> str:
    ports = {hp.port for hp in hosts}
    if len(ports) == 1:
        return str(ports.pop())
    return ",".join(str(hp.port) for hp in hosts)


def _conninfo_quote(value: str) -> str:
    if value and not any(ch in _WS or ch in "'\\" for ch in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --- parsing: what the text says ---


class _Options:
    """The settings a DSN text gives, by libpq keyword, in the order first given."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def set(self, key: str, value: str, *, url_query: bool = False) -> None:
        if url_query and key == "ssl" and value == "true":
            key, value = "sslmode", "require"
        elif key == "requiressl":
            key, value = "sslmode", "require" if value.startswith("1") else "prefer"
        problem = _key_problem(key)
        if problem:
            raise DsnError(problem)
        self.values[key] = value


def parse_dsn(text: str, *, environ: Mapping[str, str] | None = None) -> Dsn:
    """Parse a PostgreSQL URL or libpq key=value string into a :class:`Dsn` of the servers libpq
    would try, in its order.

    The rules are libpq's, with the exceptions the module documentation lists. ``host``,
    ``hostaddr`` and ``port`` the text does not give are looked up as libpq does, in the service
    file (``service=`` or ``PGSERVICE``) and then ``PGHOST``, ``PGHOSTADDR``, ``PGPORT``, read from
    ``environ`` (default ``os.environ``; pass ``{}`` to read the text alone). Anything libpq would
    refuse, and every deliberate difference, raises :class:`DsnError` whose message names the
    problem and the fix but quotes no part of ``text``, and which has no chained exception.
    """
    obj: object = text
    if not isinstance(obj, str):
        raise DsnError(f"a DSN must be a str, not {type(obj).__name__}; {_FORMS}")
    env = os.environ if environ is None else environ
    try:
        return _parse(obj, env)
    except DsnError as exc:
        message = str(exc)
    # Raised outside the except clause: no __context__ that could hold a piece of the DSN.
    raise DsnError(message)


def _parse(text: str, env: Mapping[str, str]) -> Dsn:
    _check_text(text, "DSN")
    stripped = text.strip(_WS)
    if not stripped:
        # libpq takes everything from the service (PGSERVICE) and the PG* variables.
        try:
            return _build(None, _Options(), env)
        except DsnError:
            raise DsnError(
                f"empty DSN, and no PGHOST or PGSERVICE names a host; {_FORMS}"
            ) from None
    prefix = _URL_PREFIX.match(stripped)
    if prefix:
        scheme = prefix.group(1)
        if not _PG_SCHEME.fullmatch(scheme):
            raise DsnError(f"unsupported URL scheme; {_FORMS}")
        # Only leading whitespace is dropped: trailing text belongs to the URL's last part.
        options = _parse_url(text.lstrip(_WS)[prefix.end() :])
        return _build(scheme, options, env)
    if stripped.lower().startswith(("postgres:", "postgresql:")):
        raise DsnError(f"malformed URL: the scheme must be followed by '://'; {_FORMS}")
    if "=" not in stripped:
        raise DsnError(f"not a PostgreSQL DSN: neither a URL nor key=value settings; {_FORMS}")
    return _build(None, _parse_conninfo(stripped), env)


def _decode(text: str, what: str) -> str:
    """libpq's URL decoding: percent-escapes, raw spaces dropped at the ends, refused inside."""
    text = text.strip(" ")
    if " " in text:
        raise DsnError(
            f"raw space inside the {what} of the URL; write a space as %20 (libpq refuses it)"
        )
    if "%" not in text:
        return text
    pos = text.find("%")
    while pos >= 0:
        digits = text[pos + 1 : pos + 3]
        if len(digits) < 2 or not all(c in _HEX for c in digits):
            raise DsnError(f"invalid percent-encoding in the {what}; write a literal '%' as %25")
        if digits == "00":
            raise DsnError(f"%00 in the {what}; libpq cannot pass on NUL characters")
        pos = text.find("%", pos + 3)
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise DsnError(f"the {what} is not UTF-8 after percent-decoding") from None


def _find_any(text: str, chars: str, start: int) -> int:
    return min((i for i in (text.find(ch, start) for ch in chars) if i >= 0), default=len(text))


def _parse_url(rest: str) -> _Options:
    """Read what follows ``scheme://`` exactly as libpq's URI parser does."""
    options = _Options()
    end = _find_any(rest, "@/", 0)
    pos = 0
    if end < len(rest) and rest[end] == "@":
        user, colon, password = rest[:end].partition(":")
        if user:
            options.set("user", _decode(user, "user name"))
        if colon and password:
            options.set("password", _decode(password, "password"))
        pos = end + 1
    hosts: list[str] = []
    ports: list[str | None] = []
    while True:
        if rest.startswith("[", pos):
            close = rest.find("]", pos + 1)
            if close < 0:
                raise DsnError("'[' without ']' in the URL host list; write IPv6 as [::1]:5432")
            if close == pos + 1:
                raise DsnError("empty '[]' in the URL host list; write IPv6 as [::1]:5432")
            host, pos = rest[pos + 1 : close], close + 1
            if pos < len(rest) and rest[pos] not in ":/?,":
                raise DsnError(
                    "unexpected text after ']' in the URL host list; write IPv6 as [::1]:5432"
                )
        else:
            stop = _find_any(rest, ":/?,", pos)
            host, pos = rest[pos:stop], stop
        port: str | None = None
        if rest.startswith(":", pos):
            stop = _find_any(rest, "/?,", pos + 1)
            port, pos = rest[pos + 1 : stop], stop
        hosts.append(host)
        ports.append(port)
        if not rest.startswith(",", pos):
            break
        pos += 1
    host_list = ",".join(hosts)
    if host_list:
        options.set("host", _decode(host_list, "host list"))
    port_list = _authority_ports(ports)
    if port_list:
        options.set("port", _decode(port_list, "port list"))
    if rest.startswith("/", pos):
        stop = _find_any(rest, "?", pos + 1)
        database, pos = rest[pos + 1 : stop], stop
        if database:
            options.set("dbname", _decode(database, "database name"))
    if rest.startswith("?", pos):
        _parse_query(rest[pos + 1 :], options)
    return options


def _authority_ports(ports: list[str | None]) -> str:
    """The port list libpq stores for the URL authority, with hasql's one special case."""
    if len(ports) > 1 and all(port is None for port in ports[:-1]) and ports[-1]:
        return ports[-1]  # postgresql://db1,db2,db3:6432/: every host on 6432
    return ",".join(port or "" for port in ports)


def _parse_query(query: str, options: _Options) -> None:
    items = query.split("&")
    if items[-1] == "":
        items.pop()  # libpq ignores one '&' at the very end (and an empty query)
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise DsnError(
                "a URL query item has no '='; query parameters are key=value joined by '&'"
                " (write '&' inside a value as %26)"
            )
        if "=" in value:
            raise DsnError("a URL query item has a second '='; write '=' inside a value as %3D")
        name = _decode(key, "query parameter name")
        shown = _shown_key(name)
        options.set(name, _decode(value, f"value of {shown}"), url_query=True)


def _parse_conninfo(text: str) -> _Options:
    """Read libpq key=value settings exactly as libpq's conninfo parser does."""
    options = _Options()
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in _WS:
            pos += 1
        if pos >= end:
            return options
        start = pos
        while pos < end and text[pos] not in _WS and text[pos] != "=":
            pos += 1
        key = text[start:pos]
        while pos < end and text[pos] in _WS:
            pos += 1
        if pos >= end or text[pos] != "=":
            raise DsnError(
                f"{_shown_key(key)} without '=' in key=value settings; write key=value, and"
                " quote values holding spaces: key='a value'"
            )
        pos += 1
        while pos < end and text[pos] in _WS:
            pos += 1
        value, pos = _conninfo_value(text, pos, key)
        options.set(key, value)


def _conninfo_value(text: str, pos: int, key: str) -> tuple[str, int]:
    """Read one value at ``pos``; return it and the position after it."""
    out: list[str] = []
    quoted = text.startswith("'", pos)
    if quoted:
        pos += 1
    while True:
        if pos >= len(text):
            if quoted:
                raise DsnError(
                    f"unterminated quoted value of {_shown_key(key)}; end it with a single quote"
                )
            return "".join(out), pos
        ch = text[pos]
        if ch == "\\":
            if pos + 1 < len(text):
                out.append(text[pos + 1])
            pos += 2
            continue
        if (quoted and ch == "'") or (not quoted and ch in _WS):
            return "".join(out), pos + 1
        out.append(ch)
        pos += 1


# --- resolving what libpq would fill in: the service file and the environment ---


def _home(env: Mapping[str, str]) -> str | None:
    home = env.get("HOME")
    if home:
        return home
    if env is os.environ and hasattr(os, "geteuid"):
        try:
            import pwd

            return pwd.getpwuid(os.geteuid()).pw_dir
        except (KeyError, ImportError):  # pragma: no cover - a user without a passwd entry
            return None
    return None


def _service_values(service: str, env: Mapping[str, str]) -> dict[str, str]:
    """The settings of ``service``, found where libpq looks for it."""
    explicit = env.get("PGSERVICEFILE")
    checked: list[str] = []
    if explicit is not None:
        found = _read_service_file(Path(explicit), service, must_exist=True)
        checked.append(explicit)
        if found is not None:
            return found
    else:
        home = _home(env)
        if home:
            user_file = Path(home) / ".pg_service.conf"
            checked.append(str(user_file))
            found = _read_service_file(user_file, service, must_exist=False)
            if found is not None:
                return found
    sysconf = env.get("PGSYSCONFDIR")
    if sysconf is None:
        where = " or ".join(checked) or "no service file"
        raise DsnError(
            f"the service named by the DSN (or PGSERVICE) is not defined in {where}, the service"
            " files this library can read, and libpq's built-in system directory is unknown to"
            " it; set PGSYSCONFDIR to the directory holding pg_service.conf (or PGSERVICEFILE to"
            " the file), or name the hosts in the DSN"
        )
    found = _read_service_file(Path(sysconf) / "pg_service.conf", service, must_exist=False)
    if found is None:
        raise DsnError(
            "the service named in the DSN (or PGSERVICE) is not defined in any service file"
            " (PGSERVICEFILE, ~/.pg_service.conf, PGSYSCONFDIR/pg_service.conf); define it or"
            " name the hosts in the DSN"
        )
    return found


def _read_service_file(path: Path, service: str, *, must_exist: bool) -> dict[str, str] | None:
    """The settings of group ``service`` in ``path``, read as libpq reads it; None if absent."""
    try:
        data = path.read_bytes()
    except (OSError, ValueError):
        if must_exist:
            raise DsnError(
                f"service file {str(path)!r} (PGSERVICEFILE) cannot be read; fix PGSERVICEFILE"
            ) from None
        return None
    found = False
    values: dict[str, str] = {}
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        if len(raw) >= 1023:
            raise DsnError(f"line {number} too long in service file {str(path)!r}")
        line = raw.decode("utf-8", "surrogateescape").strip(_WS)
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if found:
                break
            found = (
                line[1 : 1 + len(service)] == service
                and line[1 + len(service) : 2 + len(service)] == "]"
            )
            continue
        if not found:
            continue
        if line.startswith("ldap"):
            raise DsnError(
                f"service file {str(path)!r} uses an LDAP lookup, which this library cannot do;"
                " name the hosts in the DSN"
            )
        key, eq, value = line.partition("=")
        if not eq or key not in LIBPQ_PARAMETERS or key == "service":
            raise DsnError(f"syntax error in service file {str(path)!r}, line {number}")
        values.setdefault(key, value)
    return values if found else None


def _resolve(options: _Options, env: Mapping[str, str]) -> dict[str, str | None]:
    """host, hostaddr and port as libpq sees them: the DSN, else the service, else PG* vars."""
    service = options.values.get("service", env.get("PGSERVICE"))
    from_service = _service_values(service, env) if service is not None else {}
    resolved: dict[str, str | None] = {}
    for key, variable in _ENV_VARS.items():
        if key in options.values:
            resolved[key] = options.values[key]
        elif key in from_service:
            resolved[key] = from_service[key]
        else:
            resolved[key] = env.get(variable)
    return resolved


def _parse_port(text: str, which: str) -> int:
    """A port the way libpq reads it (strtol, whitespace around allowed); never quotes ``text``."""
    match = _INT.fullmatch(text)
    if not match or len(match.group(2).lstrip("0")) > 10 or int(match.group(2)) > 2**31 - 1:
        raise DsnError(f"{which} is not a whole number; a port is a number from 1 to 65535")
    number = int(match.group(2)) * (-1 if match.group(1) == "-" else 1)
    if not 1 <= number <= 65535:
        raise DsnError(
            f"{which} is outside 1..65535 (libpq would skip that host); give a port from 1 to 65535"
        )
    return number


def _build(scheme: str | None, options: _Options, env: Mapping[str, str]) -> Dsn:
    resolved = _resolve(options, env)
    host_text, addr_text, port_text = resolved["host"], resolved["hostaddr"], resolved["port"]
    addrs = addr_text.split(",") if addr_text else None
    names = host_text.split(",") if host_text else None
    count = len(addrs) if addrs is not None else len(names) if names is not None else 1
    if addrs is not None and names is not None and len(names) != count:
        raise DsnError(
            f"could not match {len(names)} host names to {count} hostaddr values;"
            " give one hostaddr per host, in the same order"
        )
    if names is None:
        if addrs is not None:
            raise DsnError(
                "hostaddr is given without host names; give the host names too (host=db1,db2),"
                " or the addresses themselves as hosts"
            )
        raise DsnError(_NO_HOST)
    for index, name in enumerate(names):
        if name:
            continue
        which = f"host #{index + 1}" if count > 1 else "the host"
        if addrs is not None and addrs[index]:
            raise DsnError(
                f"{which} has a hostaddr but no host name; give its name too, or the address"
                " itself as the host"
            )
        raise DsnError(
            f"{which} is empty (libpq would use its built-in socket directory); name every host,"
            " e.g. host=/var/run/postgresql, and separate hosts with single commas"
        )
    for index, name in enumerate(names):
        _check_text(name, "host list")
        problem = _host_problem(name)
        if problem:
            which = f"host #{index + 1}" if count > 1 else "the host"
            raise DsnError(
                f"{which} is not a valid host name: {problem}; give a DNS name, an IP address or"
                " a Unix-socket directory starting with '/' (in a URL password, write '@' as %40)"
            )
    ports = _ports(port_text, count)
    hosts = [
        HostPort(name, port, port_given=given)
        for name, (port, given) in zip(names, ports, strict=True)
    ]
    params = [(key, value) for key, value in options.values.items() if key not in _FIELD_KEYS]
    if addr_text is not None and "hostaddr" not in options.values:
        params.append(("hostaddr", addr_text))
    return Dsn(
        scheme,
        hosts,
        options.values.get("user"),
        options.values.get("password"),
        options.values.get("dbname"),
        params,
    )


def _ports(port_text: str | None, count: int) -> list[tuple[int, bool]]:
    """Each host's port and whether it was given, by libpq's rules."""
    if port_text is None:
        return [(DEFAULT_PORT, False)] * count
    if port_text == "":
        # Given but empty: libpq's built-in default, and PGPORT is not consulted.
        return [(DEFAULT_PORT, True)] * count
    entries = port_text.split(",")
    if len(entries) == 1:
        entries = entries * count
        label = ["the port"] * count
    elif len(entries) != count:
        raise DsnError(
            f"could not match {len(entries)} port numbers to {count} hosts;"
            " give one port per host, or a single port for all of them"
        )
    else:
        label = [f"the port of host #{index + 1}" for index in range(count)]
    return [
        (_parse_port(entry, which) if entry else DEFAULT_PORT, True)
        for entry, which in zip(entries, label, strict=True)
    ]


# --- splitting and redaction ---


def split_dsn(dsn: str | Dsn, *, environ: Mapping[str, str] | None = None) -> list[Dsn]:
    """Return one single-host :class:`Dsn` per server of ``dsn``, in libpq's order.

    Each carries its own host, port (left out when none was given) and ``hostaddr`` entry (empty
    when that host is reached by name, so that ``PGHOSTADDR`` does not apply), and every other
    setting unchanged. A server listed twice (same host, port and hostaddr) is kept once, at its
    first place. A str is parsed with :func:`parse_dsn` (``environ`` as there), so it may raise
    :class:`DsnError`.
    """
    obj: object = dsn
    if isinstance(obj, str):
        parsed = parse_dsn(obj, environ=environ)
    elif isinstance(obj, Dsn):
        parsed = obj
    else:
        raise DsnError(f"split_dsn() takes a str or a Dsn, not {type(obj).__name__}")
    addrs = parsed._hostaddrs()
    seen: set[tuple[HostPort, str | None]] = set()
    result: list[Dsn] = []
    for index, hostport in enumerate(parsed.hosts):
        address = addrs[index] if addrs is not None else None
        if (hostport, address) in seen:
            continue
        seen.add((hostport, address))
        params = [
            (key, address if key == "hostaddr" and address is not None else value)
            for key, value in parsed.params
        ]
        result.append(attrs.evolve(parsed, hosts=(hostport,), params=params))
    return result


def for_one_host(dsn: Dsn) -> Dsn:
    """``dsn`` without the parameters that pick among hosts (:data:`HOST_SELECTION_PARAMS`).

    For the single-host DSNs of :func:`split_dsn`: hasql-core routes by role itself, and with
    ``target_session_attrs=read-write`` a standby's pool could never connect.
    """
    params = tuple((k, v) for k, v in dsn.params if k not in HOST_SELECTION_PARAMS)
    return dsn if len(params) == len(dsn.params) else attrs.evolve(dsn, params=params)


def redact_dsn(text: str) -> str:
    """Hide every secret in ``text``, a DSN or any text holding one, for use in messages.

    Best effort that errs towards hiding too much: never raises and never returns a password
    found in URL user info or in a secret parameter (see :func:`is_secret_param`), whether or
    not ``text`` parses, nor the words after a secret parameter's name written without ``=``.
    Everything else is left as it was.
    """
    obj: object = text
    if not isinstance(obj, str):
        return f"<{type(obj).__name__}, not shown>"
    try:
        return _redact_assignments(_redact_userinfo(obj))
    except Exception:  # pragma: no cover - a safety net; redaction must never raise
        return "<DSN not shown>"


def _redact_userinfo(text: str) -> str:
    out: list[str] = []
    pos = 0
    whole_start = len(text) - len(text.lstrip())
    for match in _URL_START.finditer(text):
        if match.start() < pos:
            continue
        start = match.end()
        if match.start() == whole_start:
            end = len(text)  # the text is a URL: a raw space may be part of its password
        else:
            end = next((i for i in range(start, len(text)) if text[i].isspace()), len(text))
        # The last '@' ends what is hidden even when the password holds raw '@', '/' or '?'.
        at = text.rfind("@", start, end)
        colon = text.find(":", start, at) if at >= 0 else -1
        if colon < 0:
            continue
        out.append(text[pos : colon + 1] + _MASK)
        pos = at
    out.append(text[pos:])
    return "".join(out)


def _secret_value_end(text: str, start: int) -> int:
    if text.startswith("'", start):
        stop = start + 1
        while stop < len(text) and text[stop] != "'":
            stop += 2 if text[stop] == "\\" else 1
        return min(stop + 1, len(text))
    following = _NEXT_KEY.search(text, start)
    return following.start() if following else len(text)


def _bare_secret(text: str, pos: int) -> re.Match[str] | None:
    """The next secret keyword without '=' that stands where key=value settings go: at the
    start of the text or right after a key=value word (not in prose such as "password
    authentication failed")."""
    for candidate in _SECRET_WORD.finditer(text, pos):
        before = text[: candidate.start()].rstrip(_WS)
        if not before or "=" in before.rsplit(None, 1)[-1]:
            return candidate
    return None


def _redact_assignments(text: str) -> str:
    out: list[str] = []
    pos = 0
    while True:
        match = _ASSIGNMENT.search(text, pos)
        bare = _bare_secret(text, pos)
        if bare is not None and (match is None or bare.start() < match.start()):
            # A secret parameter's name followed by words but no '=': hide the words.
            start = bare.end() + 1
            out.append(text[pos:start] + _MASK)
            pos = _secret_value_end(text, start)
            continue
        if match is None:
            out.append(text[pos:])
            return "".join(out)
        if not is_secret_param(unquote(match.group(1))):
            out.append(text[pos : match.end()])
            pos = match.end()
            continue
        start = match.end()
        out.append(text[pos:start] + _MASK)
        pos = _secret_value_end(text, start)
