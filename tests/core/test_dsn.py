"""Examples for hasql_core.dsn: every parsing rule, every error, splitting and redaction.

Every test runs with the PG* variables libpq reads removed from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hasql_core.dsn import (
    ADDRESS_PARAMS,
    CLIENT_ONLY_PARAMS,
    HOST_SELECTION_PARAMS,
    LIBPQ_PARAMETERS,
    SECRET_PARAMS,
    STARTUP_PARAMS,
    Dsn,
    HostPort,
    Trait,
    for_one_host,
    is_secret_param,
    parse_dsn,
    redact_dsn,
    split_dsn,
)
from hasql_core.errors import DsnError, HasqlError

SECRET = "Sup3r-Secr3t"


@pytest.fixture(autouse=True)
def no_libpq_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide the PG* variables of the machine, and any ~/.pg_service.conf."""
    for name in list(os.environ):
        if name.startswith("PG"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def hosts_of(text: str) -> list[tuple[str, int]]:
    return [(hp.host, hp.port) for hp in parse_dsn(text).hosts]


def parse_error(text: object, *needles: str, secret: str = SECRET) -> str:
    """Parse ``text``, expect DsnError, check its message names ``needles`` and hides ``secret``."""
    with pytest.raises(DsnError) as info:
        parse_dsn(text)  # type: ignore[arg-type]
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)
    assert secret not in message, message
    return message


# --- forms and schemes ---


@pytest.mark.parametrize(
    "scheme", ["postgresql", "postgres", "postgresql+asyncpg", "postgres+psycopg", "POSTGRESQL"]
)
def test_url_schemes_are_kept_as_given(scheme: str) -> None:
    dsn = parse_dsn(f"{scheme}://app@db1/app")
    assert dsn.scheme == scheme
    assert dsn.to_url().startswith(f"{scheme}://")
    assert dsn.redacted().startswith(f"{scheme}://")


def test_key_value_form_has_no_scheme_and_is_written_back_as_key_value() -> None:
    dsn = parse_dsn("host=db1 dbname=app")
    assert dsn.scheme is None
    assert dsn.redacted() == "host=db1 dbname=app"
    assert dsn.to_url() == "postgresql://db1/app"


def test_dsn_error_is_a_value_error_and_a_hasql_error() -> None:
    with pytest.raises(ValueError):
        parse_dsn("mysql://db1/app")
    with pytest.raises(HasqlError):
        parse_dsn("mysql://db1/app")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"mysql://root:{SECRET}@db1/app", "unsupported URL scheme"),
        (f"http://u:{SECRET}@db1/", "unsupported URL scheme"),
        (f"postgresql:/u:{SECRET}@db1/app", "must be followed by '://'"),
        ("just some garbage", "not a PostgreSQL DSN"),
        ("", "empty DSN"),
        ("   \t\n", "empty DSN"),
    ],
)
def test_unrecognised_input_names_the_problem_and_the_accepted_forms(
    text: str, problem: str
) -> None:
    parse_error(text, problem, "postgresql://", "key=value")


@pytest.mark.parametrize("value", [None, 42, b"postgresql://db1/app", ["host=db1"]])
def test_non_strings_are_refused(value: object) -> None:
    parse_error(value, "must be a str", type(value).__name__, "postgresql://")


# --- hosts and ports ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://db1,db2,db3/", [("db1", 5432), ("db2", 5432), ("db3", 5432)]),
        ("postgresql://db1:1234,db2:5678,db3/", [("db1", 1234), ("db2", 5678), ("db3", 5432)]),
        ("postgresql://db1,db2,db3:6432/", [("db1", 6432), ("db2", 6432), ("db3", 6432)]),
        ("postgresql://db1:1234,db2,db3:6432/", [("db1", 1234), ("db2", 5432), ("db3", 6432)]),
        ("postgresql://u@h1:5432,h2,h3:5433/db", [("h1", 5432), ("h2", 5432), ("h3", 5433)]),
        ("postgresql://db1:,db2:6432/", [("db1", 5432), ("db2", 6432)]),
        ("postgresql://db1,db2:,db3:6432/", [("db1", 5432), ("db2", 5432), ("db3", 6432)]),
        ("postgresql://db1", [("db1", 5432)]),
        ("postgresql://db1:", [("db1", 5432)]),
        ("postgresql://db1?sslmode=require", [("db1", 5432)]),
        ("postgresql://10.0.0.1:5433/app", [("10.0.0.1", 5433)]),
    ],
)
def test_url_host_lists_and_port_defaults(text: str, expected: list[tuple[str, int]]) -> None:
    assert hosts_of(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://[::1]:5433/app", [("::1", 5433)]),
        ("postgresql://[fe80::1]/app", [("fe80::1", 5432)]),
        ("postgresql://[::1]:5433,[2001:db8::7],db3:6000/", [
            ("::1", 5433), ("2001:db8::7", 5432), ("db3", 6000)
        ]),
        ("postgresql://[fe80::1%25eth0]:5433/", [("fe80::1%eth0", 5433)]),
    ],
)  # fmt: skip
def test_ipv6_in_brackets(text: str, expected: list[tuple[str, int]]) -> None:
    assert hosts_of(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("postgresql://::1/app", "no host given"),
        ("postgresql://fe80::1:5432/app", "not a whole number"),
        ("postgresql://[::1/app", "'[' without ']'"),
        ("postgresql://[::1]x/app", "after ']'"),
        ("postgresql://[]/app", "empty '[]'"),
    ],
)
def test_malformed_ipv6_is_refused(text: str, problem: str) -> None:
    parse_error(text, problem)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://%2Fvar%2Frun%2Fpostgresql/app", [("/var/run/postgresql", 5432)]),
        ("postgresql:///app?host=/tmp", [("/tmp", 5432)]),
        ("postgresql:///app?host=%2Ftmp&port=5433", [("/tmp", 5433)]),
        ("postgresql:///app?host=@abstract", [("@abstract", 5432)]),
        ("host=/var/run/postgresql dbname=app", [("/var/run/postgresql", 5432)]),
        ("host='/tmp/my dir' dbname=app", [("/tmp/my dir", 5432)]),
    ],
)
def test_unix_socket_directories(text: str, expected: list[tuple[str, int]]) -> None:
    assert hosts_of(text) == expected


def test_url_query_overrides_the_authority_like_libpq() -> None:
    dsn = parse_dsn(
        "postgresql://old:oldpw@db1:5433/olddb?host=db2&user=new&password=newpw&dbname=newdb"
    )
    assert dsn.hosts == (HostPort("db2", 5433),)
    assert (dsn.user, dsn.password, dsn.database) == ("new", "newpw", "newdb")
    assert parse_dsn("postgresql://db1:5433/?port=6000").hosts == (HostPort("db1", 6000),)


def test_url_query_host_and_port_lists() -> None:
    assert hosts_of("postgresql:///app?host=a,b&port=1,2") == [("a", 1), ("b", 2)]
    assert hosts_of("postgresql:///app?host=a,b,c&port=6432") == [("a", 6432)] * 1 + [
        ("b", 6432),
        ("c", 6432),
    ]
    assert hosts_of("postgresql://db1,db2/app?port=1,2") == [("db1", 1), ("db2", 2)]
    assert hosts_of("postgresql://x:7000/app?host=a,b") == [("a", 7000), ("b", 7000)]
    # Two authority hosts without ports are an empty two-entry port list, as in libpq.
    assert hosts_of("postgresql://x,y/app?host=a,b") == [("a", 5432), ("b", 5432)]
    parse_error("postgresql://x,y/app?host=a,b,c", "could not match 2 port numbers to 3 hosts")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=a,b,c port=1,2,3", [("a", 1), ("b", 2), ("c", 3)]),
        ("host=a,b,c port=5433", [("a", 5433), ("b", 5433), ("c", 5433)]),
        ("host=a,b,c port=1,,3", [("a", 1), ("b", 5432), ("c", 3)]),
        ("host=a,b port=", [("a", 5432), ("b", 5432)]),
        ("host=a,b", [("a", 5432), ("b", 5432)]),
        ("host=::1,fe80::2 port=1,2", [("::1", 1), ("fe80::2", 2)]),
        ("host=db1 port=' +05433 '", [("db1", 5433)]),
        ("port = 7 host = db1", [("db1", 7)]),
        ("host=db1 port=' 5433 '", [("db1", 5433)]),
    ],
)
def test_key_value_host_and_port_lists(text: str, expected: list[tuple[str, int]]) -> None:
    assert hosts_of(text) == expected


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("host=a,b,c port=1,2", "could not match 2 port numbers to 3 hosts"),
        ("host=a port=1,2", "could not match 2 port numbers to 1 hosts"),
        ("postgresql:///app?host=a,b,c&port=1,2", "could not match 2 port numbers to 3 hosts"),
        ("postgresql://a:1,b:2/app?host=x", "could not match 2 port numbers to 1 hosts"),
    ],
)
def test_port_list_must_match_the_host_list(text: str, counts: str) -> None:
    parse_error(text, counts, "one port per host, or a single port")


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ("host=db1 port=abc", "not a whole number"),
        ("host=db1 port=0", "outside 1..65535"),
        ("host=db1 port=65536", "outside 1..65535"),
        ("host=db1 port=-1", "outside 1..65535"),
        ("host=db1 port=5432.0", "not a whole number"),
        ("host=db1 port=١٢٣", "not a whole number"),
        ("host=db1 port=99999999999999999999999", "not a whole number"),
        ("postgresql://db1:0/", "outside 1..65535"),
        ("postgresql://db1:70000/", "outside 1..65535"),
        ("postgresql://db1:http/", "not a whole number"),
        ("postgresql://db1/?port=x", "not a whole number"),
        ("host=a,b port=1,0", "the port of host #2 is outside"),
    ],
)
def test_invalid_ports_are_refused(text: str, port: str) -> None:
    parse_error(text, port, "from 1 to 65535")


def test_port_65535_and_1_are_valid() -> None:
    assert hosts_of("host=a,b port=1,65535") == [("a", 1), ("b", 65535)]


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://app:{SECRET}@/app",
        f"postgresql://app:{SECRET}@:5433/app",
        "postgresql://",
        "postgresql:///app?sslmode=require",
        f"dbname=app user=app password={SECRET}",
        "host=''",
        f"postgresql:///app?host=&password={SECRET}",
    ],
)
def test_a_dsn_without_host_is_refused(text: str) -> None:
    parse_error(text, "no host given", "name every host", "postgresql://user@db1,db2/")


@pytest.mark.parametrize(
    "text", ["postgresql://db1,,db3/", "postgresql://db1,/", "host=a,,b", "host=a, port=1,2"]
)
def test_empty_entries_in_a_host_list_are_refused(text: str) -> None:
    parse_error(text, "is empty", "built-in socket directory", "name every host")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("host='my host'", "contains ' '"),
        ("postgresql:///?host=a%2Fb", "contains '/'"),
        ("postgresql://a%40b/", "contains '@'"),
        ("host=a=b", "contains '='"),
        ("host='db1,db\\\\x'", "host #2 is not a valid host name: it contains '\\\\'"),
        ("host=[::1]", "contains '['"),
    ],
)
def test_invalid_host_names_are_refused(text: str, shown: str) -> None:
    parse_error(text, shown)


def test_a_percent_encoded_comma_separates_hosts_like_libpq() -> None:
    assert hosts_of("postgresql://a%2Cb/") == [("a", 5432), ("b", 5432)]


# --- user, password, database, parameters ---


def test_url_parts_are_percent_decoded() -> None:
    dsn = parse_dsn(
        "postgresql://us%40er:p%40ss%3Aw%2Fo%3Frd%20%C3%A9@db1/my%2Fdb%20%E2%9C%93"
        "?application_name=a%26b%3Dc&options=-c%20search_path%3Dx"
    )
    assert dsn.user == "us@er"
    assert dsn.password == "p@ss:w/o?rd é"
    assert dsn.database == "my/db ✓"
    assert dsn.params == (("application_name", "a&b=c"), ("options", "-c search_path=x"))


def test_url_plus_is_not_a_space_like_libpq() -> None:
    assert parse_dsn("postgresql://db1/a+b?application_name=x+y").database == "a+b"
    assert parse_dsn("postgresql://db1/?application_name=x+y").options() == {
        "application_name": "x+y"
    }


def test_url_user_info_ends_at_the_first_at_before_the_first_slash_like_libpq() -> None:
    dsn = parse_dsn(f"postgresql://app?x:{SECRET}@db1/app")
    assert (dsn.user, dsn.password, dsn.hosts) == ("app?x", SECRET, (HostPort("db1", 5432),))
    assert SECRET not in repr(dsn)
    dsn = parse_dsn("postgresql://app:p:ss?#,[@db1/app")
    assert (dsn.user, dsn.password) == ("app", "p:ss?#,[")
    # A raw '@' in the password ends the user info early: libpq then reads a host no server has.
    parse_error(f"postgresql://app:p@{SECRET}@db1/app", "write '@' as %40")
    # No '@' before the first '/': no user info, and the '@' is part of the path.
    assert parse_dsn("postgresql://db1/a@b").database == "a@b"


def test_raw_spaces_in_url_parts_are_dropped_at_the_ends_and_refused_inside() -> None:
    dsn = parse_dsn(f"postgresql:// app : {SECRET} @ db1 / app ?application_name= me ")
    assert (dsn.user, dsn.password, dsn.host, dsn.database) == ("app", SECRET, "db1", "app")
    assert dsn.options() == {"application_name": "me"}
    assert parse_dsn("postgresql://db1/a%20b%20").database == "a b "
    parse_error(f"postgresql://app:{SECRET} x@db1/app", "raw space inside the password", "%20")
    parse_error("postgresql://db1, db2/app", "raw space inside the host list")
    parse_error("postgresql://db1/?application_name=a b", "raw space inside the value of")


def test_url_query_items_need_exactly_one_equals_sign_like_libpq() -> None:
    parse_error("postgresql://db1/?options=-c a=b", "second '='", "%3D")
    assert parse_dsn("postgresql://db1/?options=-c%20a%3Db").options() == {"options": "-c a=b"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"postgresql://app:{SECRET}%zz@db1/app", "invalid percent-encoding in the password"),
        (f"postgresql://app:{SECRET}%@db1/app", "invalid percent-encoding in the password"),
        (f"postgresql://app:{SECRET}@db1/a%2", "invalid percent-encoding in the database name"),
        (f"postgresql://app:{SECRET}@db1/a%00b", "%00 in the database name"),
        (f"postgresql://app:{SECRET}@db1/a%FFb", "not UTF-8"),
        (f"postgresql://app:{SECRET}@db1/?x=%G0", "invalid percent-encoding in the value of"),
        (f"postgresql://app:{SECRET}@%zz/", "invalid percent-encoding in the host list"),
    ],
)
def test_bad_percent_encoding_is_refused(text: str, problem: str) -> None:
    parse_error(text, problem)


def test_empty_user_password_and_database_are_kept_where_libpq_keeps_them() -> None:
    # libpq does not store empty URL user info or path ...
    dsn = parse_dsn("postgresql://:@db1/")
    assert (dsn.user, dsn.password, dsn.database) == (None, None, None)
    # ... but keeps empty key=value settings and URL query values: they stop PGUSER & co.
    for text in (
        "host=db1 user='' password='' dbname=''",
        "postgresql://db1/?user=&password=&dbname=",
    ):
        dsn = parse_dsn(text)
        assert (dsn.user, dsn.password, dsn.database) == ("", "", "")
        for written in (dsn.to_url(), dsn.to_conninfo()):
            assert parse_dsn(written).options() == dsn.options()
            assert (parse_dsn(written).user, parse_dsn(written).database) == ("", "")


def test_user_without_password_and_password_without_user() -> None:
    dsn = parse_dsn("postgresql://app@db1/")
    assert (dsn.user, dsn.password) == ("app", None)
    dsn = parse_dsn("postgresql://:pw@db1/")
    assert (dsn.user, dsn.password) == (None, "pw")
    assert dsn.to_url() == "postgresql://:pw@db1/"


def test_unknown_url_parameters_pass_through_in_order() -> None:
    dsn = parse_dsn(
        "postgresql://db1/app?sslmode=require&application_name=svc&target_session_attrs=any"
        "&whatever_driver_option=1&options=-c%20x%3Dy"
    )
    assert dsn.params == (
        ("sslmode", "require"),
        ("application_name", "svc"),
        ("target_session_attrs", "any"),
        ("whatever_driver_option", "1"),
        ("options", "-c x=y"),
    )
    assert dsn.options() == dict(dsn.params)


def test_a_repeated_parameter_keeps_the_last_value_like_libpq() -> None:
    assert parse_dsn("postgresql://db1/?sslmode=a&x=1&sslmode=b").params == (
        ("sslmode", "b"),
        ("x", "1"),
    )
    assert parse_dsn("host=a host=b sslmode=x sslmode=y").hosts == (HostPort("b", 5432),)


def test_only_a_trailing_ampersand_is_ignored_in_a_url_query() -> None:
    assert parse_dsn("postgresql://db1/?a=1&b=&").params == (("a", "1"), ("b", ""))
    assert parse_dsn("postgresql://db1/?").params == ()
    parse_error("postgresql://db1/?&a=1", "has no '='")
    parse_error("postgresql://db1/?a=1&&b=2", "has no '='")


def test_sslmode_spellings_are_translated_like_libpq() -> None:
    assert parse_dsn("postgresql://db1/?ssl=true").options() == {"sslmode": "require"}
    assert parse_dsn("host=db1 requiressl=1").options() == {"sslmode": "require"}
    assert parse_dsn("host=db1 requiressl=0").options() == {"sslmode": "prefer"}
    parse_error("postgresql://db1/?ssl=false", "spelling of sslmode")
    parse_error("host=db1 ssl=true", "spelling of sslmode")


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://db1/?password={SECRET}&justakey",
        f"postgresql://db1/?password={SECRET}&%3D=1",
        f"postgresql://db1/?password={SECRET}&a%20b=1",
        f"postgresql://db1/?password={SECRET}&=1",
    ],
)
def test_malformed_url_query_items_are_refused(text: str) -> None:
    message = parse_error(text)
    assert "query" in message or "parameter name" in message


def test_key_value_quoting_and_escapes() -> None:
    dsn = parse_dsn(
        r"host = db1   user=  app password='it\'s a \\ secret' dbname=my\ db"
        r" application_name='' options='-c search_path=a,b'"
    )
    assert dsn.user == "app"
    assert dsn.password == "it's a \\ secret"
    assert dsn.database == "my db"
    assert dsn.params == (("application_name", ""), ("options", "-c search_path=a,b"))


def test_key_value_quirks_libpq_shares() -> None:
    # No space is needed after a closing quote.
    assert parse_dsn("host='db1'port=5433").hosts == (HostPort("db1", 5433),)
    # A value may contain '='.
    assert parse_dsn("host=db1 options=-cx=y").options() == {"options": "-cx=y"}
    # Whitespace after '=' is skipped, so the next word becomes the value (and is refused here).
    parse_error("host= port=5433", "contains '='")
    # A lone backslash at the end of an unquoted value is dropped.
    assert parse_dsn(f"host=db1 password={SECRET}\\").password == SECRET


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"host=db1 password='{SECRET}", "unterminated quoted value of 'password'"),
        (f"host=db1 password='{SECRET}\\'", "unterminated quoted value of 'password'"),
        ("host=db1 dbname", "'dbname' without '='"),
        ("host=db1 =app", "invalid parameter name"),
        (f"password={SECRET} nonsense host=db1", "a parameter without '='"),
        (f"host=db1 password {SECRET}", "'password' without '='"),
        (f"sslpassword {SECRET}", "not a PostgreSQL DSN"),
    ],
)
def test_malformed_key_value_strings_are_refused(text: str, problem: str) -> None:
    parse_error(text, problem)


def test_a_word_after_an_unquoted_password_is_not_quoted_in_the_error() -> None:
    message = parse_error("host=db1 password=my secret words", "quote values holding spaces")
    assert "secret" not in message
    assert "words" not in message


@pytest.mark.parametrize(
    "text",
    [f"host=db1 password={SECRET}\x00 x", f"postgresql://u:{SECRET}@db1/\ud800"],
)
def test_nul_and_lone_surrogates_are_refused(text: str) -> None:
    parse_error(text, "DSN")


# --- hostaddr ---


def test_hostaddr_single_host() -> None:
    dsn = parse_dsn("host=db1 hostaddr=10.0.0.1 sslmode=require")
    assert dsn.params == (("hostaddr", "10.0.0.1"), ("sslmode", "require"))


def test_hostaddr_list_is_split_per_host() -> None:
    parts = split_dsn("postgresql://db1,db2/app?hostaddr=10.0.0.1,10.0.0.2&sslmode=require")
    assert [part.options() for part in parts] == [
        {"hostaddr": "10.0.0.1", "sslmode": "require"},
        {"hostaddr": "10.0.0.2", "sslmode": "require"},
    ]
    # An empty entry means "look the name up": that host gets an empty hostaddr, which also
    # keeps PGHOSTADDR away from it.
    parts = split_dsn("host=db1,db2 hostaddr=,10.0.0.2")
    assert [part.options() for part in parts] == [{"hostaddr": ""}, {"hostaddr": "10.0.0.2"}]


def test_hosts_that_differ_only_by_hostaddr_are_two_servers() -> None:
    parts = split_dsn("host=db1,db1 hostaddr=10.0.0.1,10.0.0.2")
    assert [part.options()["hostaddr"] for part in parts] == ["10.0.0.1", "10.0.0.2"]
    assert len(split_dsn("host=db1,db1 hostaddr=10.0.0.1,10.0.0.1")) == 1


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("host=a,b,c hostaddr=10.0.0.1", "could not match 3 host names to 1 hostaddr values"),
        ("host=a hostaddr=10.0.0.1,10.0.0.2", "could not match 1 host names to 2 hostaddr values"),
        ("postgresql://a,b/?hostaddr=1.1.1.1", "could not match 2 host names to 1 hostaddr"),
    ],
)
def test_hostaddr_list_must_match_the_hosts(text: str, counts: str) -> None:
    parse_error(text, counts, "one hostaddr per host")


def test_hostaddr_without_host_is_refused() -> None:
    parse_error("hostaddr=10.0.0.1 dbname=app", "without host names", "give the host names too")
    parse_error("host=db1, hostaddr=1.1.1.1,2.2.2.2", "host #2 has a hostaddr but no host name")


# --- writing ---


def test_to_url_writes_ports_as_libpq_reads_them_back() -> None:
    # No port given: left to PGPORT, which libpq reads only when the URL has no port list.
    assert parse_dsn("host=a").to_url() == "postgresql://a/"
    assert parse_dsn("host=a,b").to_url() == "postgresql:///?host=a,b"
    # Bare authority hosts are each on 5432 for libpq, whatever PGPORT says.
    assert parse_dsn("host=a,b port=5432").to_url() == "postgresql://a,b/"
    assert parse_dsn("host=a port=5432").to_url() == "postgresql://a:5432/"
    assert parse_dsn("host=a,b port=6432").to_url() == "postgresql://a:6432,b:6432/"
    assert parse_dsn("host=a,::1 port=1,2").to_url() == "postgresql://a:1,[::1]:2/"


def test_to_url_moves_hosts_it_cannot_write_in_the_authority_to_the_query() -> None:
    dsn = parse_dsn("host=/tmp,db2 port=1,2 user=app dbname=app sslmode=disable")
    assert dsn.to_url() == "postgresql://app@/app?host=%2Ftmp,db2&port=1,2&sslmode=disable"
    assert parse_dsn("host=bücher.example").to_url() == "postgresql:///?host=b%C3%BCcher.example"


def test_to_url_percent_encodes_everything() -> None:
    dsn = Dsn(
        "postgresql+asyncpg",
        [HostPort("db1", 5432)],
        user="a@b:c",
        password="p/w?#&=,'\\ é",
        database="d b/c?",
        params=[("application_name", "x&y=z"), ("options", "-c a=b")],
    )
    url = dsn.to_url()
    assert url == (
        "postgresql+asyncpg://a%40b%3Ac:p%2Fw%3F%23%26%3D%2C%27%5C%20%C3%A9@db1:5432/d%20b%2Fc%3F"
        "?application_name=x%26y%3Dz&options=-c%20a%3Db"
    )
    assert parse_dsn(url) == dsn


def test_to_conninfo_quotes_where_needed() -> None:
    dsn = Dsn(
        None,
        [HostPort("/tmp/my dir", 5432), HostPort("db2", 5433)],
        user="app",
        password="it's \\ x",
        database="db",
        params=[("application_name", ""), ("options", "-c a=b")],
    )
    assert dsn.to_conninfo() == (
        "host='/tmp/my dir,db2' port=5432,5433 user=app password='it\\'s \\\\ x' dbname=db"
        " application_name='' options='-c a=b'"
    )
    assert parse_dsn(dsn.to_conninfo()) == dsn


# --- the Dsn object ---


def test_host_and_port_of_a_single_host_dsn() -> None:
    dsn = parse_dsn("postgresql://db1:6432/app")
    assert (dsn.host, dsn.port) == ("db1", 6432)


@pytest.mark.parametrize("attribute", ["host", "port"])
def test_host_and_port_of_a_multi_host_dsn_raise(attribute: str) -> None:
    dsn = parse_dsn("postgresql://db1,db2/app")
    with pytest.raises(DsnError, match=r"has 2 hosts.*split_dsn"):
        getattr(dsn, attribute)


def test_with_host_replaces_every_host_and_drops_hostaddr() -> None:
    dsn = parse_dsn("host=a,b hostaddr=1.1.1.1,2.2.2.2 user=app sslmode=require")
    moved = dsn.with_host("::1", 6000)
    assert moved.hosts == (HostPort("::1", 6000),)
    assert moved.params == (("sslmode", "require"),)
    assert moved.user == "app"
    with pytest.raises(DsnError, match="invalid port"):
        dsn.with_host("db1", 0)
    with pytest.raises(DsnError, match="invalid host name"):
        dsn.with_host("[::1]", 5432)


def test_options_excludes_the_fields() -> None:
    dsn = parse_dsn("host=db1 port=1 user=u password=p dbname=d sslmode=require")
    assert dsn.options() == {"sslmode": "require"}


def test_dsns_compare_by_value_and_hash() -> None:
    assert parse_dsn("postgresql://db1/app") == parse_dsn("postgresql://db1:5432/app")
    assert len({parse_dsn("postgresql://db1/app"), parse_dsn("postgresql://db1:5432/app")}) == 1
    assert parse_dsn("postgresql://db1/app") != parse_dsn("host=db1 dbname=app")


def test_hostport_str() -> None:
    assert str(HostPort("db1", 5432)) == "db1:5432"
    assert str(HostPort("::1", 5433)) == "[::1]:5433"
    assert str(HostPort("/tmp", 5432)) == "/tmp:5432"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"hosts": []}, "no host given"),
        ({"hosts": ["db1"]}, "HostPort"),
        ({"scheme": "mysql"}, "unsupported scheme"),
        ({"params": [("host", "x")]}, "its own Dsn field"),
        ({"params": [("dbname", "x")]}, "its own Dsn field"),
        ({"params": [("a", "1"), ("a", "2")]}, "given twice"),
        ({"params": [("a b", "1")]}, "invalid parameter name"),
        ({"params": [("", "1")]}, "invalid parameter name"),
        ({"params": [("hostaddr", "1.1.1.1,2.2.2.2")]}, "could not match 2 hostaddr"),
        ({"params": [("requiressl", "1")]}, "spelling of sslmode"),
        ({"user": "a\x00b"}, "NUL"),
        ({"params": [("a", "\udcff")]}, "lone surrogates"),
    ],
)
def test_dsn_construction_is_validated(kwargs: dict[str, object], problem: str) -> None:
    arguments: dict[str, object] = {"scheme": None, "hosts": [HostPort("db1", 5432)], **kwargs}
    with pytest.raises(DsnError, match=problem):
        Dsn(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "port", "problem"),
    [
        ("", 5432, "it is empty"),
        (None, 5432, "must be a str"),
        ("a,b", 5432, "contains ','"),
        ("a b", 5432, "invalid host name"),
        ("[::1]", 5432, "invalid host name"),
        ("db1", 0, "invalid port"),
        ("db1", 65536, "invalid port"),
        ("db1", True, "invalid port"),
        ("db1", "5432", "invalid port"),
    ],
)
def test_hostport_is_validated(host: str, port: int, problem: str) -> None:
    with pytest.raises(DsnError, match=problem):
        HostPort(host, port)


def test_socket_directories_may_hold_any_character_but_comma() -> None:
    assert HostPort("/tmp/a b'c\\d=é", 5432).is_socket
    assert HostPort("@abstract name", 5432).is_socket


# --- splitting ---


def test_split_gives_one_dsn_per_host_with_every_other_setting() -> None:
    parts = split_dsn(
        "postgresql+asyncpg://app:pw@db1:1,db2:2,[::1]:3/app?sslmode=require&application_name=x"
    )
    assert [(part.host, part.port) for part in parts] == [("db1", 1), ("db2", 2), ("::1", 3)]
    for part in parts:
        assert part.scheme == "postgresql+asyncpg"
        assert (part.user, part.password, part.database) == ("app", "pw", "app")
        assert part.params == (("sslmode", "require"), ("application_name", "x"))


def test_split_keeps_duplicates_once_in_first_order() -> None:
    parts = split_dsn("host=b,a,b,c,a port=1,1,1,1,2")
    assert [(part.host, part.port) for part in parts] == [("b", 1), ("a", 1), ("c", 1), ("a", 2)]


def test_split_accepts_a_dsn_and_refuses_other_types() -> None:
    dsn = parse_dsn("host=db1")
    assert split_dsn(dsn) == [dsn]
    with pytest.raises(DsnError, match="str or a Dsn"):
        split_dsn(42)  # type: ignore[arg-type]
    with pytest.raises(DsnError, match="no host"):
        split_dsn("dbname=app")


# --- secrets ---


def test_secret_params() -> None:
    assert {"password", "sslpassword"} <= SECRET_PARAMS
    for key in [
        "password",
        "sslpassword",
        "PASSWORD",
        "oauth_client_secret",
        "api_token",
        "x_secret",
    ]:
        assert is_secret_param(key)
    for key in ["user", "sslmode", "sslkey", "passfile", "application_name"]:
        assert not is_secret_param(key)


def test_redacted_url_hides_every_secret() -> None:
    dsn = parse_dsn(
        f"postgresql://app:{SECRET}@db1,db2/app?sslpassword={SECRET}&auth_token={SECRET}"
        f"&my_secret={SECRET}&sslmode=require"
    )
    expected = (
        "postgresql://app:***@db1,db2/app?sslpassword=***&auth_token=***&my_secret=***"
        "&sslmode=require"
    )
    assert dsn.redacted() == expected
    assert str(dsn) == expected
    assert repr(dsn) == f"Dsn({expected!r})"
    assert dsn.to_url(redact=True) == expected
    assert SECRET in dsn.to_url()


def test_redacted_key_value_hides_every_secret() -> None:
    dsn = parse_dsn(f"host=db1 user=app password='{SECRET} x' sslpassword={SECRET} sslmode=disable")
    expected = "host=db1 user=app password=*** sslpassword=*** sslmode=disable"
    assert dsn.redacted() == expected
    assert repr(dsn) == f"Dsn({expected!r})"
    assert dsn.to_conninfo(redact=True) == expected
    assert SECRET not in repr(split_dsn(dsn))


def test_redacted_password_given_in_the_url_query() -> None:
    dsn = parse_dsn(f"postgresql://db1/?password={SECRET}")
    assert dsn.redacted() == "postgresql://:***@db1/"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"postgresql://app:{SECRET}@db1/app", "postgresql://app:***@db1/app"),
        (f"postgresql://app:p@ss/w?rd{SECRET}@db1/app", "postgresql://app:***@db1/app"),
        (f"postgresql://app:{SECRET} x@db1/app", "postgresql://app:***@db1/app"),
        ("postgresql://app@db1/app", "postgresql://app@db1/app"),
        (f"postgresql://db1/?password={SECRET}&sslmode=x", "postgresql://db1/?password=***&sslmode=x"),
        (f"postgresql://db1/?pass%77ord={SECRET}", "postgresql://db1/?pass%77ord=***"),
        (f"postgresql://db1/?password={SECRET}&b&sslmode=x", "postgresql://db1/?password=***&sslmode=x"),
        (f"host=db1 password={SECRET} dbname=x", "host=db1 password=*** dbname=x"),
        (f"host=db1 password = '{SECRET} \\' x' dbname=x", "host=db1 password = *** dbname=x"),
        (f"host=db1 password='{SECRET}", "host=db1 password=***"),
        (f"host=db1 password={SECRET} more words", "host=db1 password=***"),
        (f"host=db1 PASSWORD={SECRET}", "host=db1 PASSWORD=***"),
        (f"host=db1 api_token={SECRET} sslmode=x", "host=db1 api_token=*** sslmode=x"),
        (f"host=db1 password {SECRET} dbname=x", "host=db1 password *** dbname=x"),
        (f"sslpassword {SECRET}", "sslpassword ***"),
        ("FATAL: password authentication failed", "FATAL: password authentication failed"),
        (
            f"could not connect to postgresql://u:{SECRET}@db1/app: refused",
            "could not connect to postgresql://u:***@db1/app: refused",
        ),
        ("nothing to hide here", "nothing to hide here"),
        ("", ""),
    ],
)  # fmt: skip
def test_redact_dsn(text: str, expected: str) -> None:
    assert redact_dsn(text) == expected


@pytest.mark.parametrize("value", [None, 42, b"password=x", object()])
def test_redact_dsn_never_shows_a_non_string(value: object) -> None:
    assert redact_dsn(value).startswith("<")  # type: ignore[arg-type]


def test_errors_raised_after_parsing_credentials_hide_them() -> None:
    for text in [
        f"postgresql://app:{SECRET}@db1:99999/app",
        f"postgresql://app:{SECRET}@db1,db2/app?port=1,2,3",
        f"host=db1 port=x user=app password={SECRET}",
        f"host=db1 password='{SECRET}' sslpassword={SECRET} port=1,2",
        f"postgresql://app:{SECRET}/x@db1/app",
        f"postgresql://app:12,{SECRET} x/y@db1/app",
        f"postgresql://app:1/x?host={SECRET} y@db1/app",
    ]:
        parse_error(text)


# --- what the DSN leaves to the environment and the service file ---


def test_a_port_nobody_gave_stays_ungiven() -> None:
    (part,) = split_dsn("host=db1 dbname=app")
    assert (part.port, part.hosts[0].port_given) == (5432, False)
    assert "port" not in part.to_conninfo()
    assert part.to_url() == "postgresql://db1/app"


def test_pgport_pghost_and_pghostaddr_fill_in_what_the_dsn_does_not_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPORT", "6000")
    assert [str(part) for part in split_dsn("host=db1,db2")] == [
        "host=db1 port=6000",
        "host=db2 port=6000",
    ]
    # A port list given in the DSN wins, and its empty entries mean 5432, not PGPORT.
    assert hosts_of("host=db1,db2 port=7000,") == [("db1", 7000), ("db2", 5432)]
    # libpq stores a port list for URL authority hosts, so bare hosts are on 5432 too.
    assert hosts_of("postgresql://db1,db2/") == [("db1", 5432), ("db2", 5432)]
    assert hosts_of("postgresql://db1/") == [("db1", 6000)]
    monkeypatch.setenv("PGPORT", "6001,6002")
    assert hosts_of("host=db1,db2") == [("db1", 6001), ("db2", 6002)]
    parse_error("host=db1", "could not match 2 port numbers to 1 hosts")
    monkeypatch.setenv("PGHOST", "pg1,pg2")
    assert hosts_of("dbname=app") == [("pg1", 6001), ("pg2", 6002)]
    monkeypatch.setenv("PGHOSTADDR", "10.0.0.1,")
    assert [part.options() for part in split_dsn("dbname=app")] == [
        {"hostaddr": "10.0.0.1"},
        {"hostaddr": ""},
    ]
    # An explicitly empty setting in the DSN keeps the variable away, as in libpq.
    assert [part.options() for part in split_dsn("dbname=app hostaddr=''")] == [
        {"hostaddr": ""},
        {"hostaddr": ""},
    ]
    assert hosts_of("host=db1,db2 port='' hostaddr=''") == [("db1", 5432), ("db2", 5432)]
    parse_error("host='' dbname=app", "hostaddr is given without host names")


def test_environ_argument_replaces_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPORT", "6000")
    assert hosts_of("host=db1") == [("db1", 6000)]
    assert [(hp.host, hp.port) for hp in parse_dsn("host=db1", environ={}).hosts] == [("db1", 5432)]
    assert split_dsn("host=db1", environ={"PGPORT": "7"})[0].port == 7


def _service_file(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pg_service.conf"
    path.write_text(text)
    return path


def test_a_service_gives_hosts_and_ports_like_libpq(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _service_file(
        tmp_path / "etc",
        "# clusters\n[prod]extra\n  host=db1,db2  \nport=7001,\nport=9\nuser=app\n"
        f"password={SECRET}\n[other]\nhost=x\n",
    )
    monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path / "etc"))
    parts = split_dsn("service=prod dbname=shop")
    assert [(part.host, part.port) for part in parts] == [("db1", 7001), ("db2", 5432)]
    # The service stays in every host's DSN, so libpq still reads its other settings.
    assert parts[0].to_conninfo() == "host=db1 port=7001 dbname=shop service=prod"
    assert SECRET not in repr(parts)
    # What the DSN says wins over the service.
    assert hosts_of("service=prod host=h1,h2 port=1") == [("h1", 1), ("h2", 1)]
    monkeypatch.setenv("PGSERVICE", "other")
    assert hosts_of("dbname=x") == [("x", 5432)]


def test_a_service_file_in_home_or_pgservicefile_is_read_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _service_file(tmp_path / "etc", "[s]\nhost=from-sysconf\n")
    monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path / "etc"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".pg_service.conf").write_text("[s]\nhost=from-home\n")
    assert hosts_of("service=s") == [("from-home", 5432)]
    explicit = _service_file(tmp_path / "mine", "[t]\nhost=from-pgservicefile\n")
    monkeypatch.setenv("PGSERVICEFILE", str(explicit))
    assert hosts_of("service=t") == [("from-pgservicefile", 5432)]
    # Not in PGSERVICEFILE: libpq goes on to the system file.
    assert hosts_of("service=s") == [("from-sysconf", 5432)]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[s]\nhost db1\n", "syntax error in service file"),
        ("[s]\nnot_a_keyword=1\n", "syntax error in service file"),
        ("[s]\nservice=t\n", "syntax error in service file"),
        ("[s]\nldap://ldap.example/dc=x?y?one?(cn=s)\n", "LDAP"),
        ("[s]\nhost=" + "x" * 1100 + "\n", "too long"),
        ("[other]\nhost=db1\n", "not defined in any service file"),
    ],
)
def test_service_file_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, problem: str
) -> None:
    _service_file(tmp_path / "etc", content)
    monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path / "etc"))
    parse_error(f"service=s password={SECRET}", problem)


def test_a_service_only_libpq_can_find_is_refused_with_what_to_set(tmp_path: Path) -> None:
    parse_error("service=s host=db1", "PGSYSCONFDIR", "PGSERVICEFILE", "name the hosts")


def test_a_missing_pgservicefile_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "absent.conf"))
    parse_error("service=s host=db1", "cannot be read")


# --- hasql's special case, exactly ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Only the last host names a port, and no other host has a ':': all on that port.
        ("postgresql://db1,db2,db3:6432/", [6432, 6432, 6432]),
        ("postgresql://[::1],db2:6432/", [6432, 6432]),
        # Any other shape pairs ports by position, an empty entry meaning 5432 (libpq's rule).
        ("postgresql://db1:,db2,db3:6432/", [5432, 5432, 6432]),
        ("postgresql://db1:6000,db2,db3:6432/", [6000, 5432, 6432]),
        ("postgresql://db1,db2:6432,db3/", [5432, 6432, 5432]),
        ("postgresql://db1:6432/", [6432]),
        # A query port replaces the authority's ports.
        ("postgresql://db1,db2:6432/?port=1,2", [1, 2]),
        # The key=value form has no special case: one port is every host's.
        ("host=db1,db2,db3 port=,,6432", [5432, 5432, 6432]),
    ],
)
def test_the_last_port_applies_to_all_only_in_the_exact_hasql_shape(
    text: str, expected: list[int]
) -> None:
    assert [port for _, port in hosts_of(text)] == expected


# --- errors carry nothing from the DSN ---


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://app:{SECRET}@db1:{SECRET}/app",
        f"postgresql://app:{SECRET}@{SECRET}%zz/app",
        f"host=db1 password {SECRET}",
        f"sslpassword {SECRET}",
        f"host=db1 password={SECRET} port={SECRET}",
        f"host='{SECRET} x' password=1",
        f"postgresql://db1/?{SECRET}",
        f"postgresql://u:{SECRET}@db1/?a=%{SECRET}",
    ],
)
def test_a_dsn_error_has_no_chained_exception_and_quotes_nothing(text: str) -> None:
    with pytest.raises(DsnError) as info:
        parse_dsn(text)
    error = info.value
    assert error.__cause__ is None
    assert error.__context__ is None
    assert SECRET not in str(error) and SECRET not in repr(error)
    assert all(SECRET not in str(arg) for arg in error.args)


def test_a_dsn_error_raised_inside_an_except_block_is_chained_only_to_that_block() -> None:
    try:
        raise KeyError("unrelated")
    except KeyError:
        with pytest.raises(DsnError) as info:
            parse_dsn(f"postgresql://u:{SECRET}@db1:x/")
    assert isinstance(info.value.__context__, KeyError)


# --- the table of libpq parameters ---


def test_the_parameter_table_agrees_with_the_named_sets() -> None:
    assert {"host", "hostaddr", "port"} == ADDRESS_PARAMS
    assert {"target_session_attrs", "load_balance_hosts"} == HOST_SELECTION_PARAMS
    assert {"password", "sslpassword", "oauth_client_secret", "scram_client_key"} <= SECRET_PARAMS
    assert {"user", "dbname", "options", "application_name"} <= STARTUP_PARAMS
    assert set(LIBPQ_PARAMETERS) - STARTUP_PARAMS == CLIENT_ONLY_PARAMS
    assert "sslmode" in CLIENT_ONLY_PARAMS and "application_name" not in CLIENT_ONLY_PARAMS
    assert Trait.SECRET in LIBPQ_PARAMETERS["sslpassword"]
    assert all(is_secret_param(name) for name in SECRET_PARAMS)


def test_for_one_host_drops_the_host_selection_parameters() -> None:
    dsn = parse_dsn(
        "postgresql://db1/app?target_session_attrs=read-write&sslmode=require"
        "&load_balance_hosts=random"
    )
    assert for_one_host(dsn).params == (("sslmode", "require"),)
    plain = parse_dsn("postgresql://db1/app?sslmode=require")
    assert for_one_host(plain) is plain


def test_a_dsn_built_by_hand_with_a_bad_secret_chains_nothing() -> None:
    with pytest.raises(DsnError) as info:
        Dsn(None, [HostPort("db1", 5432)], password=SECRET + "\udcff")
    assert info.value.__context__ is None
    assert info.value.__cause__ is None
