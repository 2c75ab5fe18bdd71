"""The ``thinkbox`` command line: the only synchronous edge of thinkbox (one ``asyncio.run`` per command)."""
