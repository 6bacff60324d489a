"""Reading a Dash layout in the page tests: components by id, their text, grid rows, stat cards, figure notes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def walk(component: Any) -> Iterator[Any]:
    """``component`` and every component under it, parents first (plain strings and numbers are not components)."""
    yield component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list | tuple) else [children]:
        if child is not None and not isinstance(child, str | int | float):
            yield from walk(child)


def find(component: Any, id: str) -> Any:
    """The component with ``id`` under ``component``, or None; fails if two share it."""
    found = [c for c in walk(component) if getattr(c, "id", None) == id]
    assert len(found) <= 1, f"{id}: {len(found)} components"
    return found[0] if found else None


def text_of(component: Any) -> str:
    """The text shown by ``component`` and its children, in order, joined by spaces."""
    if component is None:
        return ""
    if isinstance(component, str | int | float):
        return str(component)
    children = getattr(component, "children", None)
    if isinstance(children, list | tuple):
        return " ".join(text_of(c) for c in children)
    return text_of(children)


def rows_of(grid: Any) -> list[dict[str, Any]]:
    """A ``components.table`` grid's rows keyed by column header (its fields are positional: "c0", "c1", ...)."""
    header = {c["field"]: c["headerName"] for c in grid.columnDefs}
    return [{header[k]: v for k, v in row.items()} for row in grid.rowData]


def cards_of(component: Any) -> dict[str, str]:
    """Stat card label -> shown value, for every stat card under ``component``."""
    cards = [c for c in walk(component) if getattr(c, "className", None) == "stat"]
    return {card.children[1].children: card.children[0].children for card in cards}


def annotation_text(figure: Any) -> str:
    """A figure's annotations (such as its "no data" message), joined by spaces."""
    return " ".join(a.text for a in figure.layout.annotations)
