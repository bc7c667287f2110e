"""The frugal-flows exception hierarchy.

Every error the project raises on purpose is one of these; foreign exceptions
(redis, httpx, ollama, jinja2, yaml, pydantic) are translated once, at the
boundary that met them, with ``raise ... from exc``. Each message says what to
do about it, and none ever contains a secret.

    FrugalError
    ├── SpecError              a pipeline file is malformed (names file, node, field)
    │   └── SpecErrors         several SpecError at once (``frugal validate``)
    ├── InputError             a run was given missing or ill-typed inputs
    │   └── PipelineNotFound   no pipeline file by that name
    ├── ConfigError            a setting is missing or invalid (names the env var)
    ├── CacheError             the prompt cache could not be reached or used
    ├── StepError              a node failed while running (names the node)
    ├── BatchFailed            too many items of a batch failed (names them)
    ├── CallError              a deployment called over REST did not answer (`frugal call`)
    │   ├── DeploymentNotFound no deployment by that name (lists the known ones)
    │   ├── ParametersRejected the server refused the run's parameters (its validation message)
    │   ├── RunFailed          the flow run ended failed, crashed or cancelled (its state message)
    │   └── CallTimeout        the flow run was not finished in time (says what it waited in)
    └── ModelError             a model call failed
        ├── ModelUnavailable   connect error, timeout, 5xx, 429 after all retries
        │   └── ModelTimeout   the call or its retry budget ran out of time
        ├── ModelRequestError  the provider refused the request (4xx but 429)
        │   └── ModelAuthError 401/403: the API key is missing or wrong
        └── ModelOutputInvalid the answer failed validation (labels, schema)
"""

from __future__ import annotations

__all__ = [
    "BatchFailed",
    "CacheError",
    "CallError",
    "CallTimeout",
    "ConfigError",
    "DeploymentNotFound",
    "FrugalError",
    "InputError",
    "ModelAuthError",
    "ModelError",
    "ModelOutputInvalid",
    "ModelRequestError",
    "ModelTimeout",
    "ModelUnavailable",
    "ParametersRejected",
    "PipelineNotFound",
    "RunFailed",
    "SpecError",
    "SpecErrors",
    "StepError",
]


class FrugalError(Exception):
    """Base of every error frugal-flows raises on purpose."""


class SpecError(FrugalError):
    """A pipeline file is malformed. Carries where, what, and how to fix it."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        node: str | None = None,
        field: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.file, self.node, self.field, self.line, self.hint = file, node, field, line, hint
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or "<pipeline>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.node:
            parts.append(f"node '{self.node}'")
        if self.field:
            parts.append(f"field '{self.field}'")
        text = ": ".join([", ".join(parts), self.message])
        if self.hint:
            text += f" (fix: {self.hint})"
        return text


class SpecErrors(SpecError):
    """Several spec errors found in one pass, so a user can fix them all at once."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        FrugalError.__init__(self, "\n".join(e.render() for e in errors))
        self.file, self.node, self.field, self.line, self.hint = (
            errors[0].file,
            errors[0].node,
            errors[0].field,
            errors[0].line,
            errors[0].hint,
        )
        self.message = str(self)

    def render(self) -> str:
        return "\n".join(e.render() for e in self.errors)


class InputError(FrugalError):
    """The inputs given to a run are missing, unknown or of the wrong type."""


class PipelineNotFound(InputError):
    """No pipeline by that name; the message lists the known ones."""


class ConfigError(FrugalError):
    """A setting is missing or invalid; the message names the variable to set."""


class CacheError(FrugalError):
    """The prompt cache could not be reached or used. Callers fail open on it."""


class StepError(FrugalError):
    """A node failed while running."""

    def __init__(self, node: str, message: str) -> None:
        self.node = node
        super().__init__(f"node '{node}': {message}")


class BatchFailed(FrugalError):
    """More than the allowed share of a batch's items failed; the message names them."""


class ModelError(FrugalError):
    """A model call failed."""

    def __init__(self, message: str, *, provider: str | None = None, status: int | None = None):
        self.provider, self.status = provider, status
        super().__init__(message)


class ModelUnavailable(ModelError):
    """The model could not be reached, or kept failing transiently (retries spent)."""


class ModelTimeout(ModelUnavailable):
    """The model did not answer in time, or the retry budget ran out."""


class ModelRequestError(ModelError):
    """The provider refused the request; retrying the same request will not help."""


class ModelAuthError(ModelRequestError):
    """The provider refused the credentials (401/403)."""


class ModelOutputInvalid(ModelError):
    """The model's answer failed validation against the node's labels or schema."""


class CallError(FrugalError):
    """A deployment called over Prefect's REST API did not give an answer."""


class DeploymentNotFound(CallError):
    """No deployment by that name; the message lists the known ones."""


class ParametersRejected(CallError):
    """The server refused the flow run's parameters; the message is its validation error."""


class RunFailed(CallError):
    """The flow run ended failed, crashed or cancelled; the message is its state message."""


class CallTimeout(CallError):
    """The flow run did not finish in time; the message says which state it was left in."""
