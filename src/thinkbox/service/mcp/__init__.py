"""thinkbox as an MCP server: the same tools over stdio (``thinkbox mcp``, :mod:`.stdio`) and over
streamable HTTP at ``/mcp`` of ``thinkbox serve`` (:mod:`.http`); the tools are in :mod:`.tools`."""
