"""The drop folders as the file sensors see them: a bad entry never blocks the others, a file
is read only once it looked the same twice an interval apart, an oversized file is refused
unread, a 255-byte name goes all the way through, and reports never carry a live formula.

Real files under tmp_path, real sensor evaluations (`build_sensor_context`), real runs of
`submit_orders` against the simulator."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from smm_pipeline.config import ConfigError, PipelineConfig, parse_settings
from smm_pipeline.intake.csv_files import file_hash
from smm_pipeline.intake.reports import errors_report_path, results_report_path
from smm_pipeline.lib.file_sensors import (
    LOOK_GAP_SECONDS,
    SENSOR_INTERVAL_SECONDS,
    cursor_seen_earlier,
)
from smm_pipeline.operations.inbox import (
    Observation,
    Unreadable,
    first_look,
    free_target,
    is_complete,
    read_observed,
    scan,
)
from smm_pipeline_tests.conftest import make_pipeline, panel_yaml
from smm_pipeline_tests.dagster_helpers import event_texts, look_twice, run_requested, tick

GOOD = "service,link,quantity\n1,https://x.com/a,100\n"
CJK_NAME = "订" * 80 + ".csv"  # 244 bytes in UTF-8
FULL_NAME = "订" * 83 + "ab.csv"  # 255 bytes: the longest name a file system takes


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """A pipeline whose panel is never called: the file sensors need no panel."""
    return make_pipeline(
        tmp_path,
        monkeypatch,
        [panel_yaml("sim", "http://127.0.0.1:9/api/v2")],
        "pipeline:\n  max_file_bytes: 1000\n",
    )


def rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def launched_files(result) -> list[str]:
    return sorted(r.tags["smm/file"] for r in result.run_requests)


# ------------------------------------------------------------------ completeness


def _obs(path: Path) -> Observation:
    (found,) = scan(path.parent).files
    return found


def test_no_file_is_complete_at_first_sight_however_old_its_mtime(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(GOOD, encoding="utf-8")
    os.utime(path, (1_600_000_000, 1_600_000_000))  # cp -p of a file written years ago
    obs = _obs(path)
    assert not is_complete(obs, None, gap=LOOK_GAP_SECONDS)
    seen = first_look(obs, None, now=1000.0)
    assert seen == [*obs.stamp, 1000.0]
    # Too soon: a writer pausing 10 s mid-file is not taken for finished.
    assert not is_complete(obs, seen, now=1000.0 + LOOK_GAP_SECONDS - 0.5, gap=LOOK_GAP_SECONDS)
    assert is_complete(obs, seen, now=1000.0 + LOOK_GAP_SECONDS, gap=LOOK_GAP_SECONDS)
    # A look in between keeps the time of the first look that saw this stamp.
    assert first_look(obs, seen, now=1005.0) == seen


def test_a_file_that_changes_between_looks_starts_its_wait_again(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(GOOD, encoding="utf-8")
    seen = first_look(_obs(path), None, now=1000.0)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("1,https://x.com/b,100\n")
    grown = _obs(path)
    assert not is_complete(grown, seen, now=2000.0, gap=LOOK_GAP_SECONDS)
    assert first_look(grown, seen, now=2000.0) == [*grown.stamp, 2000.0]


def test_old_or_odd_cursor_entries_only_restart_the_wait(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(GOOD, encoding="utf-8")
    obs = _obs(path)
    for entry in (obs.stamp, [*obs.stamp, "a run key"], [*obs.stamp, True], "junk", {}, None):
        assert not is_complete(obs, entry, now=1e12, gap=LOOK_GAP_SECONDS)  # type: ignore[arg-type]
        assert first_look(obs, entry, now=5.0) == [*obs.stamp, 5.0]  # type: ignore[arg-type]
    # A first look "in the future" (the clock was set back) is not trusted either.
    assert first_look(obs, [*obs.stamp, 9e9], now=5.0) == [*obs.stamp, 5.0]


def test_the_sensor_launches_only_after_two_identical_looks_an_interval_apart(
    offline, instance
) -> None:
    path = offline.drop("orders", "x.csv", GOOD)
    defs = offline.defs()
    first = tick(defs, "order_csv_sensor", instance)
    assert not first.run_requests
    assert first.skip_message == "waiting for x.csv to finish being written"
    [entry] = json.loads(first.cursor).values()
    assert abs(entry[-1] - time.time()) < 60  # the first look's wall time
    soon = tick(defs, "order_csv_sensor", instance, cursor=first.cursor)  # seconds later
    assert not soon.run_requests
    assert soon.skip_message == "waiting for x.csv to finish being written"
    later = cursor_seen_earlier(soon.cursor, SENSOR_INTERVAL_SECONDS)
    with path.open("a", encoding="utf-8") as handle:  # the writer had only paused
        handle.write("1,https://x.com/b,100\n")
    grown = tick(defs, "order_csv_sensor", instance, cursor=later)
    assert not grown.run_requests
    done = tick(defs, "order_csv_sensor", instance, cursor=cursor_seen_earlier(grown.cursor, 15))
    [request] = done.run_requests
    assert request.tags["smm/rows"] == "2"
    config = request.run_config["ops"]["validate_order_file"]["config"]
    assert config["file_hash"] == file_hash(path.read_bytes())


def test_an_old_cursor_does_not_crash_the_sensor(offline, instance) -> None:
    path = offline.drop("orders", "x.csv", GOOD)
    launched = offline.drop("orders", "done.csv", GOOD + "1,https://x.com/c,100\n")
    defs = offline.defs()
    looked = {o.name: o.stamp for o in scan(path.parent).files}
    old = json.dumps(
        {"x.csv": looked["x.csv"], "done.csv": [*looked["done.csv"], "orders:abc:done.csv:1:2"]}
    )
    result = tick(defs, "order_csv_sensor", instance, cursor=old)
    assert not result.run_requests  # x.csv's wait restarts; done.csv was launched already
    assert result.skip_message == (
        "waiting for x.csv to finish being written; 1 file(s) in inbox/orders/ already have runs"
    )
    assert launched.exists()
    for junk in ("not json", "[1, 2]", '"text"'):
        assert tick(defs, "order_csv_sensor", instance, cursor=junk).skip_message.startswith(
            "waiting for"
        )


# ------------------------------------------------------------------ bad entries


def _make_bad_entries(inbox: Path) -> None:
    (inbox / "folder.csv").mkdir()
    (inbox / "dangling.csv").symlink_to(inbox / "nowhere.csv")
    (inbox / "link-to-dir.csv").symlink_to(inbox / "folder.csv")
    os.mkfifo(inbox / "pipe.csv")  # root reads anything; a FIFO would block a plain read
    (inbox / "notes.txt").write_text("ignored: not a CSV")
    (inbox / "upload.csv.part").write_text("ignored: still downloading")


def test_scan_names_every_unusable_entry_with_its_reason(tmp_path: Path) -> None:
    _make_bad_entries(tmp_path)
    (tmp_path / "good.csv").write_text(GOOD)
    os.close(os.open(os.fsencode(tmp_path) + b"/bad-\xff.csv", os.O_CREAT | os.O_WRONLY))
    listing = scan(tmp_path)
    assert [o.name for o in listing.files] == ["good.csv"]
    assert [str(u) for u in listing.unusable] == [
        "bad-\ufffd.csv: its name is not valid UTF-8; rename the file",
        "dangling.csv: is a symbolic link; put the file itself in the inbox",
        "folder.csv: is a folder, not a file",
        "link-to-dir.csv: is a symbolic link; put the file itself in the inbox",
        "pipe.csv: is a named pipe (FIFO), not a file",
    ]
    assert scan(tmp_path / "missing").files == []


def test_a_file_gone_or_swapped_after_the_look_is_refused_by_the_read(tmp_path: Path) -> None:
    for name in ("gone.csv", "fifo.csv", "link.csv", "grown.csv"):
        (tmp_path / name).write_text(GOOD)
    looked = {o.name: o for o in scan(tmp_path).files}
    (tmp_path / "gone.csv").unlink()
    (tmp_path / "fifo.csv").unlink()
    os.mkfifo(tmp_path / "fifo.csv")
    (tmp_path / "link.csv").unlink()
    (tmp_path / "link.csv").symlink_to(tmp_path / "grown.csv")
    with (tmp_path / "grown.csv").open("a") as handle:
        handle.write("1,https://x.com/b,100\n")
    reasons = {}
    for name, obs in looked.items():
        with pytest.raises(Unreadable) as caught:
            read_observed(tmp_path, obs)
        reasons[name] = (caught.value.reason, caught.value.changed)
    assert reasons == {
        "gone.csv": ("disappeared before it could be read", False),
        "fifo.csv": ("is a named pipe (FIFO), not a file", False),  # and it did not block
        "link.csv": ("is a symbolic link; put the file itself in the inbox", False),
        "grown.csv": ("changed since the last look", True),
    }
    (tmp_path / "ok.csv").write_text(GOOD)
    ok = next(o for o in scan(tmp_path).files if o.name == "ok.csv")
    assert read_observed(tmp_path, ok) == GOOD.encode()


def test_bad_entries_are_skipped_with_reasons_and_never_block_good_files(
    offline, instance, capfd
) -> None:
    inbox = offline.folders.inbox("orders")
    _make_bad_entries(inbox)
    offline.drop("orders", "good.csv", GOOD)
    offline.drop("orders", "also-good.csv", GOOD + "1,https://x.com/b,100\n")
    defs = offline.defs()
    first = tick(defs, "order_csv_sensor", instance)
    assert not first.run_requests
    assert first.skip_message == (
        "skipped dangling.csv: is a symbolic link; put the file itself in the inbox; "
        "skipped folder.csv: is a folder, not a file; "
        "skipped link-to-dir.csv: is a symbolic link; put the file itself in the inbox; "
        "skipped pipe.csv: is a named pipe (FIFO), not a file; "
        "waiting for good.csv, also-good.csv to finish being written"  # oldest first
    )
    capfd.readouterr()
    second = tick(defs, "order_csv_sensor", instance, cursor_seen_earlier(first.cursor, 15))
    assert launched_files(second) == ["also-good.csv", "good.csv"]
    logged = capfd.readouterr().err  # the tick's log: each reason, launches or not
    for line in (
        "skipped folder.csv: is a folder, not a file",
        "skipped dangling.csv: is a symbolic link",
        "skipped pipe.csv: is a named pipe (FIFO), not a file",
    ):
        assert line in logged
    third = tick(defs, "order_csv_sensor", instance, second.cursor)
    assert not third.run_requests
    assert "skipped folder.csv: is a folder, not a file" in third.skip_message
    assert third.skip_message.endswith("2 file(s) in inbox/orders/ already have runs")


# ------------------------------------------------------------------ size limit


def test_max_file_bytes_defaults_and_is_validated() -> None:
    doc = {"panels": [{"name": "p", "url": "https://p.example/api/v2", "key_env": "P_KEY"}]}
    assert parse_settings(doc, check_keys=False).pipeline.max_file_bytes == 50_000_000
    assert PipelineConfig().max_file_bytes == 50_000_000
    limited = parse_settings({**doc, "pipeline": {"max_file_bytes": 1_000}}, check_keys=False)
    assert limited.pipeline.max_file_bytes == 1_000
    for bad, message in (
        (0, "pipeline: field max_file_bytes must be a positive number"),
        ("50MB", "pipeline: field max_file_bytes must be a positive number"),
        (1.5, r"pipeline: field max_file_bytes must be a whole number of bytes \(like 50000000\)"),
    ):
        with pytest.raises(ConfigError, match=f"^{message}$"):
            parse_settings({**doc, "pipeline": {"max_file_bytes": bad}}, check_keys=False)


def test_a_file_over_the_limit_is_refused_unread_and_the_others_still_launch(
    offline, instance
) -> None:
    big = offline.drop("orders", "big.csv", GOOD + "1,https://x.com/b,100\n" * 60)
    assert big.stat().st_size > 1000  # max_file_bytes: 1000
    offline.drop("orders", "small.csv", GOOD)
    defs = offline.defs()
    first = tick(defs, "order_csv_sensor", instance)
    assert not first.run_requests and big.exists()  # not complete yet: not refused yet
    second = tick(defs, "order_csv_sensor", instance, cursor_seen_earlier(first.cursor, 15))
    assert launched_files(second) == ["small.csv"]
    rejected = offline.folders.rejected
    assert not big.exists() and (rejected / "big.csv").exists()
    [header, line] = rows(rejected / "big.errors.csv")
    assert header == ["row", "column", "message"]
    assert line[:2] == ["0", "file"]
    size = (rejected / "big.csv").stat().st_size
    assert line[2] == (
        f"the file is {size:,} bytes, over the limit of 1,000 bytes (pipeline.max_file_bytes "
        "in panels.yaml); it was not read: split it into smaller files"
    )
    # Alone, the refusal is the tick's skip message.
    offline.drop("orders", "big.csv", GOOD * 40)
    alone = look_twice(defs, "order_csv_sensor", instance, second.cursor)
    assert not alone.run_requests
    assert alone.skip_message.startswith(
        "refused big.csv: 1,760 bytes is over the limit of 1,000 (pipeline.max_file_bytes); "
        "moved to rejected/ beside big."
    )
    assert len(list(rejected.glob("big*.errors.csv"))) == 2  # the first refusal kept


# ------------------------------------------------------------------ long names


def test_names_derived_from_a_255_byte_name_fit_and_stay_unique(tmp_path: Path) -> None:
    assert len(CJK_NAME.encode()) == 244 and len(FULL_NAME.encode()) == 255
    cjk = results_report_path(tmp_path, CJK_NAME)
    assert cjk.name == "订" * 80 + ".results.csv"  # 252 bytes: fits as it is
    full = results_report_path(tmp_path, FULL_NAME)
    errors = errors_report_path(tmp_path, FULL_NAME)
    for path in (full, errors):
        assert len(path.name.encode()) <= 255
        assert path.name.startswith("订" * 70)
    assert full.name.endswith(".results.csv") and errors.name.endswith(".errors.csv")
    other = results_report_path(tmp_path, "订" * 83 + "ac.csv")
    assert other != full  # a cut stem keeps a hash of the whole one
    assert results_report_path(tmp_path, FULL_NAME) == full  # and is the same every time
    (tmp_path / FULL_NAME).write_text("x")
    clash = free_target(tmp_path, FULL_NAME)
    assert clash != tmp_path / FULL_NAME and len(clash.name.encode()) <= 255
    assert clash.suffix == ".csv"
    assert len(results_report_path(tmp_path, clash.name).name.encode()) <= 255


@pytest.mark.parametrize("name", [CJK_NAME, FULL_NAME], ids=["80-cjk", "255-bytes"])
def test_a_long_name_goes_through_sensor_run_and_report(pipeline, sim, instance, name) -> None:
    offline_name_bytes = len(name.encode())
    assert offline_name_bytes in (244, 255)
    defs = pipeline.defs()
    pipeline.drop("orders", name, GOOD)
    ticked = look_twice(defs, "order_csv_sensor", instance)
    [request] = ticked.run_requests
    assert request.tags["smm/file"] == name
    result = run_requested(defs, request, instance, "submit_orders")
    assert result.success, event_texts(result)
    processed = pipeline.folders.processed
    assert (processed / name).read_text() == GOOD
    report = results_report_path(processed, name)
    [header, line] = rows(report)
    assert header[:5] == ["row", "ref", "panel", "service", "order_id"]
    assert line[0] == "1" and line[-1] == "submitted" and line[4].isdigit()
    assert len(sim.orders()) == 1

    # The same name again (other content): a time-stamped name and report, both within 255.
    pipeline.drop("orders", name, GOOD.replace("/a,", "/b,"))
    again = look_twice(defs, "order_csv_sensor", instance, ticked.cursor)
    [request] = again.run_requests
    assert run_requested(defs, request, instance, "submit_orders").success
    assert len(list(processed.iterdir())) == 4
    assert all(len(p.name.encode()) <= 255 for p in processed.iterdir())
    assert len(sim.orders()) == 2

    # Rejected: errors.csv beside it.
    pipeline.drop("orders", name, "service,link,quantity\n1,ftp://x.com/a,100\n")
    bad = look_twice(defs, "order_csv_sensor", instance, again.cursor)
    failed = run_requested(defs, bad.run_requests[0], instance, "submit_orders")
    assert not failed.success
    rejected = pipeline.folders.rejected
    assert (rejected / name).exists()
    [_, error] = rows(errors_report_path(rejected, name))
    assert error[:2] == ["1", "link"]
    assert len(sim.orders()) == 2


# ------------------------------------------------------------------ formula injection


def test_user_text_in_reports_is_never_a_live_formula(pipeline, sim, instance) -> None:
    defs = pipeline.defs()
    content = (
        "service,link,quantity,ref,campaign\n"
        '1,https://x.com/a,100,"=HYPERLINK(""http://evil"",""x"")",c\n'
        "1,https://x.com/b,100,@SUM(A1),c\n"
        "1,https://x.com/c,100,-2+3,c\n"
        "1,https://x.com/d,100,plain-ref,c\n"
    )
    pipeline.drop("orders", "=cmd.csv", content)
    [request] = look_twice(defs, "order_csv_sensor", instance).run_requests
    assert run_requested(defs, request, instance, "submit_orders").success
    table = rows(results_report_path(pipeline.folders.processed, "=cmd.csv"))
    refs = [line[1] for line in table[1:]]
    assert refs == ['\'=HYPERLINK("http://evil","x")', "'@SUM(A1)", "'-2+3", "plain-ref"]
    for line in table[1:]:
        assert line[0].isdigit() and line[4].isdigit()  # row and order id untouched
        assert not line[6].startswith("'")  # our own cost column is a plain number
    # errors.csv: a user's column name shown back is neutralised too.
    pipeline.drop("orders", "cols.csv", "service,link,quantity,+cmd\n1,https://x.com/e,100,x\n")
    [request] = look_twice(defs, "order_csv_sensor", instance).run_requests
    assert not run_requested(defs, request, instance, "submit_orders").success
    errors = rows(errors_report_path(pipeline.folders.rejected, "cols.csv"))
    assert [line[1] for line in errors[1:]] == ["'+cmd"]
