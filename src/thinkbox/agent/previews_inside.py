"""The file-preview helper, run inside the session (see session_helpers): stdlib, pandas and openpyxl
when they are importable.

``main({"paths": [...]}, user_ns)`` returns one dict per file: its kind and structure. Every read is
capped (the first bytes of a table or text, whole JSON only up to a size, spreadsheets in read-only mode
after checking how large they unpack), so a huge or malformed file gives a short description or an error
string, never a long read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from typing import Any

HEAD_BYTES = 256 * 1024
COUNT_BYTES = 64 * 1024 * 1024  # lines are counted in files up to this size
JSON_BYTES = 8 * 1024 * 1024
XLSX_UNPACKED = 200 * 1024 * 1024
CELL = 60  # characters of a value
MAX_COLUMNS = 500
TABLES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
TEXTS = {".txt", ".md", ".log", ".py", ".js", ".sh", ".html", ".xml", ".yaml", ".yml", ".toml", ".ini"}


def main(args: dict[str, Any], ns: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for path in args["paths"][:30]:
        try:
            out.append({"path": path, "size": os.path.getsize(path), **preview(path)})
        except Exception as exc:
            out.append({"path": path, "error": f"{type(exc).__name__}: {exc}"[:200]})
    return out


def preview(path: str) -> dict[str, Any]:
    ext = os.path.splitext(path)[1].lower()
    if ext in TABLES:
        return table(path, TABLES[ext])
    if ext in (".json", ".geojson"):
        return json_file(path)
    if ext in (".jsonl", ".ndjson"):
        return json_lines(path)
    if ext in (".xlsx", ".xlsm"):
        return spreadsheet(path)
    if ext == ".xls":
        return {"kind": "excel97", "note": "old Excel format: pandas.read_excel needs xlrd for it"}
    head = _head(path)
    if ext in TEXTS or _is_text(head):
        return text(path, head)
    return {"kind": "binary"}


def _head(path: str, size: int = HEAD_BYTES) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _is_text(head: bytes) -> bool:
    if b"\x00" in head[:4096]:
        return False
    try:
        head[:4096].decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > 4090  # a character cut at the end of the sample
    return True


def _lines(path: str) -> int | None:
    if os.path.getsize(path) > COUNT_BYTES:
        return None
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _cut(value: Any) -> str:
    text = str(value)
    return text if len(text) <= CELL else text[: CELL - 3] + "..."


def table(path: str, sep: str) -> dict[str, Any]:
    head = _head(path)
    if len(head) == HEAD_BYTES:
        head = head[: head.rfind(b"\n") + 1] or head
    sample = head.decode("utf-8", "replace")
    if sep == ",":
        try:
            sep = csv.Sniffer().sniff(sample[:8192], delimiters=",;\t|").delimiter
        except csv.Error:
            sep = ","
    raw = [line[:200] for line in sample.splitlines()[1:3]]
    lines = _lines(path)
    rows = None if lines is None else max(lines - 1, 0)
    header = next(csv.reader(io.StringIO(sample[: sample.find("\n") + 1 or None]), delimiter=sep), [])
    columns = [[_cut(c), "?"] for c in header]
    if len(header) <= MAX_COLUMNS:  # pandas reads wider headers slowly; their dtypes stay unknown
        try:
            import pandas as pd

            frame = pd.read_csv(io.StringIO(sample), sep=sep, nrows=2000)
            columns = [[_cut(c), str(t)] for c, t in frame.dtypes.items()]
        except ImportError:
            pass
    return {"kind": "table", "sep": sep, "columns": columns[:40], "ncolumns": len(columns), "rows": rows,
            "first": raw}  # fmt: skip


def _shape(value: Any, depth: int = 0) -> str:
    if isinstance(value, dict):
        keys = list(value)[:15]
        if depth >= 3 or not value:  # deep down, the key names alone: what code has to spell right
            return "{" + ", ".join(_cut(k) for k in keys) + (", ..." if len(value) > 15 else "") + "}"
        inner = ", ".join(f"{_cut(k)}: {_shape(value[k], depth + 1)}" for k in keys)
        more = f", ... ({len(value)} keys)" if len(value) > 15 else ""
        return "{" + inner + more + "}"
    if isinstance(value, list):
        if not value:
            return "empty list"
        return f"list of {len(value)}, the first: {_shape(value[0], depth + 1)}" if depth < 3 else "list"
    if isinstance(value, str):
        return f"str ({_cut(json.dumps(value))})" if depth else "str"
    return type(value).__name__ + (f" ({_cut(value)})" if depth else "")


def json_file(path: str) -> dict[str, Any]:
    if os.path.getsize(path) > JSON_BYTES:
        return {"kind": "json", "note": "too large to read for the preview", "start": _start(path)}
    with open(path, "rb") as f:
        data = json.loads(f.read())
    return {"kind": "json", "shape": _shape(data)}


def json_lines(path: str) -> dict[str, Any]:
    lines = _head(path).decode("utf-8", "replace").splitlines()
    records = [json.loads(line) for line in lines[:3] if line.strip()]
    return {"kind": "jsonl", "lines": _lines(path), "first": [_shape(r, 1) for r in records[:2]]}


def _start(path: str) -> str:
    return _head(path, 300).decode("utf-8", "replace")


def spreadsheet(path: str) -> dict[str, Any]:
    with zipfile.ZipFile(path) as z:
        if sum(i.file_size for i in z.infolist()) > XLSX_UNPACKED:
            return {"kind": "excel", "note": "too large unpacked to read for the preview"}
    try:
        import openpyxl
    except ImportError:
        return {"kind": "excel", "note": "openpyxl is not installed here, so its sheets cannot be read"}
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        sheets = []
        for sheet in book.worksheets[:10]:
            rows = [[_cut(v) for v in row[:30]] for row in sheet.iter_rows(max_row=3, values_only=True)]
            sheets.append({"name": sheet.title, "rows": sheet.max_row, "columns": sheet.max_column,
                           "first": rows})  # fmt: skip
        return {"kind": "excel", "sheets": sheets, "nsheets": len(book.worksheets)}
    finally:
        book.close()


def text(path: str, head: bytes) -> dict[str, Any]:
    lines = head.decode("utf-8", "replace").splitlines()[:5]
    return {"kind": "text", "lines": _lines(path), "first": [line[:200] for line in lines]}
