"""Routing of changed rows to candidate shapes (`sync/router.py`), checked against asking
every shape: a shape is a candidate exactly when it has no index hint, or when a row's value
of its hinted column is one of its hinted values."""

from __future__ import annotations

import random
from types import SimpleNamespace

from fusebox.sync.router import Router
from fusebox.sync.where.clause import IndexHint

RELATION = ("public", "events")


class FakeShape:
    """What the router reads of a shape (hashed by identity, as `Shape` is)."""

    def __init__(self, hint: IndexHint | None) -> None:
        self.hint = hint
        self.where = SimpleNamespace(index_hint=hint) if hint is not None else None
        self.table = SimpleNamespace(relation=RELATION)
        self.dependencies: dict = {}


def shape(hint: IndexHint | None) -> FakeShape:
    return FakeShape(hint)


def expected(shapes: list[FakeShape], rows: list[dict]) -> set[int]:
    found = set()
    for s in shapes:
        if s.hint is None or any(row.get(s.hint.column) in s.hint.values for row in rows):
            found.add(id(s))
    return found


def test_candidates_agree_with_asking_every_shape() -> None:
    rng = random.Random(3)
    for layout in range(40):
        columns = ["tenant", "region"][: rng.randint(1, 2)]
        shapes = []
        for _ in range(rng.randint(0, 30)):
            if rng.random() < 0.15 * (layout % 3):
                shapes.append(shape(None))
            else:
                values = frozenset(str(rng.randint(0, 9)) for _ in range(rng.randint(1, 3)))
                shapes.append(shape(IndexHint(rng.choice(columns), values)))
        router = Router()
        for s in shapes:
            router.add(s)  # type: ignore[arg-type]
        for s in rng.sample(shapes, len(shapes) // 4):
            router.remove(s)  # type: ignore[arg-type]
            shapes.remove(s)
        assert {id(s) for s in router.shapes_of(RELATION)} == {id(s) for s in shapes}
        for _ in range(30):
            rows = [
                {
                    "tenant": str(rng.randint(0, 9)),
                    "region": rng.choice([str(rng.randint(0, 9)), None]),
                }
                for _ in range(rng.randint(1, 2))  # an insert or delete; an update's new and old
            ]
            found = router.candidates(RELATION, rows)
            assert {id(s) for s in found} == expected(shapes, rows)
    assert not Router().candidates(("public", "other"), [{"tenant": "1"}])
