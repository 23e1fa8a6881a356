"""Property tests for hasql_core.dsn: round trips through both forms, splitting, secrecy.

Every call reads no environment (``environ={}``), and every property is derandomized, so a run is
the same on every machine.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from urllib.parse import quote

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from hasql_core.dsn import Dsn, HostPort, is_secret_param, redact_dsn
from hasql_core.dsn import parse_dsn as parse_with_environment
from hasql_core.dsn import split_dsn as split_with_environment
from hasql_core.errors import DsnError

DSN_SETTINGS = settings(max_examples=120, deadline=None, derandomize=True)


def parse_dsn(text: str) -> Dsn:
    return parse_with_environment(text, environ={})


def split_dsn(dsn: str | Dsn) -> list[Dsn]:
    return split_with_environment(dsn, environ={})


# Every secret generated below contains MARK and nothing else does, so a MARK (raw or
# percent-encoded) in any output means a secret leaked.
MARK = "\u2603"
MARK_ENCODED = quote(MARK)
NASTY = list("@:/?#&=,'\\ %+[]\t\"é✓ｱ")


def chars(*, exclude: str = "") -> st.SearchStrategy[str]:
    return st.characters(exclude_categories=["Cs"], exclude_characters="\x00" + MARK + exclude)


def texts(*, min_size: int = 1, exclude: str = "") -> st.SearchStrategy[str]:
    """Arbitrary text, rich in the characters URLs and key=value strings treat specially."""
    alphabet = st.one_of(
        st.sampled_from([c for c in NASTY if c not in exclude]), chars(exclude=exclude)
    )
    return st.text(alphabet, min_size=min_size, max_size=16)


ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(IPv4Address(n)))
ipv6 = st.one_of(
    st.integers(0, 2**128 - 1), st.integers(0, 2**16 - 1).map(lambda n: n << 112 | 1)
).map(lambda n: str(IPv6Address(n)))
host_names = st.one_of(
    st.from_regex(
        r"[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?(\.[a-z][a-z0-9]{0,5}){0,2}", fullmatch=True
    ),
    st.text(st.characters(categories=("Ll", "Lu", "Nd")), min_size=1, max_size=10).filter(
        lambda name: MARK not in name
    ),
    ipv4,
    ipv6,
    ipv6.map(lambda addr: f"{addr}%eth0"),
    texts(exclude=",").map(lambda path: "/" + path),
    texts(exclude=",").map(lambda name: "@" + name),
)
host_ports = st.builds(HostPort, host_names, st.integers(1, 65535))

param_keys = st.one_of(
    st.sampled_from(
        [
            "sslmode",
            "application_name",
            "target_session_attrs",
            "options",
            "connect_timeout",
            "x-driver.option",
            "Host",
            "database",
        ]
    ),
    texts().filter(lambda key: key.isprintable() and not any(c.isspace() or c == "=" for c in key)),
).filter(
    lambda key: (
        key not in {"host", "port", "user", "password", "dbname", "hostaddr", "ssl", "requiressl"}
    )
)


any_text = texts()
any_text_or_empty = texts(min_size=0)
maybe_text = st.none() | any_text_or_empty
ip_addresses = ipv4 | ipv6
schemes = st.sampled_from([None, "postgresql", "postgres", "postgresql+asyncpg"])
param_dicts = st.dictionaries(param_keys, any_text_or_empty, max_size=4)


@st.composite
def dsns(draw: st.DrawFn, *, secret: bool = False) -> Dsn:
    """A valid Dsn; with ``secret``, every secret holds MARK and nothing else does."""
    hosts = draw(st.lists(host_ports, min_size=1, max_size=4))
    params = draw(param_dicts)
    params = {
        key: (MARK + value if secret else value) if is_secret_param(key) else value
        for key, value in params.items()
    }
    if draw(st.booleans()):
        addresses = draw(st.lists(ip_addresses, min_size=len(hosts), max_size=len(hosts)))
        params["hostaddr"] = ",".join(addresses)
    password = draw(maybe_text)
    if secret:
        password = MARK + (password or "") + MARK
    port_given = draw(st.booleans())
    hosts = [
        HostPort(hp.host, hp.port if port_given else 5432, port_given=port_given) for hp in hosts
    ]
    if secret and draw(st.booleans()):
        params["sslpassword"] = MARK + draw(any_text_or_empty)
    return Dsn(
        draw(schemes),
        hosts,
        user=draw(maybe_text),
        password=password,
        database=draw(maybe_text),
        params=list(params.items()),
    )


def error_of(text: str) -> str | None:
    """The message of the DsnError that parsing ``text`` raises, or None if it parses."""
    try:
        parse_dsn(text)
    except DsnError as exc:
        return str(exc)
    return None


def fields(dsn: Dsn) -> tuple[object, ...]:
    return (dsn.hosts, dsn.user, dsn.password, dsn.database, dsn.params)


def for_host(dsn: Dsn, index: int) -> tuple[object, ...]:
    """What the single-host DSN for host ``index`` of ``dsn`` should hold."""
    params = []
    for key, value in dsn.params:
        if key == "hostaddr":
            value = value.split(",")[index]
        params.append((key, value))
    return ((dsn.hosts[index],), dsn.user, dsn.password, dsn.database, tuple(params))


@DSN_SETTINGS
@given(dsns())
def test_url_round_trip(dsn: Dsn) -> None:
    parsed = parse_dsn(dsn.to_url())
    assert fields(parsed) == fields(dsn)
    assert parsed.scheme == (dsn.scheme or "postgresql")


@DSN_SETTINGS
@given(dsns())
def test_conninfo_round_trip(dsn: Dsn) -> None:
    parsed = parse_dsn(dsn.to_conninfo())
    assert fields(parsed) == fields(dsn)
    assert parsed.scheme is None


@DSN_SETTINGS
@given(dsns())
def test_split_then_reserialise_each_host(dsn: Dsn) -> None:
    addrs = dsn.options().get("hostaddr", "").split(",")
    first_index: dict[tuple[HostPort, str], int] = {}
    for index, hostport in enumerate(dsn.hosts):
        first_index.setdefault((hostport, addrs[index] if len(addrs) > 1 else ""), index)
    expected = [for_host(dsn, index) for index in first_index.values()]
    for text in (dsn.to_url(), dsn.to_conninfo()):
        parts = split_dsn(text)
        assert [fields(part) for part in parts] == expected
        for part, wanted in zip(parts, expected, strict=True):
            assert fields(parse_dsn(part.to_url())) == wanted
            assert fields(parse_dsn(part.to_conninfo())) == wanted
            assert (part.host, part.port) == (part.hosts[0].host, part.hosts[0].port)


@DSN_SETTINGS
@given(dsns())
def test_with_host_gives_a_single_host_dsn(dsn: Dsn) -> None:
    moved = dsn.with_host("db9", 6543)
    assert (moved.host, moved.port) == ("db9", 6543)
    assert "hostaddr" not in moved.options()
    assert fields(parse_dsn(moved.to_url())) == fields(moved)


@DSN_SETTINGS
@given(dsns(secret=True))
def test_redacted_forms_never_show_a_secret(dsn: Dsn) -> None:
    shown = [
        dsn.redacted(),
        str(dsn),
        repr(dsn),
        dsn.to_url(redact=True),
        dsn.to_conninfo(redact=True),
        repr(split_dsn(dsn)),
        redact_dsn(dsn.to_url()),
        redact_dsn(dsn.to_conninfo()),
        redact_dsn(f"could not connect to {dsn.to_url()}: timeout"),
    ]
    for text in shown:
        assert MARK not in text
        assert MARK_ENCODED not in text
    assert MARK in dsn.to_url() or MARK_ENCODED in dsn.to_url()


@DSN_SETTINGS
@given(
    dsns(secret=True), st.sampled_from(["port=0", "port=x", "port=1,2,3,4,5", "hostaddr=1,2,3,4,5"])
)
def test_errors_never_show_a_secret(dsn: Dsn, mistake: str) -> None:
    url = dsn.to_url()
    for text in (url + ("&" if "?" in url else "?") + mistake, dsn.to_conninfo() + " " + mistake):
        message = error_of(text)
        assert message is not None, f"{mistake} was accepted"
        assert MARK not in message
        assert MARK_ENCODED not in message


# A password typed into a URL without percent-encoding it. MARK between every two characters means
# that any piece of the password longer than one character contains MARK.
raw_passwords = st.lists(st.sampled_from(NASTY + list("abcXYZ019")), min_size=1, max_size=12).map(
    lambda cs: MARK + "".join(c + MARK for c in cs)
)


@DSN_SETTINGS
@given(raw_passwords, st.sampled_from(["", "?sslmode=require", "?application_name=me@home"]))
def test_unencoded_url_password_never_shows_in_errors(password: str, query: str) -> None:
    text = f"postgresql://app:{password}@db1:5432,db2/app{query}"
    assert MARK not in redact_dsn(text)
    assert MARK not in (error_of(text) or "")


@DSN_SETTINGS
@given(raw_passwords.filter(lambda pw: not any(c in pw for c in " \t'")))
def test_unquoted_conninfo_password_never_shows_in_errors(password: str) -> None:
    text = f"host=db1,db2 password={password} dbname=app"
    assert MARK not in redact_dsn(text)
    assert MARK not in (error_of(text) or "")


@DSN_SETTINGS
@given(st.one_of(st.text(), dsns().map(Dsn.to_url), dsns().map(Dsn.to_conninfo)), st.data())
def test_parse_only_raises_dsn_error_and_redact_never_raises(
    text: str, data: st.DataObject
) -> None:
    if text and data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(text) - 1))
        text = text[:cut] + data.draw(texts(min_size=0)) + text[cut + 1 :]
    assert isinstance(redact_dsn(text), str)
    try:
        parsed = parse_dsn(text)
    except DsnError:
        return
    assert fields(parse_dsn(parsed.to_url())) == fields(parsed)
    assert fields(parse_dsn(parsed.to_conninfo())) == fields(parsed)


@DSN_SETTINGS
@given(dsns())
def test_equal_dsns_hash_equal(dsn: Dsn) -> None:
    copy = attrs.evolve(dsn)
    assert copy == dsn
    assert hash(copy) == hash(dsn)


# --- a known secret in random malformed DSNs ---

# The secret: MARK between every two characters, so that any piece of it longer than one character
# holds MARK, and nothing else in the DSNs below does.
SECRET_CHARS = list("Zq8-sécr3t x@:/?%'\\=&,")
secrets = st.lists(st.sampled_from(SECRET_CHARS), min_size=1, max_size=10).map(
    lambda cs: MARK + "".join(c + MARK for c in cs)
)
EDIT_CHARS = [*list("@:/?#&=,'\"\\ %[]\t\n"), "%2", "%zz", "%00", "password", "host=", "://", "a"]


def _conninfo_secret(secret: str, style: str) -> str:
    if style == "quoted":
        return "'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if style == "escaped":
        return "".join("\\" + c if c in " \t'\\" else c for c in secret)
    return secret  # raw: may hold spaces and quotes that break the settings


def _url_secret(secret: str, style: str) -> str:
    return quote(secret, safe="") if style == "quoted" else secret


@st.composite
def malformed_dsns(draw: st.DrawFn) -> str:
    """A DSN holding the secret as a password, an sslpassword or both, then broken by edits."""
    secret = draw(secrets)
    style = draw(st.sampled_from(["quoted", "escaped", "raw"]))
    if draw(st.booleans()):
        shown = _url_secret(secret, style)
        text = draw(
            st.sampled_from(
                [
                    f"postgresql://app:{shown}@db1:5432,db2/app?sslmode=require",
                    f"postgres://app:{shown}@[::1]:5433/app",
                    f"postgresql://db1/app?password={shown}&application_name=x",
                    f"postgresql://u:{shown}@db1/app?sslpassword={shown}",
                    f"postgresql+asyncpg://app:{shown}@db1,db2:6432/app",
                ]
            )
        )
    else:
        shown = _conninfo_secret(secret, style)
        text = draw(
            st.sampled_from(
                [
                    f"host=db1,db2 port=5432 user=app password={shown} dbname=app",
                    f"password={shown} host=db1",
                    f"host=db1 sslpassword={shown} password={shown}",
                    f"host=db1 password = {shown} sslmode=require",
                ]
            )
        )
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
        piece = draw(st.sampled_from(EDIT_CHARS))
        if kind == "insert":
            text = text[:at] + piece + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + 1 :]
        elif kind == "replace":
            text = text[:at] + piece + text[at + 1 :]
        else:
            text = text[:at]
    return text


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and every exception reachable through __cause__ and __context__."""
    found: list[BaseException] = []
    todo = [error]
    while todo:
        current = todo.pop()
        if any(current is seen for seen in found):
            continue
        found.append(current)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return found


@settings(max_examples=400, deadline=None, derandomize=True)
@given(malformed_dsns(), st.sampled_from(["parse", "split"]))
def test_a_secret_in_a_malformed_dsn_never_shows_in_the_error_or_its_chain(
    text: str, call: str
) -> None:
    try:
        if call == "parse":
            parse_dsn(text)
        else:
            split_dsn(text)
    except DsnError as error:
        for exc in _chain(error):
            for shown in (str(exc), repr(exc), *map(str, exc.args), *map(repr, exc.args)):
                assert MARK not in shown, (text, shown)
                assert MARK_ENCODED not in shown, (text, shown)
                assert MARK_ENCODED.lower() not in shown, (text, shown)
