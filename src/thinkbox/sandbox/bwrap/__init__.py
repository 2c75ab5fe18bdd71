"""The bubblewrap backend: one ``bwrap`` process per session (:mod:`.backend`)."""
