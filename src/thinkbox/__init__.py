"""thinkbox: an AI agent that thinks in code, in an isolated persistent Python sandbox."""

__version__ = "0.1.0"
