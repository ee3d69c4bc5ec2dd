"""`make bench`: every benchmark, one after another; JSON lines and tables on stdout."""

from __future__ import annotations

import sys

from benchmarks import (
    bench_catalog,
    bench_intake,
    bench_polling,
    bench_postgres,
    bench_side_by_side,
    bench_submit,
)


def main() -> int:
    # bench_side_by_side last: it runs the real daemon for about 20 minutes.
    benches = (bench_catalog, bench_intake, bench_submit, bench_polling, bench_postgres)
    for bench in (*benches, bench_side_by_side):
        bench.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
