"""thinkbox's exception tree, split by who must act.

An error in *generated code* is never an exception: it is data (``ExecutionResult.error``) returned to the
model. What is left are failures of the machinery, each with a stable ``code`` and a ``retryable`` flag,
and a message that names the setting or command that fixes it::

    ThinkboxError
    ├── ConfigError                  the user must change a setting (message names it)
    ├── SandboxError                 the sandbox machinery failed
    │   ├── SandboxUnavailable       a backend cannot run on this machine (missing tool, no privileges)
    │   ├── SessionStartError        a session could not be provisioned
    │   ├── SessionDead              the session's interpreter is gone; restart() or a new session
    │   ├── SessionBusy              a second request while one is running (misuse)
    │   └── ProtocolError            the sandbox answered something that breaks docs/protocol.md
    ├── ModelError                   the model backend failed
    │   ├── ModelUnavailable         endpoint down / model not installed (retryable where transient)
    │   ├── ModelAuthError           wrong API key
    │   ├── ModelNotFound            wrong model name
    │   └── ModelTimeout             no answer in time (retryable)
    └── AgentError                   the agent loop itself was misused

Lower-level errors (``OSError``, ``openai.APIError``, ``docker.errors``) are translated at the boundary
where they happen and never leak upward raw.
"""

from __future__ import annotations


class ThinkboxError(Exception):
    """Root of every error thinkbox raises on purpose."""

    code: str = "thinkbox_error"
    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class ConfigError(ThinkboxError):
    code = "config_error"


class SandboxError(ThinkboxError):
    code = "sandbox_error"


class SandboxUnavailable(SandboxError):
    code = "sandbox_unavailable"


class SessionStartError(SandboxError):
    code = "session_start_failed"
    retryable = True


class SessionDead(SandboxError):
    code = "session_dead"


class SessionBusy(SandboxError):
    code = "session_busy"


class ProtocolError(SandboxError):
    code = "protocol_error"


class ModelError(ThinkboxError):
    code = "model_error"


class ModelUnavailable(ModelError):
    code = "model_unavailable"
    retryable = True


class ContextOverflow(ModelError):
    """The conversation no longer fits in the model's context window."""

    code = "context_overflow"


class ModelAuthError(ModelError):
    code = "model_auth"


class ModelNotFound(ModelError):
    code = "model_not_found"


class ModelTimeout(ModelError):
    code = "model_timeout"
    retryable = True


class AgentError(ThinkboxError):
    code = "agent_error"
