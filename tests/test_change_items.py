"""Live-change items: the per-transaction byte templates equal `change_item` exactly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fusebox.sync.log_items import ChangeEncoder, change_item

text = st.text(st.characters(codec="utf-8"), max_size=12)
rows = st.dictionaries(text, st.none() | text, max_size=5)
relations = st.tuples(text, text)


@given(
    relation=relations,
    lsn=st.integers(0, 2**64 - 1),
    xid=st.integers(0, 2**32 - 1),
    operation=st.sampled_from(["insert", "update", "delete"]),
    key=text,
    value=rows,
    op_position=st.integers(0, 2**31),
    old_value=st.none() | rows,
    last=st.booleans(),
    extra=st.none() | st.just({"key_change_to": "k"}) | st.just({"key_change_from": "j"}),
)
def test_encoder_matches_change_item(
    relation, lsn, xid, operation, key, value, op_position, old_value, last, extra
) -> None:
    expected = change_item(
        operation, key, value, relation, lsn, op_position, xid,
        old_value=old_value, last=last, extra=extra,
    )  # fmt: skip
    encoder = ChangeEncoder(relation, lsn, xid)
    got = encoder.encode(
        operation, key, value, op_position, old_value=old_value, last=last, extra=extra
    )
    assert got == expected


def test_transactions_cross_the_pipe_whole() -> None:
    """What the replication process ships is what the routing side gets, as dicts."""
    from fusebox.sync.changes import Change, Transaction, decode_batch, encode_batch
    from fusebox.sync.replication.pgoutput import UNCHANGED_TOAST

    columns = ("id", "body", "note")
    relation = ("public", "docs")
    shipped = Transaction(
        7,
        100,
        [
            Change("insert", relation, new=("1", "a\x01\n\"'", None), columns=columns),
            Change(
                "update",
                relation,
                new=("1", UNCHANGED_TOAST, "n"),
                old=("1", "long", None),
                columns=columns,
            ),
            Change("delete", ("s", "t"), old=("9",), columns=("k",)),
        ],
        [("public", "gone")],
    )
    [(got, end_lsn)] = decode_batch(encode_batch([(shipped, 120)]))
    assert end_lsn == 120
    assert (got.xid, got.lsn, got.truncated) == (7, 100, [("public", "gone")])
    assert [(c.operation, c.relation) for c in got.changes] == [
        ("insert", relation),
        ("update", relation),
        ("delete", ("s", "t")),
    ]
    assert got.changes[0].new == {"id": "1", "body": "a\x01\n\"'", "note": None}
    assert got.changes[1].new == {"id": "1", "body": UNCHANGED_TOAST, "note": "n"}
    assert got.changes[1].new["body"] is UNCHANGED_TOAST
    assert got.changes[1].old == {"id": "1", "body": "long", "note": None}
    assert got.changes[2].old == {"k": "9"} and got.changes[2].new is None
