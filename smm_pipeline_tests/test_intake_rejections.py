"""A bad-input corpus through the real submission path: each bad file is refused with a clear
error, moved to rejected/ with its errors.csv, and the simulator receives no `add` at all."""

from __future__ import annotations

import pytest

from smm_pipeline.intake.csv_files import file_hash
from smm_pipeline.operations.catalog import refresh_catalog
from smm_pipeline.operations.inbox import FileRejected
from smm_pipeline.operations.order_files import prepare_order_file
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.warehouse.db import connect

BAD_FILES = [
    ("unknown column", "service,link,quantiy\n1,https://x.com/a,100\n", "unknown column 'quantiy'"),
    (
        "missing service column",
        "link,quantity\nhttps://x.com/a,100\n",
        "missing required column 'service'",
    ),
    ("empty file", "", "the file is empty"),
    ("header only", "service,link,quantity\n", "no data rows"),
    (
        "not utf-8",
        b"service,link,quantity\n1,https://x.com/\xe9,100\n",
        "the file is not UTF-8: byte 0xE9",
    ),
    (
        "ragged row",
        "service,link,quantity\n1,https://x.com/a,100,7\n",
        "this row has 4 cells but the header has 3 columns",
    ),
    (
        "duplicate column",
        "service,link,link,quantity\n1,https://x.com/a,https://x.com/a,100\n",
        "link",
    ),
    (
        "unknown service",
        "service,link,quantity\n999,https://x.com/a,100\n",
        "service 999 does not exist on panel 'sim'",
    ),
    (
        "inactive service",
        "service,link,quantity\n3,https://x.com/a,100\n",
        "service 3 on panel 'sim' is no longer active",
    ),
    ("service not a number", "service,link,quantity\nabc,https://x.com/a,100\n", "service"),
    ("missing link", "service,link,quantity\n1,,100\n", "link"),
    (
        "ftp link",
        "service,link,quantity\n1,ftp://x.com/a,100\n",
        "link must be an http(s) URL with a host, got 'ftp://x.com/a'",
    ),
    ("link without host", "service,link,quantity\n1,https://,100\n", "link"),
    (
        "quantity below min",
        "service,link,quantity\n1,https://x.com/a,10\n",
        "quantity 10 below the minimum 50 of service 1",
    ),
    (
        "quantity above max",
        "service,link,quantity\n1,https://x.com/a,20000\n",
        "quantity 20000 above the maximum 10000 of service 1",
    ),
    ("quantity not a number", "service,link,quantity\n1,https://x.com/a,lots\n", "quantity"),
    ("negative quantity", "service,link,quantity\n1,https://x.com/a,-5\n", "quantity"),
    ("missing quantity", "service,link,quantity\n1,https://x.com/a,\n", "quantity"),
    ("runs zero", "service,link,quantity,runs,interval\n1,https://x.com/a,100,0,10\n", "runs"),
    (
        "interval negative",
        "service,link,quantity,runs,interval\n1,https://x.com/a,100,2,-1\n",
        "interval",
    ),
    ("too few comment lines", 'service,link,comments\n4,https://x.com/a,"one\ntwo"\n', "comments"),
    ("missing comments", "service,link,comments\n4,https://x.com/a,\n", "comments"),
    ("missing usernames", "service,link,quantity,usernames\n6,https://x.com/a,100,\n", "usernames"),
    ("missing keywords", "service,link,quantity,keywords\n29,https://x.com/a,1000,\n", "keywords"),
    ("missing groups", "service,link,quantity,groups\n28,https://t.me/a,100,\n", "groups"),
    (
        "missing answer number",
        "service,link,quantity,answer_number\n24,https://x.com/a,100,\n",
        "answer_number",
    ),
    ("bad delay", "service,username,min,max,delay\n14,someone,50,100,7\n", "delay"),
    (
        "bad expiry",
        "service,username,min,max,delay,expiry\n14,someone,50,100,20,31/02/2030\n",
        "expiry",
    ),
    (
        "past expiry",
        "service,username,min,max,delay,expiry\n14,someone,50,100,20,2001-01-01\n",
        "expiry",
    ),
    ("min above max", "service,username,min,max,delay\n14,someone,500,100,20\n", "min"),
    (
        "field the type does not take",
        "service,link,quantity,comments\n1,https://x.com/a,100,hello\n",
        "comments",
    ),
    (
        "duplicate ref",
        "service,link,quantity,ref\n1,https://x.com/a,100,r\n1,https://x.com/b,100,r\n",
        "ref",
    ),
    (
        "identical rows without ref",
        "service,link,quantity\n1,https://x.com/a,100\n1,https://x.com/a,100\n",
        "this row is identical to row 1",
    ),
    (
        "unknown panel",
        "panel,service,link,quantity\nnope,1,https://x.com/a,100\n",
        "unknown panel 'nope'",
    ),
    (
        "over max_batch_spend",
        "service,link,quantity\n22,https://x.com/a,20000\n22,https://x.com/b,20000\n",
        "more than its max_batch_spend 500",
    ),
    (
        "over the balance",
        "service,link,quantity\n22,https://x.com/a,6000\n",
        "more than the balance 100",
    ),
]


@pytest.fixture
def ready(pipeline, sim):
    """A synced catalog in which service 3 has since vanished, and a balance of 100."""
    config = pipeline.settings.panel("sim")
    with PanelClient(config, config.api_key()) as client:
        refresh_catalog(client, pipeline.db_path)
        sim.remove_service(3)
        refresh_catalog(client, pipeline.db_path)
    sim.set_balance("100.00")
    sim.reset_stats()
    return pipeline


def test_the_corpus_is_large_and_distinct():
    assert len(BAD_FILES) >= 30
    assert len({name for name, _, _ in BAD_FILES}) == len(BAD_FILES)
    assert len({content for _, content, _ in BAD_FILES}) == len(BAD_FILES)


@pytest.mark.parametrize(("name", "content", "expected"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused_and_nothing_is_sent(ready, sim, name, content, expected):
    data = content if isinstance(content, bytes) else content.encode()
    ready.drop("orders", "bad.csv", data)
    config = ready.settings.panel("sim")
    with PanelClient(config, config.api_key()) as client, pytest.raises(FileRejected) as info:
        prepare_order_file(
            ready.settings, ready.db_path, "bad.csv", file_hash(data), {"sim": client}
        )
    messages = " | ".join(e.message for e in info.value.errors)
    assert expected in messages
    assert sim.stats()["calls"].get("add", 0) == 0
    assert (ready.folders.rejected / "bad.csv").read_bytes() == data
    errors_csv = (ready.folders.rejected / "bad.errors.csv").read_text(encoding="utf-8")
    assert errors_csv.startswith("row,column,message")
    assert expected.split("'")[0] in errors_csv
    assert not list(ready.folders.inbox("orders").iterdir())
    with connect(ready.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchall() == [(0,)]
