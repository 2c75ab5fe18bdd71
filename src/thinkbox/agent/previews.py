"""File previews: the model sees each data file's structure before it writes code.

Told only a file's name, a small model guesses its columns or keys, gets a KeyError, then "fixes" it with
``.get()`` and counts nothing. So at a run's start the session reads every visible file of the workspace
(:mod:`thinkbox.agent.previews_inside`: tables' columns with dtypes and first rows, spreadsheets' sheets
and header rows, JSON's top-level shape and the keys of its first records, text's first lines, line
counts), and the text, cut to ``agent.preview_tokens``, follows the question. Files already described
earlier in the conversation (a chat, a service session) are not described again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thinkbox.agent import previews_inside
from thinkbox.agent.prompts import cut_middle
from thinkbox.agent.session_helpers import run_helper
from thinkbox.models.base import Message
from thinkbox.sandbox.session import Session

CHARS_PER_TOKEN = 3  # digits are one token each for Qwen's tokenizer: count conservatively
TIMEOUT_S = 15.0
MAX_FILES = 20
HEADER = "The files, as thinkbox read them (use these exact names):"


def pending(paths: Sequence[str], history: Sequence[Message]) -> list[str]:
    """The files of ``paths`` (the workspace's visible files) not described earlier in ``history``."""
    told = "\n".join(m["content"] for m in history if m["role"] == "user" and HEADER in m["content"])
    return [p for p in paths if f"\n- {p} (" not in told][:MAX_FILES]


async def preview(session: Session, paths: list[str], budget_tokens: int) -> tuple[str, list[str]] | None:
    """The text describing ``paths`` and the paths it describes; None when the session could not read
    them."""
    found = await run_helper(session, previews_inside, {"paths": paths}, timeout=TIMEOUT_S)
    if not isinstance(found, list):
        return None
    return render([f for f in found if isinstance(f, dict)], budget_tokens * CHARS_PER_TOKEN)


def render(found: list[dict[str, Any]], budget: int) -> tuple[str, list[str]]:
    """``HEADER`` and one block per file, each cut to its share of ``budget`` characters, as long as
    they fit (the first always), and the paths described."""
    share = max(budget // max(len(found), 1), 240)
    blocks: list[str] = []
    described: list[str] = []
    used = len(HEADER)
    for number, item in enumerate(found):
        block = cut_middle(_describe(item), share)
        if used + len(block) > budget and blocks:
            blocks.append(f"- ... {len(found) - number} more files not described (agent.preview_tokens)")
            break
        blocks.append(block)
        described.append(str(item.get("path")))
        used += len(block) + 1
    return "\n".join([HEADER, *blocks]), described


def _describe(item: dict[str, Any]) -> str:
    path = str(item.get("path", "?"))
    size = _size(item.get("size"))
    if "error" in item:
        return f"- {path} ({size}): could not be read for the preview: {item['error']}"
    kind = item.get("kind")
    head = f"- {path} ({size}"
    if kind == "table":
        return _table(head, item)
    if kind == "excel":
        return _excel(head, item)
    if kind == "json":
        if "shape" in item:
            return f"{head}, JSON): {item['shape']}"
        return f"{head}, JSON): {item.get('note', '')}; it starts: {item.get('start', '')!r}"
    if kind == "jsonl":
        first = "; ".join(str(r) for r in item.get("first", []))
        return f"{head}, JSON lines, {_count(item.get('lines'), 'lines')}): first records: {first}"
    if kind == "text":
        first = "\n".join(f"    {line}" for line in item.get("first", []))
        return f"{head}, text, {_count(item.get('lines'), 'lines')}), first lines:\n{first}"
    if kind == "excel97":
        return f"{head}, Excel 97): {item.get('note', '')}"
    return f"{head}, binary)"


def _table(head: str, item: dict[str, Any]) -> str:
    sep = {",": "comma", "\t": "tab", ";": "semicolon", "|": "bar"}.get(str(item.get("sep")), "comma")
    columns = ", ".join(f"{name} ({dtype})" for name, dtype in item.get("columns", []))
    more = item.get("ncolumns", 0) - len(item.get("columns", []))
    columns += f", ... {more} more" if more > 0 else ""
    first = "\n".join(f"    {line}" for line in item.get("first", []))
    rows = _count(item.get("rows"), "rows")
    return f"{head}, table, {sep}-separated, {rows}), columns: {columns}\n  first rows:\n{first}"


def _excel(head: str, item: dict[str, Any]) -> str:
    if "note" in item:
        return f"{head}, Excel): {item['note']}"
    lines = [f"{head}, Excel, {item.get('nsheets', 0)} sheets):"]
    for sheet in item.get("sheets", []):
        first = sheet.get("first") or [[]]
        shape = f"{sheet.get('rows')} rows x {sheet.get('columns')} columns"
        lines.append(f'  sheet "{sheet.get("name")}" ({shape}); first row: {", ".join(first[0])}')
        lines += [f"    {', '.join(row)}" for row in first[1:]]
    return "\n".join(lines)


def _count(n: Any, what: str) -> str:
    return f"{n:,} {what}" if isinstance(n, int) else f"many {what}"


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "size unknown"
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"
