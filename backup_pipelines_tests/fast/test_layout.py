"""Where objects live (core/common/layout.py): the keys the helpers build are the documented
layout, and the parsers used by pruning and accounting read them back."""

import datetime as dt

from backup_pipelines import names
from backup_pipelines.core.common import layout

TAKEN = dt.datetime(2026, 12, 7, 2, 0, 5, tzinfo=dt.UTC)


def test_dump_and_manifest_keys_follow_the_documented_layout():
    key = layout.dump_object_key("agentic", "2026-12-07", TAKEN, "zstd", encrypted=True)
    assert key == "agentic/2026-12-07/agentic_20261207T020005Z.dump.zst.age"
    assert layout.manifest_key("agentic", "2026-12-07") == "agentic/2026-12-07/manifest.json"
    assert layout.day_of_backup_key(key) == "2026-12-07"
    assert layout.is_day_manifest(layout.manifest_key("agentic", "2026-12-07"))
    assert not layout.is_day_manifest("media/2026-12-07/objects/a/manifest.json")


def test_reference_keys_name_their_step_and_day():
    key = layout.ref_key("agentic", names.DUMP, "2026-12-07")
    assert key == "postgres/agentic/dump/2026-12-07.json"
    assert key.startswith(layout.refs_prefix("agentic"))
    assert (layout.step_of_ref_key(key), layout.day_of_ref_key(key)) == (names.DUMP, "2026-12-07")
    assert layout.step_of_ref_key(layout.refs_prefix("agentic")) == ""


def test_snapshot_and_server_keys():
    assert layout.snapshot_manifest_key("media", "2026-12-07") == "media/2026-12-07/manifest.json"
    assert layout.snapshot_listing_key("media", "2026-12-07") == "media/2026-12-07/listing.json"
    assert layout.snapshot_object_key("media", "2026-12-07", "a/b.png") == (
        "media/2026-12-07/objects/a/b.png"
    )
    assert layout.globals_key("main", "2026-12-07") == "servers/main/globals/2026-12-07.sql"
