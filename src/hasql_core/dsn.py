"""Multi-host PostgreSQL connection strings (DSNs).

Reads the two forms libpq accepts -- URLs (``postgresql://``, ``postgres://`` and driver-qualified
``postgresql+driver://``) and ``key=value`` strings -- into a :class:`Dsn` holding one
:class:`HostPort` per host, splits it into one single-host DSN per host, and writes it back in
either form. Passwords and other secrets never appear in redacted forms, in ``repr()`` or in the
messages of the :class:`~hasql_core.errors.DsnError` raised for anything that cannot be read.

The rules are libpq's: hosts and ports are comma-separated lists, matched one to one, or one port
for all hosts; an empty port means 5432; URL parts and query values are percent-decoded (``+`` is
not a space); settings in the URL query override those in the rest of the URL; key=value values
may be single-quoted and use backslash escapes; ``hostaddr`` is a list with one entry per host.
Two rules differ: in a URL, hosts without a port take the last host's port when it has one
(``postgresql://db1,db2:6432/`` puts both on 6432), and a DSN must name at least one host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

import attrs

from hasql_core.errors import DsnError

__all__ = [
    "DEFAULT_PORT",
    "SECRET_PARAMS",
    "Dsn",
    "HostPort",
    "is_secret_param",
    "parse_dsn",
    "redact_dsn",
    "split_dsn",
]

DEFAULT_PORT = 5432

#: Parameters whose values are secrets. Any parameter whose name contains "password", "secret",
#: "token" or "passwd" is treated as secret too (see :func:`is_secret_param`).
SECRET_PARAMS = frozenset({"password", "sslpassword", "oauth_client_secret"})

_SECRET_WORDS = ("password", "secret", "token", "passwd")
_MASK = "***"
# libpq splits key=value strings on ASCII whitespace only (isspace() in the C locale).
_WS = " \t\n\r\f\v"
# Names that are fields of Dsn rather than entries of Dsn.params.
_FIELD_KEYS = frozenset({"host", "port", "user", "password", "dbname"})
_FORMS = (
    "accepted forms are a URL such as 'postgresql://user@db1:5432,db2:5432/dbname?sslmode=require'"
    " (also postgres://, postgresql+driver://) or key=value settings such as"
    " 'host=db1,db2 port=5432 user=app dbname=app'"
)
_NO_HOST = "no host in DSN; give at least one host, e.g. postgresql://user@db1,db2/dbname"

_SCHEME_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_PG_SCHEME = re.compile(r"postgres(?:ql)?(?:\+[A-Za-z0-9_][A-Za-z0-9_.\-]*)?", re.IGNORECASE)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_AUTHORITY_NAME = re.compile(r"[A-Za-z0-9._~\-]+")
_AUTHORITY_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:%[A-Za-z0-9._~\-]+)?")
_BAD_HOST_CHARS = frozenset(",/@[]?#'\"\\=")

# libpq's keywords. Redaction of free text ends a secret value only where one of these starts,
# so that a password holding spaces or '&' is hidden whole.
_LIBPQ_KEYS = (
    "host|hostaddr|port|dbname|user|password|passfile|require_auth|channel_binding"
    "|connect_timeout|client_encoding|options|application_name|fallback_application_name"
    "|keepalives|keepalives_idle|keepalives_interval|keepalives_count|tcp_user_timeout"
    "|replication|gssencmode|sslmode|sslnegotiation|sslcompression|sslcert|sslkey|sslkeylogfile"
    "|sslpassword|sslcertmode|sslrootcert|sslcrl|sslcrldir|sslsni|requirepeer"
    "|ssl_min_protocol_version|ssl_max_protocol_version|min_protocol_version"
    "|max_protocol_version|krbsrvname|gsslib|gssdelegation|service|target_session_attrs"
    "|load_balance_hosts|oauth_issuer|oauth_client_id|oauth_client_secret|oauth_scope"
)
_ASSIGNMENT = re.compile(r"(?:^|(?<=[\s?&;,]))([A-Za-z0-9_.%+\-]+)[ \t\n\r\f\v]*=[ \t\n\r\f\v]*")
_NEXT_KEY = re.compile(
    r"(?:&|[ \t\n\r\f\v]+)(?:" + _LIBPQ_KEYS + r")[ \t\n\r\f\v]*=", re.IGNORECASE
)
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:/*")


def is_secret_param(key: str) -> bool:
    """Return whether the value of parameter ``key`` is a secret that must never be shown."""
    lowered = key.lower()
    return lowered in SECRET_PARAMS or any(word in lowered for word in _SECRET_WORDS)


# --- validation shared by the attrs classes and the parsers ---


def _check_text(value: str, what: str) -> None:
    if "\x00" in value:
        raise DsnError(f"the {what} contains a NUL character, which libpq cannot pass on")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DsnError(f"the {what} is not valid Unicode (it holds lone surrogates)") from None


def _validate_host(_: object, __: object, host: str) -> None:
    if not isinstance(host, str):
        raise DsnError(f"a host must be a str, not {type(host).__name__}")
    if not host:
        raise DsnError("empty host name; give a host name, IP address or socket directory")
    _check_text(host, "host name")
    if "," in host:
        raise DsnError(f"host name {host!r} contains ','; ',' separates hosts in a host list")
    if host[0] in "/@":
        return  # a Unix-socket directory (or abstract socket name) may be any path
    bad = sorted(ch for ch in set(host) if ch in _BAD_HOST_CHARS or not ch.isprintable())
    if bad or " " in host:
        shown = "".join(bad) or " "
        raise DsnError(
            f"invalid host name {host!r}: it contains {shown!r}; give a DNS name, an IP address"
            " (IPv6 without brackets) or a Unix-socket directory starting with '/'"
        )


def _validate_port(_: object, __: object, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise DsnError(f"invalid port {port!r}; a port is a whole number from 1 to 65535")


def _check_key(key: str) -> None:
    if not key or not key.isprintable() or " " in key or "=" in key:
        raise DsnError(
            "invalid parameter name; names must be non-empty and hold no spaces, control"
            " characters or '='"
        )


def _empty_to_none(value: str | None) -> str | None:
    return value or None


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
        raise DsnError(
            f"unsupported scheme {scheme!r}; use postgresql, postgres or postgresql+<driver>"
        )


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
        _check_key(key)
        if key in _FIELD_KEYS:
            raise DsnError(f"parameter {key!r} belongs in its own Dsn field, not in Dsn.params")
        if key in seen:
            raise DsnError(f"parameter {key!r} is given twice in Dsn.params")
        seen.add(key)
        _check_text(value, f"value of {key!r}")


# --- the data model ---


@attrs.frozen
class HostPort:
    """One server address: ``host`` and TCP ``port``.

    ``host`` is a DNS name, an IPv4 address, an IPv6 address written without brackets, or a
    Unix-socket directory (starting with "/") or abstract socket name (starting with "@").
    ``port`` is 1..65535. Anything else raises :class:`DsnError`.
    """

    host: str = attrs.field(validator=_validate_host)
    port: int = attrs.field(validator=_validate_port)

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
    :meth:`redacted` writes. ``user``, ``password`` and ``database`` are ``None`` when not given
    (an empty string counts as not given, as in libpq). ``params`` holds every other setting in
    the order given, with string values, ``hostaddr`` included: when present it is a
    comma-separated list with one entry per host. Construction validates all of this and raises
    :class:`DsnError`; ``str()`` and ``repr()`` never show a secret.
    """

    scheme: str | None = attrs.field(validator=_validate_scheme)
    hosts: tuple[HostPort, ...] = attrs.field(converter=_to_hosts, validator=_validate_hosts)
    user: str | None = attrs.field(
        default=None, converter=_empty_to_none, validator=_validate_optional_text
    )
    password: str | None = attrs.field(
        default=None, converter=_empty_to_none, validator=_validate_optional_text
    )
    database: str | None = attrs.field(
        default=None, converter=_empty_to_none, validator=_validate_optional_text
    )
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
        for key, value in self.params:
            if key == "hostaddr":
                return value.split(",")
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

    def to_url(self, *, redact: bool = False) -> str:
        """Write this DSN as a URL that :func:`parse_dsn` (and libpq) reads back to it.

        The scheme is :attr:`scheme` or ``postgresql``. Hosts go in the authority with explicit
        ports; if any host cannot be written there plainly (a socket directory, a non-ASCII
        name) all of them go in the query as ``host=...&port=...``. With ``redact=True`` the
        password and every secret parameter read ``***``.
        """
        userinfo = ""
        if self.user is not None or self.password is not None:
            userinfo = _pct(self.user or "")
            if self.password is not None:
                userinfo += ":" + (_MASK if redact else _pct(self.password))
            userinfo += "@"
        query: list[str] = []
        if all(_fits_authority(hp) for hp in self.hosts):
            explicit = any(hp.port != DEFAULT_PORT for hp in self.hosts)
            netloc = ",".join(_authority_host(hp, explicit) for hp in self.hosts)
        else:
            netloc = ""
            query.append("host=" + ",".join(_pct(hp.host) for hp in self.hosts))
            query.append("port=" + _port_list(self.hosts))
        for key, value in self.params:
            shown = _MASK if redact and is_secret_param(key) else quote(value, safe=",")
            query.append(f"{_pct(key)}={shown}")
        scheme = self.scheme or "postgresql"
        url = f"{scheme}://{userinfo}{netloc}/{_pct(self.database or '')}"
        return url + ("?" + "&".join(query) if query else "")

    def to_conninfo(self, *, redact: bool = False) -> str:
        """Write this DSN as libpq key=value settings that :func:`parse_dsn` reads back to it.

        Values are single-quoted, with backslash escapes, where libpq needs it. With
        ``redact=True`` the password and every secret parameter read ``***``.
        """
        pairs = [
            ("host", ",".join(hp.host for hp in self.hosts)),
            ("port", _port_list(self.hosts)),
        ]
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


# --- parsing ---


@attrs.define
class _Settings:
    """What a DSN said, before hosts and ports are matched up. Lists are None when not given."""

    hosts: list[str] | None = None
    ports: list[str] | None = None
    user: str | None = None
    password: str | None = None
    database: str | None = None
    params: dict[str, str] = attrs.field(factory=dict)

    def set(self, key: str, value: str) -> None:
        _check_key(key)
        if key == "host":
            self.hosts = value.split(",")
        elif key == "port":
            self.ports = value.split(",")
        elif key == "user":
            self.user = value
        elif key == "password":
            self.password = value
        elif key == "dbname":
            self.database = value
        else:
            self.params[key] = value


def parse_dsn(text: str) -> Dsn:
    """Parse a PostgreSQL URL or libpq key=value string into a :class:`Dsn`.

    The rules are libpq's, with the two differences the module documentation names. Anything
    libpq would refuse, and a DSN without a host, raises :class:`DsnError`; the message names
    the problem and the fix and shows the input with its secrets hidden by :func:`redact_dsn`.
    """
    obj: object = text
    if not isinstance(obj, str):
        raise DsnError(f"a DSN must be a str, not {type(obj).__name__}; {_FORMS}")
    try:
        return _parse(obj)
    except DsnError as exc:
        raise DsnError(f"{exc}. DSN given (redacted): {redact_dsn(obj)!r}") from None


def _parse(text: str) -> Dsn:
    _check_text(text, "DSN")
    stripped = text.strip(_WS)
    if not stripped:
        raise DsnError(f"empty DSN; {_FORMS}")
    prefix = _SCHEME_PREFIX.match(stripped)
    if prefix:
        scheme = prefix.group()[:-1]
        rest = stripped[prefix.end() :]
        if not _PG_SCHEME.fullmatch(scheme):
            raise DsnError(f"unsupported URL scheme {scheme!r}; {_FORMS}")
        if not rest.startswith("//"):
            raise DsnError(f"malformed URL: '{scheme}:' must be followed by '//'; {_FORMS}")
        try:
            return _build(scheme, _parse_url(rest[2:]))
        except DsnError:
            if not _may_end_in_userinfo(rest[2:]):
                raise
            # The message could quote a piece of a password holding a raw '/' or '?'.
            raise DsnError(
                "could not read the URL; a user name or password holding '/', '?', '@', ':'"
                " or '%' must be percent-encoded (e.g. '/' as %2F)"
            ) from None
    if "=" not in stripped:
        raise DsnError(f"not a PostgreSQL DSN: neither a URL nor key=value settings; {_FORMS}")
    return _build(None, _parse_conninfo(stripped))


def _parse_url(rest: str) -> _Settings:
    end = _find_any(rest, "/?", 0)
    authority, tail = rest[:end], rest[end:]
    # Host names never hold a raw '@', so the last one ends the user info; that keeps a password
    # with an unencoded '@' whole.
    userinfo, at, hostlist = authority.rpartition("@")
    settings = _Settings()
    if at:
        user, _, password = userinfo.partition(":")
        settings.user = _decode(user, "user name or password")
        settings.password = _decode(password, "user name or password")
    settings.hosts, settings.ports = _parse_authority(hostlist)
    path, _, query = tail.partition("?")
    settings.database = _decode(path[1:], "database name")
    for item in query.split("&"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise DsnError(
                "a URL query item has no '='; query parameters are key=value joined by '&',"
                " and a '&' inside a value must be written %26"
            )
        settings.set(_decode(key, "query parameter name"), _decode(value, "query value"))
    return settings


def _may_end_in_userinfo(rest: str) -> bool:
    """Whether a '@' after the authority may end user info that holds a raw '/' or '?'."""
    at = rest.rfind("@")
    return at > _find_any(rest, "/?", 0) and ":" in rest[:at]


def _parse_authority(hostlist: str) -> tuple[list[str] | None, list[str] | None]:
    """Split ``h1:p1,[v6]:p2,...``; apply the last host's port to hosts without one."""
    if not hostlist:
        return None, None
    hosts: list[str] = []
    ports: list[str | None] = []
    pos = 0
    while True:
        if hostlist.startswith("[", pos):
            close = hostlist.find("]", pos)
            if close < 0:
                raise DsnError("'[' without ']' in the URL host list; write IPv6 as [::1]:5432")
            host, pos = hostlist[pos + 1 : close], close + 1
            if pos < len(hostlist) and hostlist[pos] not in ":,":
                raise DsnError(
                    "unexpected text after ']' in the URL host list; write IPv6 as [::1]:5432"
                )
        else:
            end = _find_any(hostlist, ":,", pos)
            host, pos = hostlist[pos:end], end
        port: str | None = None
        if pos < len(hostlist) and hostlist[pos] == ":":
            end = _find_any(hostlist, ",", pos)
            port, pos = hostlist[pos + 1 : end], end
            if ":" in port:
                raise DsnError(
                    "an IPv6 address in a URL must be in brackets, e.g. postgresql://[::1]:5432/"
                )
            _parse_port(port)
        host = _decode(host, "host name")
        if host:
            _validate_host(None, None, host)
        hosts.append(host)
        ports.append(port or None)
        if pos >= len(hostlist):
            break
        pos += 1  # past the ','
    if all(port is None for port in ports):
        return hosts, None
    fill = ports[-1] or ""
    return hosts, [port or fill for port in ports]


def _find_any(text: str, chars: str, start: int) -> int:
    return min((i for i in (text.find(ch, start) for ch in chars) if i >= 0), default=len(text))


def _decode(text: str, what: str) -> str:
    if "%" not in text:
        return text
    if _BAD_PERCENT.search(text):
        raise DsnError(f"invalid percent-encoding in the {what}; write a literal '%' as %25")
    raw = unquote_to_bytes(text)
    if b"\x00" in raw:
        raise DsnError(f"%00 in the {what}; libpq cannot pass on NUL characters")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DsnError(f"the {what} is not UTF-8 after percent-decoding") from None


def _parse_conninfo(text: str) -> _Settings:
    settings = _Settings()
    pos, end = 0, len(text)
    secret_seen = False
    while True:
        while pos < end and text[pos] in _WS:
            pos += 1
        if pos >= end:
            return settings
        start = pos
        while pos < end and text[pos] not in _WS and text[pos] != "=":
            pos += 1
        key = text[start:pos]
        while pos < end and text[pos] in _WS:
            pos += 1
        if pos >= end or text[pos] != "=" or not key:
            # After an unquoted secret the stray word may be part of that secret: don't show it.
            word = "a word" if secret_seen or not key else repr(key)
            raise DsnError(
                f"{word} without '=' in key=value settings; write key=value, and quote values"
                " holding spaces: key='a value'"
            )
        pos += 1
        while pos < end and text[pos] in _WS:
            pos += 1
        value, pos, quoted = _conninfo_value(text, pos, key)
        secret_seen = secret_seen or (is_secret_param(key) and not quoted)
        settings.set(key, value)


def _conninfo_value(text: str, pos: int, key: str) -> tuple[str, int, bool]:
    """Read one value at ``pos``; return it, the position after it, and whether it was quoted."""
    out: list[str] = []
    quoted = text.startswith("'", pos)
    if quoted:
        pos += 1
    while True:
        if pos >= len(text):
            if quoted:
                raise DsnError(f"unterminated quoted value of {key!r}; end it with a single quote")
            return "".join(out), pos, quoted
        ch = text[pos]
        if ch == "\\":
            if pos + 1 >= len(text):
                raise DsnError(
                    f"the value of {key!r} ends in a lone backslash; write '\\\\' for a backslash"
                )
            out.append(text[pos + 1])
            pos += 2
            continue
        if (quoted and ch == "'") or (not quoted and ch in _WS):
            return "".join(out), pos + 1, quoted
        out.append(ch)
        pos += 1


def _build(scheme: str | None, settings: _Settings) -> Dsn:
    names = settings.hosts
    if not names or names == [""]:
        raise DsnError(_NO_HOST)
    if "" in names:
        raise DsnError("empty entry in the host list; separate hosts with single commas")
    names = [name[1:-1] if name[:1] == "[" and name[-1:] == "]" else name for name in names]
    ports = settings.ports or [""]
    if len(ports) == 1:
        ports = ports * len(names)
    elif len(ports) != len(names):
        raise DsnError(
            f"could not match {len(ports)} port numbers to {len(names)} hosts;"
            " give one port per host, or a single port for all of them"
        )
    addrs = settings.params.get("hostaddr")
    if addrs is not None and len(addrs.split(",")) != len(names):
        raise DsnError(
            f"could not match {len(addrs.split(','))} hostaddr values to {len(names)} hosts;"
            " give one hostaddr per host, in the same order"
        )
    hosts = [HostPort(name, _parse_port(port)) for name, port in zip(names, ports, strict=True)]
    return Dsn(
        scheme,
        hosts,
        settings.user,
        settings.password,
        settings.database,
        settings.params.items(),
    )


def _parse_port(text: str) -> int:
    digits = text.strip(_WS)
    if not digits:
        return DEFAULT_PORT
    if (
        not (digits.isascii() and digits.isdigit())
        or len(digits) > 5
        or not 0 < int(digits) < 65536
    ):
        raise DsnError(f"invalid port number {text!r}; a port is a whole number from 1 to 65535")
    return int(digits)


# --- splitting and redaction ---


def split_dsn(dsn: str | Dsn) -> list[Dsn]:
    """Return one single-host :class:`Dsn` per host of ``dsn``, in order.

    A host given twice (same host and port) is kept once, at its first place. Every other
    setting is passed to every host, except ``hostaddr``: each host gets its own entry (none if
    that entry is empty). A str is parsed first, so it may raise :class:`DsnError`.
    """
    parsed = parse_dsn(dsn) if isinstance(dsn, str) else dsn
    if not isinstance(parsed, Dsn):
        raise DsnError(f"split_dsn() takes a str or a Dsn, not {type(parsed).__name__}")
    addrs = parsed._hostaddrs()
    seen: set[HostPort] = set()
    result: list[Dsn] = []
    for index, hostport in enumerate(parsed.hosts):
        if hostport in seen:
            continue
        seen.add(hostport)
        params = [
            (key, addrs[index] if key == "hostaddr" and addrs else value)
            for key, value in parsed.params
            if key != "hostaddr" or (addrs and addrs[index])
        ]
        result.append(attrs.evolve(parsed, hosts=(hostport,), params=params))
    return result


def redact_dsn(text: str) -> str:
    """Hide every secret in ``text``, a DSN or any text holding one, for use in messages.

    Best effort that errs towards hiding too much: never raises and never returns a password
    found in URL user info or in a secret parameter (see :func:`is_secret_param`), whether or
    not ``text`` parses. Everything else is left as it was.
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
        # The last '@' ends the user info even when the password holds raw '@', '/' or '?'.
        at = text.rfind("@", start, end)
        colon = text.find(":", start, at) if at >= 0 else -1
        if colon < 0:
            continue
        out.append(text[pos : colon + 1] + _MASK)
        pos = at
    out.append(text[pos:])
    return "".join(out)


def _redact_assignments(text: str) -> str:
    out: list[str] = []
    pos = 0
    while True:
        match = _ASSIGNMENT.search(text, pos)
        if match is None:
            out.append(text[pos:])
            return "".join(out)
        if not is_secret_param(unquote(match.group(1))):
            out.append(text[pos : match.end()])
            pos = match.end()
            continue
        start = match.end()
        if text.startswith("'", start):
            stop = start + 1
            while stop < len(text) and text[stop] != "'":
                stop += 2 if text[stop] == "\\" else 1
            stop = min(stop + 1, len(text))
        else:
            following = _NEXT_KEY.search(text, start)
            stop = following.start() if following else len(text)
        out.append(text[pos:start] + _MASK)
        pos = stop
