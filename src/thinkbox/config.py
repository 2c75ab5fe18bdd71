"""One typed configuration: CLI flags over ``THINKBOX_*`` environment variables over a TOML config file.

Nested fields use ``__`` in environment variables: ``THINKBOX_MODEL__BASE_URL``,
``THINKBOX_SANDBOX__BACKEND``,
``THINKBOX_SANDBOX__LIMITS__TIMEOUT_S``. The config file is ``$THINKBOX_CONFIG`` or
``~/.config/thinkbox/config.toml``, with the same sections (``[model]``, ``[sandbox]``, ``[agent]``,
``[service]``, ``[search]``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from thinkbox.errors import ConfigError
from thinkbox.sandbox.types import Limits


def default_config_file() -> Path:
    return Path(os.environ.get("THINKBOX_CONFIG", Path.home() / ".config" / "thinkbox" / "config.toml"))


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "thinkbox"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "thinkbox"


class SandboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str = Field(
        "zygote", description="Sandbox backend: zygote (default), bwrap, or a plugin's name."
    )
    pool_size: int = Field(1, ge=0, description="Fresh sessions kept ready by the warm pool.")
    idle_timeout_s: float = Field(900.0, gt=0, description="A leased session unused this long is closed.")
    limits: Limits = Field(default_factory=Limits)


class ModelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["auto", "local", "openai", "scripted"] = Field(
        "auto", description="auto: an OpenAI-compatible endpoint when base_url is set, else the local model."
    )
    name: str = Field(
        "qwen2.5-coder-1.5b",
        description=(
            "Model name: for local, qwen2.5-coder-1.5b or qwen2.5-coder-0.5b; for openai, the served model."
        ),
    )
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://localhost:11434/v1."
    )
    api_key: SecretStr | None = Field(
        None, description="API key for base_url (OPENAI_API_KEY is used if unset)."
    )
    path: Path | None = Field(None, description="A local GGUF file to use instead of the bundled model.")
    context_tokens: int = Field(8192, ge=512, description="Context window of the local model.")
    prompt_cache: bool = Field(
        True,
        description=(
            "Keep the local model's evaluated system prompt on disk (CACHE_DIR/prompt-states), so that a "
            "new process starts answering without evaluating it again."
        ),
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads for the local model (default: cores - 1)."
    )
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(1024, ge=16, description="Most tokens in one model reply.")
    timeout_s: float = Field(120.0, gt=0, description="Time allowed for one model reply.")
    max_retries: int = Field(3, ge=0, description="Retries on 429/5xx/timeouts, with exponential backoff.")
    script: Path | None = Field(
        None, description="For provider=scripted: a JSON file with the replies to replay."
    )
    record: Path | None = Field(
        None,
        description="Append every model request and reply to this JSON-lines file (a replayable script).",
    )


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(10, ge=1, description="Model turns before the run stops.")
    max_wall_s: float = Field(600.0, gt=0, description="Wall time of a whole run.")
    max_consecutive_errors: int = Field(4, ge=1, description="Failed steps in a row before the run stops.")
    max_tokens: int = Field(100_000, ge=1000, description="Prompt+completion tokens of a whole run.")
    max_parse_retries: int = Field(2, ge=0, description="Re-asks when a reply is not a valid action.")
    observation_chars: int = Field(4000, ge=200, description="Output fed back to the model is cut to this.")
    language: Literal["py", "js", "sh", "auto"] = Field(
        "py",
        description=(
            "The language the agent writes its code in: py (Python), js (JavaScript, Node.js), sh (bash), "
            "or auto: the model names one per step (the action's language field)."
        ),
    )
    route: Literal["code", "direct", "auto"] = Field(
        "code",
        description=(
            "How a question is answered: code (think in code, the loop), direct (one model call, no code), "
            "or auto: the model decides per question (see docs/bench/route.md)."
        ),
    )
    lint: bool = Field(
        True,
        description=(
            "Check Python with pyflakes before running it: a syntax error or an undefined name (one not "
            "defined in the code nor in the session) goes back to the model without running the code."
        ),
    )
    previews: bool = Field(
        True, description="Show the model the structure of the workspace's files (columns, sheets, keys)."
    )
    preview_tokens: int = Field(
        600, ge=50, le=8000, description="Budget of the file previews, in tokens (3 characters each)."
    )
    repeats: bool = Field(
        True,
        description=(
            "A step whose code and output repeat an earlier step's is not fed back again: the model is "
            "asked for another approach or the answer, and refused if it sends that code once more."
        ),
    )
    live_docs: bool = Field(
        True,
        description=(
            "After a TypeError or AttributeError, show the model the signature and docstring of the object "
            "involved (after a KeyError, the keys it has), read in the session with inspect."
        ),
    )
    reply_format: Literal["json", "fenced"] = Field(
        "fenced",
        description=(
            "How the model writes a step: json (one JSON object, the code inside its code string) or fenced "
            "(the JSON object without code, then the code as plain text in a ``` block; see "
            "docs/bench/reply-format.md)."
        ),
    )
    decompose: Literal["off", "chain", "class"] = Field(
        "off",
        description=(
            "Decomposition on the code route: off (the plain loop), or a plan step first that names 1-4 "
            "functions with contracts and a test each; each is written and tested in the session, then "
            "composed to answer: chain (called one after another on each other's outputs) or class (as "
            "the methods of one class). A question the plan finds simple runs the plain loop "
            "(see docs/bench/decompose.md)."
        ),
    )
    critic: Literal["off", "numbers", "examples", "all"] = Field(
        "off",
        description=(
            "Check a final answer before accepting it: numbers (its numbers must appear in the code's "
            "outputs or the question), examples (a function must pass the question's own examples, run in "
            "the session), all, or off. A failed check gets one retry telling the model what did not "
            "match; then the answer stands. true/false mean all/off. Off by default: with the embedded "
            "model it changed no answer (docs/bench/critic.md)."
        ),
    )

    @field_validator("critic", mode="before")
    @classmethod
    def _critic_switch(cls, value: Any) -> Any:
        """``THINKBOX_AGENT__CRITIC=true|false`` (and booleans) as all/off."""
        switch = {"true": "all", "1": "all", "on": "all", "false": "off", "0": "off", "none": "off"}
        if isinstance(value, bool):
            return "all" if value else "off"
        return switch.get(value.strip().lower(), value) if isinstance(value, str) else value


class SearchSettings(BaseModel):
    """Web search for the agent (``web_search(query)`` in its code, run on the host side)."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["none", "searxng", "brave", "tavily"] = Field(
        "none", description="none (no web search, not mentioned to the model), searxng, brave or tavily."
    )
    url: str | None = Field(
        None,
        description=(
            "searxng: the instance's base URL, e.g. http://localhost:8888 (its JSON format enabled); "
            "brave, tavily: the API endpoint (default: the public one)."
        ),
    )
    api_key: SecretStr | None = Field(None, description="The key for brave or tavily.")
    max_results: int = Field(5, ge=1, le=20, description="Results given to the model per search.")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Time allowed for one search.")

    @model_validator(mode="after")
    def _complete(self) -> SearchSettings:
        if self.provider == "searxng" and not self.url:
            raise ValueError("search.provider searxng needs search.url (the instance's base URL)")
        if self.provider in ("brave", "tavily") and self.api_key is None:
            raise ValueError(f"search.provider {self.provider} needs search.api_key")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"search.url {self.url!r} must start with http:// or https://")
        return self


class ServiceSettings(BaseModel):
    """``thinkbox serve``: the multi-tenant service. Everything it keeps lives under ``data_dir``."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address thinkbox serve listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port thinkbox serve listens on (0: any free port).")
    database_url: str | None = Field(
        None,
        description=(
            "SQLAlchemy URL of the service's database, e.g. postgresql+psycopg://user@host/db; "
            "default: SQLite at DATA_DIR/thinkbox.db."
        ),
    )
    max_upload_mib: int = Field(64, ge=1, description="Largest file accepted by PUT /v1/files.")
    user_quota_mib: int = Field(1024, ge=1, description="Bytes a user's folder may hold.")
    user_quota_files: int = Field(10_000, ge=1, description="Files and folders a user's folder may hold.")
    tenant_quota_mib: int = Field(10_240, ge=1, description="Bytes a tenant's storage may hold, all users.")
    tenant_quota_files: int = Field(100_000, ge=1, description="Files and folders of a tenant, all users.")
    runs_per_user: int = Field(4, ge=1, description="Runs of one user queued or running at once (429 past).")
    runs_per_tenant: int = Field(16, ge=1, description="Runs of one tenant queued or running at once.")
    active_runs: int = Field(64, ge=1, description="Runs executing at once in this process; more wait.")
    session_idle_s: float = Field(1200.0, gt=0, description="A session unused this long is closed.")
    sessions_per_user: int = Field(
        8,
        ge=1,
        description="Open sessions kept per user; past it the least recently used idle one is closed.",
    )
    warm_sessions: int = Field(
        4,
        ge=0,
        le=64,
        description=(
            "Sandbox sessions kept started ahead of requests (the zygote's embryos; each becomes any user's "
            "session when asked, so one warm pool serves every tenant). 0: started on demand."
        ),
    )
    worker_threads: int = Field(32, ge=2, le=512, description="Threads for database, storage and key checks.")
    model_concurrency: int = Field(
        4, ge=1, description="Model requests at once to an endpoint (the embedded model takes one at a time)."
    )
    tool_test_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Time a tool's tests may take in their fresh session (POST /v1/tools).",
    )
    prompt_tools: int = Field(
        8, ge=0, le=50, description="Saved tools listed in a run's system prompt, the most relevant first."
    )
    harvest_tools: bool = Field(
        True,
        description=(
            "After a run answers, save the functions its code defined and called as the tenant's tools, "
            "with tests built from those calls (thinkbox.service.tools.harvest); false: only save_tool and "
            "POST /v1/tools save tools."
        ),
    )
    preimport_tools: bool = Field(
        True,
        description=(
            "Before a session's first run, import the listed tools relevant to the question into the "
            "session (at most 3; the prompt says they are imported, so the model calls them without "
            "writing them); false: the model imports them itself (from tools.NAME import f)."
        ),
    )
    local_reuse: bool = Field(
        True,
        description=(
            "thinkbox serve writes DATA_DIR/serve.json (its URL and a key, mode 0600) and thinkbox ask on "
            "the same data dir uses that service, whose model is already loaded (ask --no-serve: never)."
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host names clients reach the service by, besides loopback and service.host (e.g. "
            "thinkbox.example.com): /mcp refuses other Host and Origin headers (DNS rebinding)."
        ),
    )


class EgressSettings(BaseModel):
    """The egress proxy of the service's sessions (``thinkbox.service.egress``): the only way out of a
    session, to the hosts of its tenant's allow-list; limits count per run (per session outside runs)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Give the service's sessions the egress proxy (else no network).")
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=0, description="Largest request body a session may send (403 past it)."
    )
    max_requests: int = Field(1000, ge=1, description="Requests per run (per session outside runs).")
    max_connections: int = Field(
        64,
        ge=1,
        description=(
            "Connections a session may hold open to its proxy at once (each can have one request "
            "upstream); past it a new one is answered 503, so no session holds the service's files or "
            "upstream connections."
        ),
    )
    max_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1024,
        description="Bytes up and down per run (per session outside runs); a transfer past it is cut.",
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="Time to connect to an upstream host.")
    read_timeout_s: float = Field(60.0, gt=0, description="Time an upstream host may stay silent.")
    index_url: str | None = Field(
        None,
        description=(
            "The package index sessions' pip uses, allowed by default; None: the host's pip configuration "
            "(PIP_INDEX_URL, pip config global.index-url, else pip's own default)."
        ),
    )
    extra_ca_file: Path | None = Field(
        None,
        description="A PEM file of CAs trusted for upstream TLS besides the system's (a private host's CA).",
    )
    pip_timeout_s: float = Field(
        15.0, gt=0, description="PIP_TIMEOUT inside sessions: a missing package fails fast, not a hang."
    )
    package_cache_mb: int = Field(
        2048,
        ge=0,
        description=(
            "Package files (wheels, sdists) the proxy keeps per tenant and serves again to its sessions, "
            "whatever the index's caching headers say; 0: keep none."
        ),
    )


class Settings(BaseSettings):
    """Every setting of thinkbox. Unknown keys are rejected."""

    model_config = SettingsConfigDict(
        env_prefix="THINKBOX_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(default_factory=default_data_dir, description="Transcripts, figures, runs.")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="Model files and build caches.")
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    egress: EgressSettings = Field(default_factory=EgressSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, default_config_file()))

    def resolved_provider(self) -> Literal["local", "openai", "scripted"]:
        if self.model.provider != "auto":
            return self.model.provider
        return "openai" if self.model.base_url else "local"


def load_settings(**overrides: Any) -> Settings:
    """Settings with ``overrides`` (CLI flags, nested as dicts) on top. Raises ConfigError naming the key."""
    try:
        return Settings(**overrides)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:  # the file, read as TOML
        raise ConfigError(
            f"cannot read the config file {default_config_file()} ({exc}): fix it, or point THINKBOX_CONFIG "
            "at another file"
        ) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise ConfigError(
            f"invalid configuration ({problems}). "
            f"Fix the flag, the THINKBOX_* variable or {default_config_file()}"
        ) from None


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets masked (for ``thinkbox config show``)."""
    data = settings.model_dump(mode="json")
    for section in ("model", "search"):
        secret: SecretStr | None = getattr(settings, section).api_key
        if secret is not None:
            key = secret.get_secret_value()
            data[section]["api_key"] = (key[:3] + "…" + key[-2:]) if len(key) > 8 else "***"
    return data
