"""SQL for Postgres from the typed tree: the same operators, spelled out.

Every constant (including `$n` params) becomes a typed literal `'text'::type` rendered
from the parsed value, so Postgres reads back exactly the value the evaluator uses (a
timestamptz literal carries its `+00`, numeric keeps its scale). Expressions are fully
parenthesised; implicit casts chosen during analysis are written as explicit CASTs,
which are the coercions Postgres would have inserted itself.
"""

from __future__ import annotations

from .nodes import (
    Apply,
    ArrayExpr,
    ArrayOp,
    BoolExpr,
    BoolTest,
    Coalesce,
    Column,
    Concat,
    Const,
    Distinct,
    InSubquery,
    MinMax,
    Node,
    Not,
    NullTest,
    Subscript,
    Subselect,
)
from .types import TEXT, quote_ident
from .values import literal_formatter, sql_string


def render(node: Node) -> str:
    if isinstance(node, Const):
        return literal(node)
    if isinstance(node, Column):
        return quote_ident(node.name)
    if isinstance(node, Apply):
        return node.function.sql([render(arg) for arg in node.args])
    if isinstance(node, BoolExpr):
        return "(" + f" {node.op} ".join(render(arg) for arg in node.args) + ")"
    if isinstance(node, Not):
        return f"(NOT {render(node.arg)})"
    if isinstance(node, NullTest):
        return f"({render(node.arg)} IS {'NOT ' if node.negated else ''}NULL)"
    if isinstance(node, BoolTest):
        return f"({render(node.arg)} {node.test})"
    if isinstance(node, Distinct):
        keyword = "IS NOT DISTINCT FROM" if node.negated else "IS DISTINCT FROM"
        return f"({render(node.left)} {keyword} {render(node.right)})"
    if isinstance(node, ArrayOp):
        quantifier = "ANY" if node.use_or else "ALL"
        return node.function.sql([render(node.left), f"{quantifier} ({render(node.right)})"])
    if isinstance(node, Coalesce):
        return "COALESCE(" + ", ".join(render(arg) for arg in node.args) + ")"
    if isinstance(node, MinMax):
        name = "GREATEST" if node.greatest else "LEAST"
        # Text order depends on the collation; "C" is what the evaluator implements.
        collate = ' COLLATE "C"' if node.type.category == "S" else ""
        return f"{name}(" + ", ".join(render(arg) + collate for arg in node.args) + ")"
    if isinstance(node, Concat):
        return "concat(" + ", ".join(render(arg) for arg in node.args) + ")"
    if isinstance(node, ArrayExpr):
        inner = ", ".join(render(e) for e in node.elements)
        return f"CAST(ARRAY[{inner}] AS {node.type.sql()})"
    if isinstance(node, Subscript):
        return f"({render(node.array)})" + "".join(f"[{render(i)}]" for i in node.indexes)
    if isinstance(node, InSubquery):
        return f"({render(node.left)} IN ({render_subselect(node.select)}))"
    raise TypeError(f"cannot render {type(node).__name__}")


def render_subselect(select: Subselect) -> str:
    """The subquery's SQL: every name quoted, so it reads exactly the table analysed."""
    relation = f"{quote_ident(select.schema)}.{quote_ident(select.table)}"
    sql = f"SELECT {quote_ident(select.column)} FROM {relation}"
    return sql if select.where is None else f"{sql} WHERE {render(select.where)}"


def literal(node: Const) -> str:
    pg_type = TEXT if node.type.is_unknown else node.type
    if node.value is None:
        return f"CAST(NULL AS {pg_type.sql()})"
    if pg_type.name == "bool" and not pg_type.array and pg_type.enum is None:
        return "TRUE" if node.value else "FALSE"
    text = literal_formatter(pg_type)(node.value)
    return f"{sql_string(text)}::{pg_type.sql()}"
