"""Rich outputs of a Python cell: the MIME bundle of a value (``_repr_png_``, ``_repr_html_``,
``_repr_svg_``, and its repr as text/plain). Stdlib only, like the rest of :mod:`thinkbox.sandbox.inside`.
"""

from __future__ import annotations

import base64
from typing import Any

RESULT_REPR_LIMIT = 20_000


class Png:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def _repr_png_(self) -> bytes:
        return self.data


def mime_bundle(obj: Any) -> dict[str, str]:
    bundle: dict[str, str] = {}
    many = getattr(obj, "_repr_mimebundle_", None)  # IPython's convention: any MIME types at once
    if many is not None and not isinstance(obj, type):
        try:
            data = many()
        except Exception:
            data = None
        data = data[0] if isinstance(data, tuple) and data else data
        if isinstance(data, dict):
            bundle.update({k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)})
    for mime, method in (
        ("image/png", "_repr_png_"),
        ("text/html", "_repr_html_"),
        ("image/svg+xml", "_repr_svg_"),
    ):
        fn = getattr(obj, method, None)
        if fn is None or isinstance(obj, type):
            continue
        try:
            data = fn()
        except Exception:
            continue
        if data is None:
            continue
        if isinstance(data, bytes):
            data = base64.b64encode(data).decode("ascii")
        bundle[mime] = str(data)
    if not isinstance(obj, Png):
        try:
            text = repr(obj)
        except Exception as exc:
            text = f"<repr failed: {type(exc).__name__}: {exc}>"
        if len(text) > RESULT_REPR_LIMIT:
            text = text[:RESULT_REPR_LIMIT] + f"... [repr cut at {RESULT_REPR_LIMIT} characters]"
        bundle["text/plain"] = text
    return bundle
