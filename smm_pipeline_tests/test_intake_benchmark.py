"""The intake benchmark runs and reports what it measured (its speed is not asserted here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_intake.py"


def test_bench_intake_prints_a_json_line_and_a_table_line(capsys: pytest.CaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location("bench_intake", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--rows", "2000", "--repeat", "1", "--no-memory"]) == 0
    json_line, table_line = capsys.readouterr().out.splitlines()
    record = json.loads(json_line)
    assert record["benchmark"] == "csv_intake" and record["rows"] == 2000
    assert record["seconds"] > 0 and record["rows_per_s"] > 0
    assert table_line.split()[:3] == ["csv_intake", "2000", "rows"]
