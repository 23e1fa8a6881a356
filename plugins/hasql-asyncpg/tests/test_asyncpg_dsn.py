"""How a single-host Dsn becomes asyncpg connection arguments (no server needed)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hasql_asyncpg.driver import connect_arguments, merge_options

from hasql_core.dsn import split_dsn
from hasql_core.errors import DsnError


def args_of(text: str) -> dict[str, Any]:
    (dsn,) = split_dsn(text)
    return connect_arguments(dsn)


def test_url_fields_become_keyword_arguments() -> None:
    assert args_of("postgresql://app:s%40cret@db1:6543/shop") == {
        "host": "db1",
        "port": 6543,
        "user": "app",
        "password": "s@cret",
        "database": "shop",
    }


def test_missing_fields_are_left_to_asyncpg_defaults() -> None:
    assert args_of("postgresql://db1") == {"host": "db1", "port": 5432}


def test_unix_socket_directory_is_passed_as_host() -> None:
    args = args_of("host=/run/pg port=5433 user=app dbname=shop")
    assert args == {"host": "/run/pg", "port": 5433, "user": "app", "database": "shop"}


def test_ipv6_host_is_passed_without_brackets() -> None:
    assert args_of("postgresql://[::1]:5433/shop")["host"] == "::1"


def test_hostaddr_is_the_address_connected_to() -> None:
    args = args_of("host=db.example port=5432 hostaddr=10.1.2.3 dbname=shop")
    assert args["host"] == "10.1.2.3"
    assert "server_settings" not in args  # hostaddr is not sent to the server


def test_abstract_socket_is_refused_with_a_clear_error() -> None:
    with pytest.raises(DsnError, match="abstract Unix socket"):
        args_of("host=@pgsock port=5432")


def test_ssl_parameters_go_to_asyncpg_in_a_dsn_of_their_own() -> None:
    args = args_of(
        "postgresql://app@db1/shop?sslmode=verify-full&sslrootcert=/etc/ca.pem"
        "&sslcert=/etc/c.pem&sslkey=/etc/k.pem&application_name=web"
    )
    assert args["dsn"] == (
        "postgresql://?sslcert=%2Fetc%2Fc.pem&sslkey=%2Fetc%2Fk.pem"
        "&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem"
    )
    assert args["server_settings"] == {"application_name": "web"}
    assert args["host"] == "db1"


def test_server_settings_and_options_go_to_server_settings() -> None:
    args = args_of(
        "postgresql://db1/shop?application_name=web&options=-c%20statement_timeout%3D5s"
        "&search_path=app"
    )
    assert args["server_settings"] == {
        "application_name": "web",
        "options": "-c statement_timeout=5s",
        "search_path": "app",
    }


def test_client_only_parameters_are_not_sent_to_the_server() -> None:
    args = args_of(
        "postgresql://db1/shop?target_session_attrs=read-write&keepalives=1"
        "&keepalives_idle=30&channel_binding=prefer&gssencmode=disable&load_balance_hosts=random"
    )
    assert args == {"host": "db1", "port": 5432, "database": "shop"}


def test_connect_timeout_becomes_asyncpg_timeout() -> None:
    assert args_of("postgresql://db1?connect_timeout=7")["timeout"] == 7.0
    assert "timeout" not in args_of("postgresql://db1?connect_timeout=0")  # 0: wait forever


def test_connect_timeout_must_be_a_number() -> None:
    with pytest.raises(DsnError, match="connect_timeout"):
        args_of("postgresql://db1?connect_timeout=soon")


def test_fallback_application_name_is_used_only_without_application_name() -> None:
    only_fallback = args_of("postgresql://db1?fallback_application_name=fb")
    assert only_fallback["server_settings"] == {"application_name": "fb"}
    both = args_of("postgresql://db1?fallback_application_name=fb&application_name=app")
    assert both["server_settings"] == {"application_name": "app"}


def test_user_options_win_and_server_settings_merge_without_mutation() -> None:
    derived = args_of("postgresql://db1/shop?application_name=dsn&search_path=a&sslmode=require")
    user: dict[str, Any] = {
        "min_size": 2,
        "server_settings": {"application_name": "user", "work_mem": "8MB"},
        "database": "other",
    }
    before_user, before_derived = copy.deepcopy(user), copy.deepcopy(derived)
    merged = merge_options(derived, user)
    assert merged["server_settings"] == {
        "application_name": "user",
        "search_path": "a",
        "work_mem": "8MB",
    }
    assert merged["database"] == "other"
    assert merged["min_size"] == 2
    assert merged["dsn"] == "postgresql://?sslmode=require"
    assert user == before_user
    assert derived == before_derived
    assert merged["server_settings"] is not user["server_settings"]
