"""A bad-input corpus through the real submission path: each bad file is refused with exactly
the (row, column, message) errors listed, moved to rejected/ with its errors.csv, and the
simulator receives no `add` at all."""

from __future__ import annotations

import pytest

from smm_pipeline.intake.csv_files import file_hash
from smm_pipeline.operations.catalog import refresh_catalog
from smm_pipeline.operations.inbox import FileRejected
from smm_pipeline.operations.order_files import prepare_order_file
from smm_pipeline.panel.client import PanelClient
from smm_pipeline.warehouse.db import connect

BAD_FILES = [
    (
        "unknown column",
        "service,link,quantiy\n1,https://x.com/a,100\n",
        [
            (
                0,
                "quantiy",
                (
                    "unknown column 'quantiy'; expected one of: answer_number, campaign, "
                    "comments, delay, expiry, groups, hashtag, hashtags, interval, keywords, "
                    "link, max, media, min, old_posts, panel, posts, quantity, ref, runs, "
                    "service, username, usernames (did you mean 'quantity'?)"
                ),
            ),
        ],
    ),
    (
        "missing service column",
        "link,quantity\nhttps://x.com/a,100\n",
        [
            (0, "service", "missing required column 'service'"),
        ],
    ),
    (
        "empty file",
        "",
        [
            (0, "file", "the file is empty; expected a header row and at least one row"),
        ],
    ),
    (
        "header only",
        "service,link,quantity\n",
        [
            (0, "file", "the file has a header row but no data rows"),
        ],
    ),
    (
        "not utf-8",
        b"service,link,quantity\n1,https://x.com/\xe9,100\n",
        [
            (
                1,
                "file",
                (
                    "the file is not UTF-8: byte 0xE9 at offset 38 (line 2); save it as UTF-8 "
                    "(in Excel: CSV UTF-8)"
                ),
            ),
        ],
    ),
    (
        "ragged row",
        "service,link,quantity\n1,https://x.com/a,100,7\n",
        [
            (
                1,
                "row",
                (
                    "this row has 4 cells but the header has 3 columns; quote cells that "
                    "contain commas or line breaks"
                ),
            ),
        ],
    ),
    (
        "duplicate column",
        "service,link,link,quantity\n1,https://x.com/a,https://x.com/a,100\n",
        [
            (0, "link", "duplicate column 'link' (columns 2 and 3)"),
        ],
    ),
    (
        "unknown service",
        "service,link,quantity\n999,https://x.com/a,100\n",
        [
            (
                1,
                "service",
                (
                    "service 999 does not exist on panel 'sim'; check the id against the "
                    "service catalog"
                ),
            ),
        ],
    ),
    (
        "inactive service",
        "service,link,quantity\n3,https://x.com/a,100\n",
        [
            (
                1,
                "service",
                (
                    "service 3 on panel 'sim' is no longer active (it left the catalog); choose"
                    " another service"
                ),
            ),
        ],
    ),
    (
        "service not a number",
        "service,link,quantity\nabc,https://x.com/a,100\n",
        [
            (1, "service", "service must be a service id (a whole number), got 'abc'"),
        ],
    ),
    (
        "missing link",
        "service,link,quantity\n1,,100\n",
        [
            (1, "link", "link is required for service type 'Default'"),
        ],
    ),
    (
        "ftp link",
        "service,link,quantity\n1,ftp://x.com/a,100\n",
        [
            (1, "link", "link must be an http(s) URL with a host, got 'ftp://x.com/a'"),
        ],
    ),
    (
        "link without host",
        "service,link,quantity\n1,https://,100\n",
        [
            (1, "link", "link must be an http(s) URL with a host, got 'https://'"),
        ],
    ),
    (
        "quantity below min",
        "service,link,quantity\n1,https://x.com/a,10\n",
        [
            (1, "quantity", "quantity 10 below the minimum 50 of service 1"),
        ],
    ),
    (
        "quantity above max",
        "service,link,quantity\n1,https://x.com/a,20000\n",
        [
            (1, "quantity", "quantity 20000 above the maximum 10000 of service 1"),
        ],
    ),
    (
        "quantity not a number",
        "service,link,quantity\n1,https://x.com/a,lots\n",
        [
            (1, "quantity", "quantity must be a whole number, got 'lots'"),
        ],
    ),
    (
        "negative quantity",
        "service,link,quantity\n1,https://x.com/a,-5\n",
        [
            (1, "quantity", "quantity must be greater than 0, got -5"),
        ],
    ),
    (
        "missing quantity",
        "service,link,quantity\n1,https://x.com/a,\n",
        [
            (1, "quantity", "quantity is required for service type 'Default'"),
        ],
    ),
    (
        "runs zero",
        "service,link,quantity,runs,interval\n1,https://x.com/a,100,0,10\n",
        [
            (1, "runs", "runs must be greater than 0, got 0"),
        ],
    ),
    (
        "interval negative",
        "service,link,quantity,runs,interval\n1,https://x.com/a,100,2,-1\n",
        [
            (1, "interval", "interval must be greater than 0, got -1"),
        ],
    ),
    (
        "too few comment lines",
        'service,link,comments\n4,https://x.com/a,"one\ntwo"\n',
        [
            (1, "comments", "comments has 2 lines, below the minimum 10 of service 4"),
        ],
    ),
    (
        "missing comments",
        "service,link,comments\n4,https://x.com/a,\n",
        [
            (1, "comments", "comments is required for service type 'Custom Comments'"),
        ],
    ),
    (
        "missing usernames",
        "service,link,quantity,usernames\n6,https://x.com/a,100,\n",
        [
            (1, "usernames", "usernames is required for service type 'Mentions'"),
        ],
    ),
    (
        "missing keywords",
        "service,link,quantity,keywords\n29,https://x.com/a,1000,\n",
        [
            (1, "keywords", "keywords is required for service type 'SEO'"),
        ],
    ),
    (
        "missing groups",
        "service,link,quantity,groups\n28,https://t.me/a,100,\n",
        [
            (1, "groups", "groups is required for service type 'Invites from Groups'"),
        ],
    ),
    (
        "missing answer number",
        "service,link,quantity,answer_number\n24,https://x.com/a,100,\n",
        [
            (1, "answer_number", "answer_number is required for service type 'Poll'"),
        ],
    ),
    (
        "bad delay",
        "service,username,min,max,delay\n14,someone,50,100,7\n",
        [
            (
                1,
                "delay",
                (
                    "delay 7 is not allowed on panel 'sim'; allowed: 0, 5, 10, 15, 20, 30, 40, "
                    "50, 60, 90, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480, 540, 600"
                ),
            ),
        ],
    ),
    (
        "bad expiry",
        "service,username,min,max,delay,expiry\n14,someone,50,100,20,31/02/2030\n",
        [
            (
                1,
                "expiry",
                (
                    "expiry '31/02/2030' is not a valid date; use d/m/Y (31/12/2025) or "
                    "YYYY-MM-DD (2025-12-31)"
                ),
            ),
        ],
    ),
    (
        "past expiry",
        "service,username,min,max,delay,expiry\n14,someone,50,100,20,2001-01-01\n",
        [
            (1, "expiry", "expiry 01/01/2001 is in the past"),
        ],
    ),
    (
        "min above max",
        "service,username,min,max,delay\n14,someone,500,100,20\n",
        [
            (1, "min", "min 500 is above max 100"),
        ],
    ),
    (
        "field the type does not take",
        "service,link,quantity,comments\n1,https://x.com/a,100,hello\n",
        [
            (
                1,
                "comments",
                (
                    "service 1 is type 'Default', which takes no comments; leave this cell "
                    "empty (or check the service id)"
                ),
            ),
        ],
    ),
    (
        "duplicate ref",
        "service,link,quantity,ref\n1,https://x.com/a,100,r\n1,https://x.com/b,100,r\n",
        [
            (2, "ref", "ref 'r' is already used by row 1 on panel 'sim'; refs must be unique"),
        ],
    ),
    (
        "identical rows without ref",
        "service,link,quantity\n1,https://x.com/a,100\n1,https://x.com/a,100\n",
        [
            (
                2,
                "ref",
                (
                    "this row is identical to row 1 (rows without a ref get one derived from "
                    "their content); give each row its own ref to order the same thing twice"
                ),
            ),
        ],
    ),
    (
        "unknown panel",
        "panel,service,link,quantity\nnope,1,https://x.com/a,100\n",
        [
            (1, "panel", "unknown panel 'nope'; enabled panels: sim"),
        ],
    ),
    (
        "over max_batch_spend",
        "service,link,quantity\n22,https://x.com/a,20000\n22,https://x.com/b,20000\n",
        [
            (
                0,
                "batch",
                (
                    "panel 'sim': the batch's estimated cost 720 is more than the balance 100; "
                    "top up the panel or split the file"
                ),
            ),
            (
                0,
                "batch",
                (
                    "panel 'sim': the batch's estimated cost 720 is more than its "
                    "max_batch_spend 500; split the file or raise the limit in panels.yaml"
                ),
            ),
        ],
    ),
    (
        "over the balance",
        "service,link,quantity\n22,https://x.com/a,6000\n",
        [
            (
                0,
                "batch",
                (
                    "panel 'sim': the batch's estimated cost 108 is more than the balance 100; "
                    "top up the panel or split the file"
                ),
            ),
        ],
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
    assert [(e.row, e.column, e.message) for e in info.value.errors] == expected
    assert sim.stats()["calls"].get("add", 0) == 0
    assert (ready.folders.rejected / "bad.csv").read_bytes() == data
    errors_csv = (ready.folders.rejected / "bad.errors.csv").read_text(encoding="utf-8")
    assert errors_csv.startswith("row,column,message")
    assert all(message.split("\n")[0] in errors_csv for _, _, message in expected)
    assert not list(ready.folders.inbox("orders").iterdir())
    with connect(ready.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchall() == [(0,)]
