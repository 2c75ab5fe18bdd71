"""The tool store: Python modules the agent (or a user) writes, tests and saves, and every later session of
the tenant imports as ``from tools.<name> import <function>`` (see :mod:`.store`, docs/service.md)."""

from thinkbox.service.tools.spec import ToolRefused, ToolSpec, check
from thinkbox.service.tools.store import ToolInfo, ToolStore

__all__ = ["ToolInfo", "ToolRefused", "ToolSpec", "ToolStore", "check"]
