"""Time building (until every replica streams) and tearing down a local PostgreSQL cluster.

Usage: ``python scripts/time_cluster.py [-n 5] [--replicas 2] [--bindir PATH]``. Prints the median,
minimum and maximum of each phase. The first build of a bindir also pays for the cached initdb;
one untimed warm-up round takes that out.
"""

from __future__ import annotations

import argparse
import statistics
import time

from hasql_core.testing.cluster import LocalCluster


def _row(name: str, samples: list[float]) -> str:
    ms = [sample * 1000 for sample in samples]
    return (
        f"{name:<28} median {statistics.median(ms):7.1f} ms   "
        f"min {min(ms):7.1f} ms   max {max(ms):7.1f} ms"
    )


def main() -> None:
    """Parse arguments, build and close the cluster K times, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--replicas", type=int, default=2, help="replicas (default 2)")
    parser.add_argument("--bindir", default=None, help="PostgreSQL bin directory")
    args = parser.parse_args()

    LocalCluster(args.replicas, bindir=args.bindir).start().close()  # warm-up: initdb cache
    builds: list[float] = []
    teardowns: list[float] = []
    bindir = None
    for _ in range(args.rounds):
        cluster = LocalCluster(args.replicas, bindir=args.bindir)
        start = time.perf_counter()
        cluster.start()
        built = time.perf_counter()
        bindir = cluster.bindir
        cluster.close()
        builds.append(built - start)
        teardowns.append(time.perf_counter() - built)
    print(f"1 primary + {args.replicas} replicas, {args.rounds} rounds, binaries: {bindir}")
    print(_row("build until streaming", builds))
    print(_row("teardown", teardowns))


if __name__ == "__main__":
    main()
