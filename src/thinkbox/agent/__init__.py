"""The thinking-in-code agent."""
