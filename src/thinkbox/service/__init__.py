"""The multi-tenant service behind ``thinkbox serve``: its database (``db``), tenants, users and API keys
(``accounts``), storage, sessions and runs, and the HTTP API that exposes them. Routes stay thin: they
translate HTTP into calls of the same agent loop, sandbox sessions and stores the CLI uses."""
