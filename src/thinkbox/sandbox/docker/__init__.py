"""The Docker backend (optionally gVisor): one container per session (:mod:`.backend`), its image
(:mod:`.image`) and its seccomp profile, written from thinkbox's own filter (:mod:`.profile`)."""
