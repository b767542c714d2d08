"""A snapshot's visibility (`sync/snapshot.py`): which replicated transactions it already
holds, by 32-bit xid as pgoutput carries them, and how the shape registry keeps it."""

from __future__ import annotations

from fusebox.sync.replication.lsn import MAX_LSN
from fusebox.sync.snapshot import Visibility


def test_sees_what_committed_before_the_snapshot() -> None:
    visibility = Visibility.parse("100:110:103,105", horizon=5_000)
    assert visibility.sees(99)  # older than xmin
    assert visibility.sees(104)  # between, not in progress
    assert not visibility.sees(103)  # in progress when the snapshot was taken
    assert not visibility.sees(110)  # xmax and later started after it
    assert not visibility.sees(2_000)


def test_sees_across_xid_wraparound() -> None:
    # A 64-bit xmin of epoch 1 near the 32-bit limit; xids 3 and 9 come after it, wrapped.
    xmin = (1 << 32) + 0xFFFF_FFF0
    visibility = Visibility(xmin, xmin + 20, frozenset({xmin + 2}))
    assert visibility.sees(0xFFFF_FFF1)
    assert not visibility.sees(0xFFFF_FFF2)  # in progress
    assert visibility.sees(3)  # wrapped, below xmax
    assert not visibility.sees(9)  # wrapped, at or past xmax
    assert visibility.sees(0xFFFF_FF00)  # far behind xmin


def test_the_registry_form_round_trips_and_older_entries_have_no_horizon() -> None:
    visibility = Visibility.parse("100:110:103,105", horizon=5_000)
    assert visibility.to_json() == [100, 110, [103, 105], 5_000]
    assert Visibility.from_json(visibility.to_json()) == visibility
    # Recorded before the horizon was kept: every transaction is still asked about.
    older = Visibility.from_json([100, 110, [103]])
    assert older.xip == frozenset({103}) and older.horizon == MAX_LSN
