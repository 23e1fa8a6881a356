"""Sessions that build, test, lint, demo and benchmark hasql-core and its driver plugins.

Every session installs what it needs from PyPI into its own virtual environment; nothing but Python is
assumed. ``nox -s tests`` runs the whole suite: the core tests in a plugin-free environment, then each
plugin's tests in an environment of its own (plugins need conflicting SQLAlchemy versions). Each plugin
session can also be run alone, e.g. ``nox -s "plugin(asyncpg)"``.
"""

from __future__ import annotations

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
    session.notify("chaos", ["--short"])


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
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "src", *(str(p) for p in sorted((HERE / "plugins").glob("*/src"))))


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


#: What ``nox -s chaos`` installs next to the core: both driver plugins (each brings its driver) and
#: psycopg's own libpq.
CHAOS_PACKAGES = ["./plugins/hasql-asyncpg", "./plugins/hasql-psycopg3", "psycopg[binary]"]


@nox.session
def chaos(session: nox.Session) -> None:
    """The chaos matrix: faults x drivers x repetitions against real local clusters.

    Checks invariants (bounded operations, no write acknowledged by a non-primary, no lost write,
    no read beyond max_lag, recovery times, clean close, no secret in logs) per cell and writes a
    Markdown and a JSON matrix into ``chaos-results/``; fails when any invariant is violated.
    ``nox -s chaos -- --short`` is the CI run (about 3 minutes); see ``chaos/README.md``.
    """
    session.install(".[testing]", *CHAOS_PACKAGES)
    session.run("python", "chaos/run.py", *session.posargs)
