"""hasql_core.dsn against libpq's own parser (``psycopg.conninfo.conninfo_to_dict``).

Hypothesis writes multi-host DSNs, in URL and key=value form, with arbitrary user names, passwords,
database names and parameter values; :func:`hasql_core.dsn.parse_dsn` must read from each exactly
what libpq reads (hosts, ports, user, password, dbname, every other parameter), and every DSN
:func:`hasql_core.dsn.split_dsn` makes must read, in libpq, as that one host with the same settings.
No server is involved: libpq only parses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from hasql_core.dsn import DEFAULT_PORT, Dsn, parse_dsn, split_dsn

FIELDS = ("host", "port", "user", "password", "dbname")
#: Parameters libpq knows (it refuses unknown ones) whose values it does not check while parsing.
#: Not ``service``: parse_dsn reads the service file as libpq does when it connects (a service it
#: cannot find is refused), which conninfo_to_dict does not model; the core's DSN tests cover it.
PARAMS = (
    "application_name",
    "fallback_application_name",
    "options",
    "connect_timeout",
    "sslmode",
    "target_session_attrs",
    "keepalives_idle",
    "client_encoding",
    "sslpassword",
)

# Text libpq can carry: any Unicode but NUL and lone surrogates.
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)
nonempty_text = text.filter(bool)
label = st.from_regex(r"[a-z][a-z0-9\-]{0,8}", fullmatch=True)
hostname = st.builds(lambda parts: ".".join(parts), st.lists(label, min_size=1, max_size=3))
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
# A Unix-socket directory: any path (',' separates hosts, so none in it).
socket_dir = st.builds(lambda rest: "/" + rest, text.filter(lambda t: "," not in t))
host = st.one_of(hostname, ipv4, ipv6, socket_dir)
port = st.integers(1, 65535)


@st.composite
def dsn_parts(draw: st.DrawFn) -> dict[str, Any]:
    hosts = draw(st.lists(host, min_size=1, max_size=4))
    ports_kind = draw(st.sampled_from(["none", "one", "each"]))
    ports: list[int] | None
    if ports_kind == "none":
        ports = None
    elif ports_kind == "one":
        ports = [draw(port)] * len(hosts)
    else:
        ports = [draw(port) for _ in hosts]
    keys = draw(st.lists(st.sampled_from(PARAMS), unique=True, max_size=4))
    return {
        "hosts": hosts,
        "ports": ports,
        "user": draw(st.none() | nonempty_text),
        "password": draw(st.none() | nonempty_text),
        "dbname": draw(st.none() | nonempty_text),
        "params": {key: draw(text) for key in keys},
    }


def _quote_value(value: str) -> str:
    """libpq key=value quoting: single quotes, backslash escapes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def as_conninfo(parts: dict[str, Any], spacing: str, equals: str) -> str:
    items = [("host", ",".join(parts["hosts"]))]
    if parts["ports"] is not None:
        ports = parts["ports"]
        items.append(("port", str(ports[0]) if len(set(ports)) == 1 else ",".join(map(str, ports))))
    for key in ("user", "password", "dbname"):
        if parts[key] is not None:
            items.append((key, parts[key]))
    items.extend(parts["params"].items())
    return spacing.join(f"{key}{equals}{_quote_value(value)}" for key, value in items)


def _url_host(name: str) -> str:
    if name.startswith("/"):  # a socket directory: percent-encoded in the authority
        return quote(name, safe="")
    return f"[{name}]" if ":" in name else name


def as_url(parts: dict[str, Any], scheme: str) -> str:
    netloc = []
    for index, name in enumerate(parts["hosts"]):
        shown = _url_host(name)
        if parts["ports"] is not None:
            shown += f":{parts['ports'][index]}"
        netloc.append(shown)
    userinfo = ""
    if parts["user"] is not None or parts["password"] is not None:
        userinfo = quote(parts["user"] or "", safe="")
        if parts["password"] is not None:
            userinfo += ":" + quote(parts["password"], safe="")
        userinfo += "@"
    path = "/" + quote(parts["dbname"], safe="") if parts["dbname"] is not None else ""
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in parts["params"].items())
    return f"{scheme}://{userinfo}{','.join(netloc)}{path}" + ("?" + query if query else "")


def libpq_view(text_dsn: str) -> dict[str, Any]:
    """What libpq read: hosts and ports (defaults applied), user, password, dbname, the rest."""
    raw = conninfo_to_dict(text_dsn)
    hosts = raw["host"].split(",")
    ports = raw.get("port", "").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    return {
        "hosts": [
            (name, int(p) if p else DEFAULT_PORT) for name, p in zip(hosts, ports, strict=True)
        ],
        "user": raw.get("user") or None,
        "password": raw.get("password") or None,
        "dbname": raw.get("dbname") or None,
        "params": {key: value for key, value in raw.items() if key not in FIELDS},
    }


def hasql_view(dsn: Dsn) -> dict[str, Any]:
    return {
        "hosts": [(hp.host, hp.port) for hp in dsn.hosts],
        "user": dsn.user,
        "password": dsn.password,
        "dbname": dsn.database,
        "params": dsn.options(),
    }


def check_against_libpq(text_dsn: str) -> None:
    expected = libpq_view(text_dsn)
    parsed = parse_dsn(text_dsn)
    assert hasql_view(parsed) == expected
    # What hasql writes back reads the same in libpq, in both forms.
    assert libpq_view(parsed.to_conninfo()) == expected
    assert libpq_view(parsed.to_url()) == expected
    # Each single-host DSN is that host with every other setting unchanged.
    singles = split_dsn(text_dsn)
    unique_hosts = list(dict.fromkeys(expected["hosts"]))
    assert [(d.host, d.port) for d in singles] == unique_hosts
    for single in singles:
        for written in (single.to_conninfo(), single.to_url()):
            view = libpq_view(written)
            assert view["hosts"] == [(single.host, single.port)]
            assert {k: view[k] for k in ("user", "password", "dbname", "params")} == {
                k: expected[k] for k in ("user", "password", "dbname", "params")
            }


@settings(max_examples=300, deadline=None)
@given(dsn_parts(), st.sampled_from([" ", "  ", "\t", " \n "]), st.sampled_from(["=", " = ", "= "]))
def test_key_value_dsn_reads_as_libpq_reads_it(
    parts: dict[str, Any], spacing: str, equals: str
) -> None:
    check_against_libpq(as_conninfo(parts, spacing, equals))


@settings(max_examples=300, deadline=None)
@given(dsn_parts(), st.sampled_from(["postgresql", "postgres"]))
@example(
    {
        "hosts": ["db1", "::1", "10.0.0.7"],
        "ports": [5432, 5433, 6432],
        "user": "app@prod",
        "password": "p@ss:w/rd?#&=% '\\",
        "dbname": "shop/eu",
        "params": {"application_name": "a&b=c", "options": "-c search_path=x,y"},
    },
    "postgresql",
)
def test_url_dsn_reads_as_libpq_reads_it(parts: dict[str, Any], scheme: str) -> None:
    check_against_libpq(as_url(parts, scheme))


@pytest.mark.parametrize(
    "text_dsn",
    [
        "host=db1,db2 port=5432,5433 user=app password=secret dbname=shop sslmode=require",
        "host=db1 port=5432 password='it\\'s' user = app",
        "host=db1 password=unquoted\\ space dbname=x",
        "postgresql://app:s%20e@db1:6432,db2:6432/shop?target_session_attrs=read-write",
        "postgres://[2001:db8::1]:5433,[::1]/postgres?application_name=x",
        "postgresql://db1:5432,db2:5433/?host=db3,db4&port=7000",
    ],
)
def test_examples_read_as_libpq_reads_them(text_dsn: str) -> None:
    check_against_libpq(text_dsn)


def test_the_one_documented_difference_hosts_without_port_in_a_url() -> None:
    """In a URL, hasql gives a host without a port the last host's port; libpq the default."""
    text_dsn = "postgresql://db1,db2:6432/shop"
    assert libpq_view(text_dsn)["hosts"] == [("db1", DEFAULT_PORT), ("db2", 6432)]
    assert [(hp.host, hp.port) for hp in parse_dsn(text_dsn).hosts] == [
        ("db1", 6432),
        ("db2", 6432),
    ]
