"""The default backend: sessions forked from a preloaded fork server. Host side: :mod:`.backend`; the
fork server itself: :mod:`.server` (its loop) and :mod:`.embryo` (what each session does before it runs
code)."""
