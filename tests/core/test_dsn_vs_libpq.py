"""hasql_core.dsn against libpq itself, through psycopg's libpq binding; no server is needed.

Two oracles:

- **The servers libpq tries.** A DSN whose hosts are Unix-socket directories that do not exist
  (and whose ``hostaddr`` entries are not addresses) makes libpq fail on every server at once,
  naming each one it tried, in order, with the port it used: ``connection to server on socket
  "<dir>/.s.PGSQL.<port>" failed``. That is libpq's own answer, service file and ``PGHOST``,
  ``PGHOSTADDR``, ``PGPORT`` included, and no request ever leaves the machine. hasql must split the
  DSN into exactly those servers, and each single-host DSN it writes must make libpq try exactly
  that one server, with every other setting as libpq read it from the original.
- **What libpq reads from the text** (``PQconninfoParse``, no environment). Hypothesis writes
  odd URLs and key=value strings (raw and encoded special characters, spaces, ``@`` and ``?``
  in user info, port lists with holes, IPv6, query overrides, malformed items); whatever libpq
  refuses, hasql must refuse, and whatever libpq accepts must give the servers libpq's documented
  host/port/hostaddr rules give, or one of the refusals the module documents.

Only hasql's documented special case (``postgresql://db1,db2,db3:6432/``) is read differently,
and the tests say so where it applies.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import pq

from hasql_core.dsn import Dsn, parse_dsn, split_dsn
from hasql_core.errors import DsnError

LIBPQ_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
#: A directory that does not exist: libpq fails at once on every socket in it.
BASE = "/nonexistent-hasql-dsn-test"
ADDRESS_KEYS = ("host", "hostaddr", "port")
WS = " \t\n\r\f\v"

_TRIED = re.compile(r'connection to server on socket "(.*)/\.s\.PGSQL\.(\d+)" failed')
_BAD_ADDRESS = re.compile(r'could not parse network address "([^"]*)"')

Server = tuple[str, ...]


# --- what libpq does ---


def libpq_settings(text: str) -> dict[str, str] | None:
    """The settings libpq reads from ``text`` alone (PQconninfoParse), or None if it refuses."""
    return libpq_reading(text)[0]


def libpq_reading(text: str) -> tuple[dict[str, str] | None, str]:
    """The settings libpq reads from ``text`` alone, or None and libpq's reason for refusing."""
    try:
        options = pq.Conninfo.parse(text.encode())
    except psycopg.Error as error:
        return None, str(error)
    return {o.keyword.decode(): o.val.decode() for o in options if o.val is not None}, ""


def libpq_servers(text: str) -> list[Server] | None:
    """The servers libpq tries for ``text``, in order: ("socket", dir, port), ("address", addr),
    or ("skipped",) for a host libpq skips for its port. None if libpq refuses the DSN."""
    conn = pq.PGconn.connect(text.encode())
    try:
        assert conn.status == pq.ConnStatus.BAD, "a test DSN reached a server"
        message = conn.error_message.decode("utf-8", "replace")
    finally:
        conn.finish()
    servers: list[Server] = []
    for line in message.splitlines():
        if not line or line.startswith("\t"):
            continue
        tried = _TRIED.match(line)
        bad_address = _BAD_ADDRESS.match(line)
        if tried:
            servers.append(("socket", tried.group(1), tried.group(2)))
        elif bad_address:
            servers.append(("address", bad_address.group(1)))
        elif line.startswith("invalid port number"):
            servers.append(("skipped",))
        else:
            return None  # an error about the DSN as a whole
    return servers or None


def hasql_servers(parts: list[Dsn]) -> list[Server]:
    servers: list[Server] = []
    for part in parts:
        address = part.options().get("hostaddr")
        if address:
            servers.append(("address", address))
        else:
            servers.append(("socket", part.host, str(part.port)))
    return servers


def unique(servers: list[Server]) -> list[Server]:
    return list(dict.fromkeys(servers))


def other_settings(settings_: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in settings_.items() if key not in ADDRESS_KEYS}


@contextmanager
def libpq_environment(variables: dict[str, str], service_file: str | None) -> Iterator[None]:
    """Run with exactly ``variables`` among the PG* variables, and ``service_file`` as the
    system service file (in a fresh PGSYSCONFDIR); HOME has no ~/.pg_service.conf."""
    saved = {name: value for name, value in os.environ.items() if name.startswith("PG")}
    saved_home = os.environ.get("HOME")
    with tempfile.TemporaryDirectory() as directory:
        for name in saved:
            del os.environ[name]
        Path(directory, "pg_service.conf").write_text(service_file or "")
        os.environ.update(variables, PGSYSCONFDIR=directory, HOME=directory)
        try:
            yield
        finally:
            for name in [name for name in os.environ if name.startswith("PG")]:
                del os.environ[name]
            os.environ.update(saved)
            if saved_home is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = saved_home


# --- DSNs whose servers libpq names: socket directories, non-addresses ---

labels = st.text(st.sampled_from("abcxyz019 '=é\\-"), min_size=1, max_size=6)
port_numbers = st.integers(1, 65535).map(str)
port_entries = st.one_of(
    port_numbers, st.just(""), st.sampled_from(["0", "70000", " 5433 ", "+6000", "x1"])
)
values = st.text(st.sampled_from("ab9 '\\=&?@:/,%é#"), max_size=8)


@attrs.define
class Case:
    """A DSN text plus the environment and service file it is read with."""

    text: str
    env: dict[str, str]
    service_file: str | None
    special_port: str | None  # hasql's "db1,db2,db3:6432" shape: that port for every host


def _conninfo_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _url_value(value: str, draw: st.DrawFn) -> str:
    encoded = quote(value, safe="")
    # libpq 17+ drops raw spaces at the ends of a URL part.
    return draw(st.sampled_from(["", " ", "  "])) + encoded + draw(st.sampled_from(["", " "]))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    count = draw(st.integers(1, 4))
    pool = draw(st.lists(labels, min_size=1, max_size=4, unique=True))
    hosts = [f"{BASE}/{draw(st.sampled_from(pool))}" for _ in range(count)]
    addresses = draw(
        st.none()
        | st.lists(st.sampled_from(["", "x"]), min_size=count, max_size=count).map(
            lambda marks: [f"no-such-address-{i}" if m else "" for i, m in enumerate(marks)]
        )
    )
    ports = draw(
        st.none()
        | port_entries.map(lambda port: [port])
        | st.lists(port_entries, min_size=count, max_size=count)
    )
    # Where each address setting comes from: the DSN, the service file, or a PG* variable.
    where = {key: draw(st.sampled_from(["dsn", "service", "env"])) for key in ADDRESS_KEYS}
    given = {
        "host": ",".join(hosts),
        "hostaddr": None if addresses is None else ",".join(addresses),
        "port": None if ports is None else ",".join(ports),
    }
    env: dict[str, str] = {}
    service_lines: list[str] = []
    in_dsn: dict[str, str] = {}
    for key, value in given.items():
        if value is None:
            continue
        if where[key] == "env":
            env[{"host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT"}[key]] = value
        elif where[key] == "service" and "\n" not in value:
            service_lines.append(f"{key}={value}")
        else:
            in_dsn[key] = value
    if draw(st.booleans()):  # a decoy: PGPORT set while something else gives the port
        env.setdefault("PGPORT", draw(port_numbers))
    use_service = bool(service_lines) or draw(st.booleans())
    service_file = None
    if use_service:
        service_file = "# test\n[other]\nhost=/nowhere\n[svc]\n" + "\n".join(service_lines) + "\n"
    settings_: dict[str, str] = {}
    if use_service and draw(st.booleans()):
        env["PGSERVICE"] = "svc"
    elif use_service:
        settings_["service"] = "svc"
    settings_.update(
        {
            key: draw(values)
            for key in draw(
                st.lists(
                    st.sampled_from(["user", "password", "dbname", "application_name", "options"]),
                    unique=True,
                    max_size=3,
                )
            )
        }
    )
    if draw(st.booleans()):
        settings_["sslmode"] = draw(st.sampled_from(["disable", "allow", "prefer", "require"]))
    form = draw(st.sampled_from(["conninfo", "url", "url-query"]))
    special_port = None
    if form == "conninfo":
        items = [*in_dsn.items(), *settings_.items()]
        order = draw(st.permutations(range(len(items)))) if items else []
        spacing = draw(st.sampled_from([" ", "  ", "\t", " \n "]))
        text = spacing.join(f"{items[i][0]}={_conninfo_value(items[i][1])}" for i in order)
    else:
        authority = ""
        query = dict(settings_)
        if form == "url" and "host" in in_dsn:
            entries = []
            host_ports = ports if "port" in in_dsn and ports is not None else None
            if host_ports is not None and len(host_ports) == 1 and count > 1:
                host_ports = None
                query["port"] = in_dsn["port"]
            shapes: list[str | None] = []
            for index, name in enumerate(hosts):
                entry = quote(name, safe="")
                port = host_ports[index] if host_ports is not None else None
                if port is not None and (port or draw(st.booleans())):
                    entry += ":" + port.strip()
                    shapes.append(port.strip())
                else:
                    shapes.append(None)
                entries.append(entry)
            authority = ",".join(entries)
            if count > 1 and all(s is None for s in shapes[:-1]) and shapes[-1]:
                special_port = None if "port" in query else shapes[-1]
            query.update({k: v for k, v in in_dsn.items() if k == "hostaddr"})
        else:
            query.update(in_dsn)
        userinfo = ""
        if form == "url" and query.get("user"):
            userinfo = _url_value(query.pop("user"), draw)
            if query.get("password"):
                userinfo += ":" + _url_value(query.pop("password"), draw)
            userinfo += "@"
        path = ""
        database = query.pop("dbname", None) if form == "url" else None
        if database:
            path = "/" + _url_value(database, draw)
        elif database is not None:
            query["dbname"] = database
        scheme = draw(st.sampled_from(["postgresql", "postgres"]))
        text = f"{scheme}://{userinfo}{authority}{path or '/'}"
        if query:
            text += "?" + "&".join(f"{key}={quote(value, safe='')}" for key, value in query.items())
    return Case(text, env, service_file, special_port)


def check_servers(case: Case) -> None:
    with libpq_environment(case.env, case.service_file):
        expected = libpq_servers(case.text)
        try:
            parts = split_dsn(case.text)
        except DsnError:
            # libpq refuses it, or skips a host for its port (refused here on purpose).
            assert expected is None or ("skipped",) in expected, case
            return
        assert expected is not None, f"libpq refuses what hasql accepts: {case}"
        assert ("skipped",) not in expected, f"hasql accepts a port libpq skips: {case}"
        if case.special_port is not None:
            # hasql's documented rule: the last host's port is every host's.
            expected = [
                (*server[:2], str(int(case.special_port))) if server[0] == "socket" else server
                for server in expected
            ]
        assert hasql_servers(parts) == unique(expected), case
        original = libpq_settings(case.text)
        assert original is not None
        for part in parts:
            for written in (part.to_conninfo(), part.to_url()):
                assert libpq_servers(written) == [hasql_servers([part])[0]], (case, written)
                mine = libpq_settings(written)
                assert mine is not None
                assert other_settings(mine) == other_settings(original), (case, written)


@LIBPQ_SETTINGS
@given(cases())
@example(
    Case(
        "postgresql://%2Fnonexistent-hasql-dsn-test%2Fa,%2Fnonexistent-hasql-dsn-test%2Fb:6432/",
        {},
        None,
        "6432",
    )
)
@example(Case(f"host={BASE}/a,{BASE}/b port=7000,", {"PGPORT": "6000"}, None, None))
@example(Case(f"postgresql://%2F{BASE[1:]}%2Fa,%2F{BASE[1:]}%2Fb/", {"PGPORT": "6000"}, None, None))
@example(Case("service=svc", {}, f"[svc]\nhost={BASE}/s1,{BASE}/s2\nport=7001,\n", None))
@example(Case(f"host={BASE}/a,{BASE}/a hostaddr=no-such-address-1,", {}, None, None))
def test_hasql_splits_into_the_servers_libpq_tries(case: Case) -> None:
    check_servers(case)


def test_libpq_really_reads_the_hasql_special_case_differently() -> None:
    text = f"postgresql://%2F{BASE[1:]}%2Fa,%2F{BASE[1:]}%2Fb:6432/"
    with libpq_environment({}, None):
        assert libpq_servers(text) == [
            ("socket", f"{BASE}/a", "5432"),
            ("socket", f"{BASE}/b", "6432"),
        ]
        assert hasql_servers(split_dsn(text)) == [
            ("socket", f"{BASE}/a", "6432"),
            ("socket", f"{BASE}/b", "6432"),
        ]


# --- odd texts, against what libpq reads from them ---

_SAFE = list("abcXYZ019-._~é")
_ODD = [*" ?:#[],&=+'\\\t", "%20", "%40", "%3A", "%2F", "%2C"]
_BAD = ["%", "%zz", "%00", "@", "/"]
#: Characters of user names, passwords, values: mostly plain, often special, sometimes invalid.
raw_chars = st.sampled_from(_SAFE * 4 + _ODD * 2 + _BAD)
raw_texts = st.lists(raw_chars, max_size=6).map("".join)
_GOOD_HOSTS = [
    "db1",
    "db-2.example",
    "10.0.0.7",
    "[::1]",
    "[fe80::1%25eth0]",
    "%2Fsock%20dir",
    "bücher",
]
_ODD_HOSTS = ["", " db3 ", "db%2Cdb4", "a@b", "[]", "[::1"]
url_hosts = st.sampled_from(_GOOD_HOSTS * 4 + _ODD_HOSTS)
url_ports = st.sampled_from(["5432", "6432", ""] * 3 + ["0", "70000", "x", " 5433", "+5", "1:2"])
query_keys = st.sampled_from(
    [
        "application_name",
        "options",
        "sslmode",
        "host",
        "port",
        "hostaddr",
        "user",
        "password",
        "dbname",
        "ssl",
        "requiressl",
        "target_session_attrs",
    ]
)


@st.composite
def odd_urls(draw: st.DrawFn) -> tuple[str, str | None]:
    userinfo = ""
    if draw(st.booleans()):
        userinfo = draw(raw_texts)
        if draw(st.booleans()):
            userinfo += ":" + draw(raw_texts)
        userinfo += "@"
    entries: list[str] = []
    shapes: list[str | None] = []
    for _ in range(draw(st.integers(1, 4))):
        entry = draw(url_hosts)
        if draw(st.booleans()):
            port = draw(url_ports)
            entry += ":" + port
            shapes.append(port)
        else:
            shapes.append(None)
        entries.append(entry)
    path = draw(st.sampled_from(["", "/"]))
    if path and draw(st.booleans()):
        path += draw(raw_texts)
    items = [f"{draw(query_keys)}={draw(raw_texts)}" for _ in range(draw(st.integers(0, 3)))]
    if draw(st.integers(0, 5)) == 0:
        items.append(draw(st.sampled_from(["", "novalue", "a=b=c", "=x"])))
    bare_question_mark = draw(st.booleans())  # "postgresql://db1/?" is fine
    query = "?" + "&".join(items) if items or bare_question_mark else ""
    text = f"{draw(st.sampled_from(['postgresql', 'postgres']))}://{userinfo}{','.join(entries)}{path}{query}"
    special = None
    query_port = any(item.startswith("port=") for item in items)
    if len(shapes) > 1 and all(s is None for s in shapes[:-1]) and shapes[-1] and not query_port:
        special = shapes[-1]
    return text, special


@st.composite
def odd_conninfos(draw: st.DrawFn) -> tuple[str, str | None]:
    keys = st.sampled_from(
        [
            "host",
            "hostaddr",
            "port",
            "user",
            "password",
            "dbname",
            "application_name",
            "sslmode",
            "requiressl",
            "options",
        ]
    )
    words: list[str] = []
    if draw(st.integers(0, 3)):
        hosts = draw(
            st.lists(
                st.sampled_from(["db1", "10.0.0.7", "::1", "/tmp/s", "bücher"]),
                min_size=1,
                max_size=3,
            )
        )
        words.append("host=" + ",".join(hosts))
    for _ in range(draw(st.integers(0, 5))):
        key = draw(keys)
        equals = draw(st.sampled_from(["=", " = ", "= ", " =", "="] * 3 + [""]))
        value = draw(raw_texts)
        quoting = draw(
            st.sampled_from(["plain", "quoted", "quoted", "escaped", "escaped"] * 2 + ["open"])
        )
        if quoting == "quoted":
            value = _conninfo_value(value)
        elif quoting == "escaped":
            value = "".join("\\" + ch if ch in WS + "'\\" else ch for ch in value)
        elif quoting == "open":
            value = "'" + value
        words.append(f"{key}{equals}{value}")
    return draw(st.sampled_from([" ", "  ", "\t"])).join(words), None


def libpq_int(text: str) -> int | None:
    """strtol as libpq uses it for a port: whitespace around, optional sign, decimal digits."""
    match = re.fullmatch(r"[ \t\n\r\f\v]*([+-]?[0-9]+)[ \t\n\r\f\v]*", text)
    if not match or abs(int(match.group(1))) > 2**31 - 1:
        return None
    return int(match.group(1))


def servable(name: str) -> bool:
    """Whether a host entry names a server by the documented rule: any socket path, else no
    character a DNS name or address cannot hold."""
    if name.startswith(("/", "@")):
        return True
    return all(ch not in ",/@[]?#'\"\\=`" and ch.isprintable() and not ch.isspace() for ch in name)


def documented_servers(
    settings_: dict[str, str], special_port: str | None
) -> list[tuple[Any, ...]] | None:
    """The servers libpq's documented host/hostaddr/port rules give for ``settings_`` with no
    environment, or None where libpq refuses or this library refuses on purpose."""
    host, hostaddr, port = (settings_.get(key) for key in ADDRESS_KEYS)
    if special_port is not None and "port" in settings_:
        port = special_port
    addresses = hostaddr.split(",") if hostaddr else None
    names = host.split(",") if host else None
    count = len(addresses) if addresses else len(names) if names else 1
    if names is None or len(names) != count or not all(names) or not all(map(servable, names)):
        return None
    entries = port.split(",") if port else [""]
    if len(entries) == 1:
        entries *= count
    if len(entries) != count:
        return None
    numbers = [5432 if entry == "" else libpq_int(entry) for entry in entries]
    if any(number is None or not 1 <= number <= 65535 for number in numbers):
        return None
    return [
        (name, (addresses[i] or None) if addresses else None, numbers[i])
        for i, name in enumerate(names)
    ]


def check_reading(text: str, special_port: str | None) -> None:
    literal, refusal = libpq_reading(text)
    try:
        dsn: Dsn | None = parse_dsn(text, environ={})
    except DsnError:
        dsn = None
    if literal is None:
        if "invalid connection option" in refusal or "invalid URI query parameter" in refusal:
            return  # a name libpq does not know: passed on to the driver (documented)
        assert dsn is None, f"libpq refuses what hasql accepts: {text!r}"
        return
    expected = documented_servers(literal, special_port)
    if expected is None:
        assert dsn is None, f"hasql accepts what libpq or the documented rules refuse: {text!r}"
        return
    assert dsn is not None, f"hasql refuses what libpq accepts: {text!r}"
    addresses = (dsn.options().get("hostaddr") or "").split(",")
    got = [
        (hp.host, (addresses[i] or None) if len(addresses) == len(dsn.hosts) else None, hp.port)
        for i, hp in enumerate(dsn.hosts)
    ]
    assert got == expected, text
    fields = {"user": dsn.user, "password": dsn.password, "dbname": dsn.database}
    assert {k: v for k, v in fields.items() if v is not None} == {
        k: literal[k] for k in fields if k in literal
    }, text
    params = dict(dsn.params)
    assert {k: v for k, v in params.items() if k != "hostaddr"} == {
        k: v for k, v in literal.items() if k not in (*ADDRESS_KEYS, *fields)
    }, text


@LIBPQ_SETTINGS
@given(st.one_of(odd_urls(), odd_conninfos()))
@example(("postgresql://app?x:pw@db1/app", None))
@example(("postgresql://u@h1:5432,h2,h3:5433/db", None))
@example(("postgresql://db1,db2,db3:6432/", "6432"))
@example(("postgresql:// u : pw @ h / d ", None))
@example(("postgresql://u:p@ss@db1/app", None))
@example(("postgresql://a%2Cb/", None))
@example(("host=db1 password s3cr3t", None))
@example(("host=db1 password=ab\\", None))
@example(("postgresql://h/?options=-c a=b", None))
@example(("postgresql://h/?&a=1", None))
def test_hasql_reads_odd_texts_as_libpq_does(case: tuple[str, str | None]) -> None:
    text, special_port = case
    check_reading(text, special_port)


@pytest.mark.parametrize(
    "text",
    [
        "postgresql+asyncpg://db1/app",
        "POSTGRESQL://db1/app",
        "  postgresql://db1/app",
        "host=db1 search_path=x",
        "postgresql://db1/app?search_path=x",
    ],
)
def test_what_hasql_accepts_beyond_libpq_is_what_libpq_refuses(text: str) -> None:
    """The documented extensions: libpq refuses these outright, so nothing is read differently."""
    assert libpq_settings(text) is None
    parse_dsn(text, environ={})
