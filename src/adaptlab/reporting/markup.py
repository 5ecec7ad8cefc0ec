"""Formatting shared by the report's Markdown and HTML views and by tasks' report sections: numbers, escaping,
clipped text and tables. Standard library only, so any module can use it.
"""

from __future__ import annotations

import html
import math
from typing import Any


def fmt(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, "-" for missing, anything else as text."""
    if isinstance(x, bool) or x is None:
        return "-" if x is None else str(x)
    if isinstance(x, (int, float)):
        return f"{x:.{digits}f}" if math.isfinite(x) else str(x)
    return str(x)


def clip(text: str, n: int = 160) -> str:
    """``text`` on one line, cut to ``n`` characters with an ellipsis, so long inputs keep tables readable."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# ------------------------------------------------------------------------------------------------- markdown


def md_cell(x: Any) -> str:
    """A value as one Markdown table cell: pipes escaped, line breaks flattened."""
    return str(x).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- html


def esc(x: Any) -> str:
    """HTML-escaped text; None is empty. Every value from the data goes through this."""
    return html.escape("" if x is None else str(x), quote=True)


def _num(x: Any) -> str:
    """A data-sort value: the number, or empty for missing."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return ""
    return repr(float(x))


def cell(text: Any, sort: Any = None, cls: str = "", raw: bool = False) -> str:
    """A ``<td>``: ``sort`` is its data-sort value (the page's script sorts numeric columns by it); ``raw`` text is
    already HTML."""
    attrs = f' class="{cls}"' if cls else ""
    if sort is not None:
        attrs += f' data-sort="{esc(_num(sort) if not isinstance(sort, str) else sort)}"'
    return f"<td{attrs}>{text if raw else esc(text)}</td>"


def table(table_id: str, header: list[tuple[str, bool]], rows: list[str], sortable: bool = True,
          cls: str = "") -> str:
    """A table whose header cells are buttons (keyboard-accessible) when sortable; ``header``: (label, numeric)."""
    ths = "".join(
        f'<th scope="col"{" class=num" if numeric else ""}>'
        + (f'<button type="button">{esc(label)}</button>' if sortable else esc(label)) + "</th>"
        for label, numeric in header
    )
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    return (f'<div class="table-wrap"><table id="{esc(table_id)}" class="{classes}"><thead><tr>{ths}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")
