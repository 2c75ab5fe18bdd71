"""Secrets that code never sees: stored encrypted, handed to sessions as placeholders, swapped in by the
egress proxy on the host side, and redacted from everything a run stores or sends."""
