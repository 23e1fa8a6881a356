"""Sessions that build, test, lint, demo and benchmark hasql-core and its driver plugins.

Every session installs what it needs from PyPI into its own virtual environment; nothing but Python is
assumed. ``nox -s tests`` runs the whole suite: the core tests in a plugin-free environment, then each
plugin's tests in an environment of its own (plugins need conflicting SQLAlchemy versions). Each plugin
session can also be run alone, e.g. ``nox -s "plugin(env='asyncpg')"``.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True

HERE = Path(__file__).parent
REPORTS = HERE / ".nox-reports"
TEST_TOOLS = ["pytest>=8", "pytest-asyncio>=0.24", "hypothesis>=6.100", "pytest-timeout>=2.3"]

# One entry per plugin test environment: the distribution folder and the extra packages that
# environment pins. asyncpgsa and aiopg.sa only import with SQLAlchemy 1.x, so they get their own.
PLUGIN_ENVS: dict[str, tuple[str, list[str]]] = {
    "asyncpg": ("hasql-asyncpg", []),
    "asyncpgsa": ("hasql-asyncpg", ["asyncpgsa==0.27.1", "sqlalchemy>=1.4,<1.5"]),
    "psycopg3": ("hasql-psycopg3", ["psycopg[binary]"]),  # no system libpq needed
    "aiopg": ("hasql-aiopg", []),
    "aiopg_sa": ("hasql-aiopg", ["sqlalchemy>=1.4,<1.5"]),
    # Both dialects' libraries in each; newest SQLAlchemy 2.x, and the 2.0 series.
    "sqlalchemy": ("hasql-sqlalchemy", ["asyncpg", "psycopg[binary]"]),
    "sqlalchemy20": (
        "hasql-sqlalchemy",
        ["sqlalchemy[asyncio]==2.0.*", "asyncpg", "psycopg[binary]"],
    ),
    # Test-only: the SDK (in-memory reader), the Prometheus exporter, a driver for real clusters,
    # and rich for `hasql demo --metrics`.
    "opentelemetry": (
        "hasql-opentelemetry",
        [
            "./plugins/hasql-asyncpg",
            "opentelemetry-sdk",
            "opentelemetry-exporter-prometheus",
            "prometheus-client",
            "rich",
        ],
    ),
}


def _pytest(session: nox.Session, name: str, *paths: str) -> None:
    REPORTS.mkdir(exist_ok=True)
    session.run(
        "pytest",
        f"--junitxml={REPORTS / (name + '.xml')}",
        *paths,
        *session.posargs,
    )


@nox.session
def core(session: nox.Session) -> None:
    """Core tests, in an environment with no driver plugin installed."""
    # psycopg's own libpq, test-only: the DSN tests compare hasql_core.dsn with libpq itself.
    session.install(".[testing]", *TEST_TOOLS, "psycopg[binary]")
    session.install("./tests/fixture_packages/hasql-policy-example")
    _pytest(session, "core", "tests", "--ignore=tests/cli")


@nox.session
def cli(session: nox.Session) -> None:
    """Tests of the ``hasql`` command (status, watch, demo) against real clusters, via asyncpg."""
    session.install(".[testing,cli]", "./plugins/hasql-asyncpg", *TEST_TOOLS)
    _pytest(session, "cli", "tests/cli", "-p", "no:cacheprovider")


@nox.session
@nox.parametrize("env", list(PLUGIN_ENVS))
def plugin(session: nox.Session, env: str) -> None:
    """One driver plugin's tests (and the conformance suite) in its own environment."""
    folder, extra = PLUGIN_ENVS[env]
    plugin_dir = HERE / "plugins" / folder
    tests_dir = plugin_dir / "tests"
    if not any(tests_dir.glob("test_*.py")):
        session.skip(f"{folder} has no tests yet")
    session.install(".[testing]", f"./plugins/{folder}", *extra, *TEST_TOOLS)
    # The plugin's tests read the driver name they exercise from HASQL_TEST_DRIVER.
    session.env["HASQL_TEST_DRIVER"] = env
    _pytest(session, f"plugin-{env}", str(tests_dir), "-p", "no:cacheprovider")


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The whole suite: core, then every plugin environment, each in its own venv."""
    session.notify("core")
    session.notify("cli")
    for env in PLUGIN_ENVS:
        session.notify(f"plugin(env='{env}')")
    session.notify(f"chaos(env='{CHAOS_CI_ENV}')", CHAOS_CI_ARGS)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy --strict over the core and every plugin."""
    session.install(
        "ruff>=0.6",
        "mypy>=1.11",
        ".[testing,cli]",
        *TEST_TOOLS,
        *(f"./plugins/{folder}" for folder, _ in {v[0]: v for v in PLUGIN_ENVS.values()}.values()),
        "asyncpg",
        "psycopg[binary]",
        "psycopg-pool",
    )
    session.install("./tests/fixture_packages/hasql-policy-example")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "src", *(str(p) for p in sorted((HERE / "plugins").glob("*/src"))))
    # Tests too: strictly, except that test functions may leave the parameters pytest injects
    # unannotated, and that a plugin's test-only packages are not installed here. Each tests
    # folder is its own run: plugin test modules are top-level modules with clashing names.
    relaxed = [
        "--allow-untyped-defs",
        "--allow-incomplete-defs",
        "--allow-untyped-calls",
        "--ignore-missing-imports",
    ]
    session.run("mypy", *relaxed, "tests")
    for tests_dir in sorted((HERE / "plugins").glob("*/tests")):
        session.run("mypy", *relaxed, str(tests_dir.relative_to(HERE)))
    session.run("mypy", "chaos")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: a real local cluster failing over under load, shown live."""
    session.install(".[testing,cli]", "./plugins/hasql-asyncpg")
    session.run("hasql", "demo", *session.posargs)


#: What ``nox -s bench`` measures against: hasql 0.10 from PyPI, the raw drivers, and matplotlib for
#: the failover chart. Profilers come along for looking into a missed target.
BENCH_PACKAGES = [
    "hasql==0.10.0",
    "asyncpg",
    "psycopg[binary]",
    "psycopg-pool",
    "matplotlib",
    "py-spy",
    "pyinstrument",
]


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against the raw drivers and hasql 0.10, measured in one run.

    Writes a Markdown report, a JSON file and a failover chart into ``bench-results/`` (see
    ``bench/README.md``). ``nox -s bench -- --quick`` is a smoke run of about two minutes.
    """
    session.install(
        ".[testing]", "./plugins/hasql-asyncpg", "./plugins/hasql-psycopg3", *BENCH_PACKAGES
    )
    session.run("python", "bench/run.py", *session.posargs)


#: The chaos matrix's environments: the matrix columns (drivers; for asyncsqlalchemy also the
#: dialect) each one runs, and what it installs next to the core. aiopg.sa imports only with
#: SQLAlchemy 1.3/1.4 while hasql-sqlalchemy needs 2.x, so aiopg_sa has an environment of its own.
CHAOS_ENVS: dict[str, tuple[list[str], list[str]]] = {
    "main": (
        ["asyncpg", "psycopg3", "aiopg", "asyncsqlalchemy", "asyncsqlalchemy+psycopg"],
        [
            "./plugins/hasql-asyncpg",
            "./plugins/hasql-psycopg3",
            "psycopg[binary]",
            "./plugins/hasql-aiopg",
            "./plugins/hasql-sqlalchemy",
        ],
    ),
    "aiopg_sa": (["aiopg_sa"], ["./plugins/hasql-aiopg[sa]", "sqlalchemy>=1.4,<1.5"]),
}
#: The CI run (``tests`` notifies it): short runs of asyncpg and psycopg3 only, about 3 minutes.
#: Every further column adds about 1.2 minutes (11 short cells); the full run covers them all.
CHAOS_CI_ENV = "main"
CHAOS_CI_ARGS = ["--short", "--driver", "asyncpg", "--driver", "psycopg3"]
#: One id for the chaos sessions of one nox run: each environment writes its part under it, and
#: chaos/run.py combines the parts into one matrix (chaos-results/latest.md).
CHAOS_SERIES = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _chaos_args(env: str, posargs: list[str]) -> list[str] | None:
    """``posargs`` for chaos/run.py in ``env``: only the ``--driver`` options that run there (every
    driver of ``env`` when none is given); None when none of the drivers asked for runs there."""
    known = {name for names, _ in CHAOS_ENVS.values() for name in names}
    mine = CHAOS_ENVS[env][0]
    asked: list[str] = []
    rest: list[str] = []
    args = iter(posargs)
    for arg in args:
        if arg == "--driver":
            asked.append(next(args, ""))
        elif arg.startswith("--driver="):
            asked.append(arg.partition("=")[2])
        else:
            rest.append(arg)
    unknown = [name for name in asked if name not in known]
    if unknown:
        raise ValueError(f"unknown chaos driver(s) {unknown}; known: {sorted(known)}")
    if "--list" in rest:
        return rest if env == next(iter(CHAOS_ENVS)) else None
    wanted = [name for name in asked if name in mine] if asked else mine
    if not wanted:
        return None
    return [*rest, *(x for name in wanted for x in ("--driver", name))]


@nox.session
@nox.parametrize("env", list(CHAOS_ENVS))
def chaos(session: nox.Session, env: str) -> None:
    """The chaos matrix: faults x drivers x repetitions against real local clusters.

    Checks invariants (bounded operations, no write acknowledged by a non-primary, no lost write,
    no read beyond max_lag, recovery times, clean close, no secret in logs) per cell and writes a
    Markdown and a JSON matrix into ``chaos-results/``; fails when any invariant is violated.
    ``nox -s chaos`` runs both environments (every driver); ``-- --driver NAME`` runs only the
    environment(s) holding the named drivers. The ``tests`` session runs ``--short`` for asyncpg
    and psycopg3 (about 3 minutes); see ``chaos/README.md``.
    """
    try:
        args = _chaos_args(env, list(session.posargs))
    except ValueError as error:
        session.error(str(error))
    if args is None:
        session.skip(f"no driver asked for runs in the {env} environment")
        return
    session.install(".[testing]", *CHAOS_ENVS[env][1])
    series = ["--series", CHAOS_SERIES, "--label", env]
    session.run("python", "chaos/run.py", *args, *series)
