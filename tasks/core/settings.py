"""Settings, one pydantic-settings model per concern, read from the environment.

Every variable is listed in docs/configuration.md, whose table is made from these models
(`settings_table()`; a test fails when the two drift apart). The list of variables
(`variables()`) is derived from the models too: nothing repeats their names. Secrets are
``SecretStr``: they print as ``**********`` and are read only where a request is
sent. Pipeline templates see `tasks.providers.tiers.public_settings()` as
``settings``: it never contains a secret.
"""

from __future__ import annotations

import functools
import json
import os
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.core.errors import ConfigError
from tasks.core.urls import file_url_path, is_file_url, is_url, shown_url


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "frugal-flows"


class CacheSettings(BaseSettings):
    """The prompt cache (`cache_lookup` / `cache_store`)."""

    model_config = SettingsConfigDict(env_prefix="FRUGAL_CACHE_", extra="ignore")

    url: str = Field(
        "",
        description="redis://host:port/db or rediss://...; sqlite:///path/to/file.db; "
        "empty: an embedded SQLite file in FRUGAL_DATA_DIR",
    )
    ttl: int = Field(7 * 24 * 3600, ge=1, description="seconds an answer stays cached")
    prefix: str = Field("frugal", description="key prefix; keys are PREFIX:NAMESPACE:HASH")
    timeout: float = Field(0.5, gt=0, description="seconds before a cache call counts as down")
    lease_seconds: float = Field(
        30.0,
        ge=0,
        description="on a miss, identical requests elsewhere wait up to this long for the first to store its answer; 0: off",
    )
    semantic_search_threads: bool = Field(
        True,
        description="Redis 8's semantic index searches on Redis' search threads (Redis' default: other commands go on "
        "meanwhile); false: in its main thread (NOTHREAD), ~0.15 ms faster a search on a small host of its own",
    )


class EngineSettings(BaseSettings):
    """Where local state lives."""

    model_config = SettingsConfigDict(env_prefix="FRUGAL_", extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir, description="embedded cache and local files; default $XDG_DATA_HOME/frugal-flows"
    )
    pipelines_dir: Path | None = Field(None, description="folder of pipeline files; default the project's deployments/")
    pipeline_max_bytes: int = Field(1_000_000, ge=1, description="larger pipeline files are refused before they are parsed")
    input_file_max_bytes: int = Field(
        10_000_000, ge=1, description="`--input key=@FILE`: larger files are refused (only regular files are read)"
    )
    http_transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp",
        description="the model providers' HTTP transport: aiohttp (httpx-aiohttp; a fifth of httpx's CPU per call with "
        "many in flight) or httpx's own",
    )


class BatchSettings(BaseSettings):
    """`for_each:` nodes: chunks and concurrency."""

    model_config = SettingsConfigDict(env_prefix="FRUGAL_BATCH_", extra="ignore")

    chunk_size: int = Field(200, ge=1, description="items per chunk: one Prefect task run each")
    concurrency: int = Field(4, ge=1, description="items in flight at once (a local model serves one at a time)")
    chunks_in_flight: int = Field(
        0,
        ge=0,
        description="chunks submitted at once, so the model never idles at a chunk's end; 0: twice what can run at once "
        "(2 in process, twice the Dask workers' threads)",
    )
    max_document_bytes: int = Field(1_000_000, ge=1, description="larger documents are item errors")
    runner: Literal["inprocess", "dask"] = Field(
        "inprocess",
        description="where an orchestrated batch's chunks run: `inprocess` (the flow's own process) or `dask` "
        "(Prefect's DaskTaskRunner: the scheduler at FRUGAL_BATCH_DASK_ADDRESS, or a local cluster); inline runs "
        "(`frugal run --inline`) always run in process",
    )
    dask_address: str = Field(
        "", description="the Dask scheduler chunks go to with FRUGAL_BATCH_RUNNER=dask (tcp://host:8786); empty: a local cluster"
    )
    dask_workers: int = Field(2, ge=1, description="worker processes of the local Dask cluster (no FRUGAL_BATCH_DASK_ADDRESS)")


class FileSettings(BaseSettings):
    """The folders batch pipelines may read documents from and write summaries to (`tasks.core.files`).

    A batch's source and destination are pipeline inputs, which anyone who can start a run (REST,
    the Prefect UI) sets: these roots are what the operator allows. The default, the working
    directory's `data/` folder, is where prefect.yaml's nightly batch reads (`data/inbox`) and
    writes (`data/summaries`), and holds nothing else a run could leak.
    """

    model_config = SettingsConfigDict(env_prefix="FRUGAL_FILE_", extra="ignore")

    roots: str = Field(
        "data",
        description="folders batch documents may be read from, and summaries written to unless FRUGAL_FILE_WRITE_ROOTS "
        "is set: separated by `:` (like PATH), or by `,` once one is a URL, or a JSON list; links are followed before "
        "the check; relative to the working directory",
    )
    write_roots: str = Field(
        "",
        description="folders and fsspec URLs (`s3://bucket/prefix`) summaries and indexes may be written to, written "
        "as FRUGAL_FILE_ROOTS is (`data/out,s3://bucket/out`); empty: FRUGAL_FILE_ROOTS",
    )

    def read_folders(self) -> tuple[Path, ...]:
        return _roots(self.roots, "FRUGAL_FILE_ROOTS")[0]

    def write_folders(self) -> tuple[Path, ...]:
        return self.write_places()[0]

    def write_urls(self) -> tuple[str, ...]:
        """The URL roots (not `file://`: those are folders) summaries and indexes may be written under."""
        return self.write_places()[1]

    def write_places(self) -> tuple[tuple[Path, ...], tuple[str, ...]]:
        if self.write_roots:
            return _roots(self.write_roots, "FRUGAL_FILE_WRITE_ROOTS")
        return _roots(self.roots, "FRUGAL_FILE_ROOTS")


@functools.lru_cache(maxsize=16)
def _roots(value: str, variable: str) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    """(folders, URL roots) of a roots setting.

    Plain folders are separated by `:` as before (`/srv/a:/srv/b`). Once an entry is a URL (`scheme://`),
    `:` cannot separate them: the list is separated by `,` (`/srv/a,s3://bucket/out`). A JSON list
    (`["/srv/a", "s3://bucket/out"]`) takes any name. `file://` URLs are folders.
    """
    text = value.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{variable} starts with '[' but is not a JSON list: {exc}") from None
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigError(f"{variable} must be a JSON list of strings (folders and URLs)")
    elif "://" in text:
        items = text.split(",")
    else:
        items = text.split(os.pathsep)
    folders: list[Path] = []
    urls: list[str] = []
    for item in (item.strip() for item in items):
        if not item:
            continue
        if is_file_url(item):
            try:
                folders.append(Path(file_url_path(item)))
            except ValueError as exc:
                raise ConfigError(f"{variable}: {shown_url(item)}: {exc}") from None
        elif is_url(item):
            urls.append(item)
        elif "://" in item:
            raise ConfigError(
                f"{variable}: {shown_url(item)!r} is neither a folder nor a URL: separate URL roots from folders and "
                "from each other with ',' (data/out,s3://bucket/out), not ':'"
            )
        else:
            folders.append(Path(item).expanduser())
    return tuple(folders), tuple(urls)


class SlmSettings(BaseSettings):
    """The small-model tier (`call_slm`)."""

    model_config = SettingsConfigDict(env_prefix="FRUGAL_SLM_", extra="ignore")

    provider: Literal["auto", "ollama", "local"] = Field(
        "auto", description="auto: Ollama when OLLAMA_HOST is set and answers, else the bundled local model"
    )
    model: str = Field("llama3.2:1b", description="Ollama model name")
    host: str | None = Field(
        None,
        validation_alias=AliasChoices("OLLAMA_HOST", "FRUGAL_SLM_HOST"),
        description="Ollama server URL",
    )
    timeout: float = Field(
        60.0, gt=0, description="seconds for one small-model attempt, connect to the last byte of the answer (a total deadline)"
    )
    local_model_path: Path | None = Field(
        None,
        validation_alias=AliasChoices("FRUGAL_LOCAL_MODEL_PATH", "FRUGAL_SLM_LOCAL_MODEL_PATH"),
        description="GGUF file for the local provider; default: the bundled SmolLM2-135M",
    )
    hosts: str | None = Field(
        None,
        validation_alias=AliasChoices("OLLAMA_HOSTS", "FRUGAL_SLM_HOSTS"),
        description="several Ollama servers, comma-separated: each call goes to the least-loaded healthy one; "
        "a host that fails is taken out and probed again later; wins over OLLAMA_HOST",
    )
    local_threads: int = Field(1, ge=1, description="llama.cpp generation threads")
    local_ctx: int = Field(2048, ge=256, description="llama.cpp context size in tokens")

    def ollama_hosts(self) -> tuple[str, ...]:
        """OLLAMA_HOSTS as a list, else OLLAMA_HOST alone, else none."""
        listed = tuple(h.strip() for h in (self.hosts or "").split(",") if h.strip())
        return listed or ((self.host,) if self.host else ())


class LlmSettings(BaseSettings):
    """The large-model tier (`call_llm`)."""

    model_config = SettingsConfigDict(env_prefix="FRUGAL_LLM_", extra="ignore")

    provider: Literal["auto", "openai", "anthropic", "local"] = Field(
        "auto",
        description="openai: any OpenAI-compatible chat completions API; anthropic: messages API; "
        "auto: anthropic if ANTHROPIC_API_KEY is set, openai if OPENAI_API_KEY or OPENAI_BASE_URL is, else local",
    )
    model: str | None = Field(
        None, description="model id as the provider knows it; default gpt-4o-mini (openai), claude-haiku-4-5 (anthropic)"
    )
    openai_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "FRUGAL_LLM_OPENAI_BASE_URL"),
        description="an OpenAI-compatible endpoint (vLLM, llama.cpp, LiteLLM, ...); default https://api.openai.com/v1",
    )
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("OPENAI_API_KEY", "FRUGAL_LLM_OPENAI_API_KEY"), description="API key (secret)"
    )
    anthropic_base_url: str = Field(
        "https://api.anthropic.com",
        validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "FRUGAL_LLM_ANTHROPIC_BASE_URL"),
        description="Anthropic messages API endpoint",
    )
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "FRUGAL_LLM_ANTHROPIC_API_KEY"), description="API key (secret)"
    )
    timeout: float = Field(
        60.0, gt=0, description="seconds for one attempt, connect to the last byte of the answer (a total deadline)"
    )
    max_attempts: int = Field(4, ge=1, description="attempts per model call of either tier, first included")
    max_retry_seconds: float = Field(
        60.0, gt=0, description="seconds for one model call of either tier, every attempt and wait included (a hard ceiling)"
    )
    backoff_base: float = Field(0.5, gt=0, description="first backoff delay in seconds, doubled per retry")


class ModelLimit(BaseModel):
    """One provider/model's limits, as the provider grants them (FRUGAL_LIMITS)."""

    model_config = ConfigDict(extra="forbid")

    rpm: float | None = Field(None, gt=0, description="requests per minute")
    tpm: float | None = Field(None, gt=0, description="tokens per minute: prompt estimate + max_tokens, corrected by the usage")
    burst: int = Field(1, ge=1, description="requests that may start at once after a quiet spell (the rest are paced)")
    concurrency: int = Field(64, ge=1, description="most calls in flight per process; halved on a 429, then regained")


class LimitSettings(BaseSettings):
    """Provider rate limits, shared by every process on the same Redis (`tasks.providers.limits`)."""

    model_config = SettingsConfigDict(env_prefix="FRUGAL_", extra="ignore")

    limits: str = Field(
        "",
        description='JSON object: provider/model id or glob -> its limits, e.g. {"openai/gpt-4o-mini": {"rpm": 600, '
        '"tpm": 200000}}; optional "burst" (requests, default 1) and "concurrency" (in flight per process, default 64); '
        "shared through FRUGAL_CACHE_URL's Redis, else per process",
    )

    def table(self) -> dict[str, ModelLimit]:
        """The limits by model id or glob; a ConfigError that says what to fix when they do not parse."""
        if not self.limits.strip():
            return {}
        try:
            raw = json.loads(self.limits)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"FRUGAL_LIMITS is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError('FRUGAL_LIMITS must be a JSON object, e.g. {"openai/gpt-4o-mini": {"rpm": 600, "tpm": 200000}}')
        table: dict[str, ModelLimit] = {}
        for model, value in raw.items():
            try:
                table[model] = ModelLimit.model_validate(value)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
                raise ConfigError(f"FRUGAL_LIMITS[{model!r}]: {problems} (known keys: rpm, tpm, burst, concurrency)") from None
        return table


class PriceSettings(BaseSettings):
    """Prices of model calls and the reference model savings are measured against (`tasks.core.pricing`)."""

    model_config = SettingsConfigDict(env_prefix="FRUGAL_", extra="ignore")

    reference_model: str | None = Field(
        None,
        description="provider/model whose price is the counterfactual (what a request would cost without "
        "frugal-flows), e.g. openai/gpt-4o; default: the large tier's model",
    )
    prices_file: Path | None = Field(None, description="JSON or YAML file of price overrides by model (see PRICE_OVERRIDES)")
    price_overrides: str = Field(
        "",
        description='JSON object of price overrides by model id or glob, e.g. {"ollama/*": {"hourly_usd": "1.20", '
        '"calls_per_hour": 1200}, "openai/my-model": {"input_mtok": "0.5", "output_mtok": "1.5"}}; wins over the file',
    )


class LedgerSettings(BaseSettings):
    """The cost ledger (`flows.ledger`): one entry per model call and per cache hit."""

    model_config = SettingsConfigDict(env_prefix="FRUGAL_LEDGER_", extra="ignore")

    enabled: bool = Field(True, description="record model calls and cache hits in the ledger")
    retention_days: int = Field(90, ge=0, description="days entries are kept; 0 keeps them forever")


class GatewaySettings(BaseSettings):
    """`frugal gateway`: the OpenAI-compatible endpoint (`flows.gateway`)."""

    model_config = SettingsConfigDict(env_prefix="FRUGAL_GATEWAY_", extra="ignore")

    keys_file: Path | None = Field(
        None,
        description="YAML file of tenants and their hashed API keys (`frugal gateway-key add`); unset: no keys, loopback only",
    )
    models: str = Field(
        '{"*": "answer"}',
        description="JSON object: a requested model name or glob -> the pipeline it runs, with that name as the large model; "
        '"frugal/<pipeline>" always works',
    )
    access_log: bool = Field(
        True, description="one JSON line per request on the frugal.gateway.access logger (no prompt, no key)"
    )
    budget_refresh_seconds: float = Field(30.0, gt=0, description="how often tenants' spending is re-read from the cost ledger")
    max_request_bytes: int = Field(1_000_000, ge=1024, description="larger request bodies are refused (413)")

    def model_map(self) -> dict[str, str]:
        try:
            value = json.loads(self.models)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"FRUGAL_GATEWAY_MODELS is not JSON: {exc}") from exc
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ConfigError('FRUGAL_GATEWAY_MODELS must be a JSON object of strings, e.g. {"gpt-4o-mini": "answer"}')
        return value


class AuditSettings(BaseSettings):
    """The shadow audit (`flows.ledger.audit`): a sample of accepted small answers re-asked of the large model."""

    model_config = SettingsConfigDict(env_prefix="FRUGAL_AUDIT_", extra="ignore")

    rate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of accepted small-model answers also sent to the large model, after the caller has its answer, "
        "to measure agreement (e.g. 0.02); 0: off (an audit sends a prompt the router kept local to the large provider, "
        "and costs money)",
    )
    budget_usd: float = Field(1.0, ge=0.0, description="most USD audits may spend per UTC day; audits stop when it is spent")
    keep_prompts: bool = Field(
        False,
        description="keep the prompts of audited and rejected answers (beside the ledger, for router labels); "
        "off: the ledger holds only request keys",
    )


class EmbedderSettings(BaseSettings):
    """The text embedder (`tasks.embedders`): the learned router's, and any step that compares meanings."""

    model_config = SettingsConfigDict(env_prefix="FRUGAL_EMBEDDER_", extra="ignore")

    kind: Literal["bundled", "ollama", "openai"] = Field(
        "bundled",
        validation_alias=AliasChoices("FRUGAL_EMBEDDER", "FRUGAL_EMBEDDER_KIND"),
        description="bundled: USE multilingual v3 in-process (no server); ollama: /api/embed; "
        "openai: any OpenAI-compatible /v1/embeddings",
    )
    model: str | None = Field(
        None, description="embedding model id; default nomic-embed-text (ollama), text-embedding-3-small (openai)"
    )
    host: str | None = Field(
        None, description="Ollama server URL for embeddings; default the small tier's OLLAMA_HOST (the first of OLLAMA_HOSTS)"
    )
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint for embeddings; default the large tier's OPENAI_BASE_URL, else OpenAI"
    )
    api_key: SecretStr | None = Field(None, description="API key for the openai embedder (secret); default OPENAI_API_KEY")
    timeout: float = Field(10.0, gt=0, description="seconds for one embedding call before it falls back")
    runtime: Literal["auto", "onnxruntime", "onnxruntime-float", "numpy"] = Field(
        "auto",
        description="the bundled embedder's forward pass: auto (onnxruntime if installed, else numpy), onnxruntime "
        "(its CNN layers in 8 bits: ~1.8x less CPU a prompt than numpy, vectors at cosine >= 0.9997 to numpy's; "
        "~50-70 MB more memory a process), onnxruntime-float (numpy's vectors, ~1.4x less CPU) or numpy",
    )


class RouterSettings(BaseSettings):
    """The learned router (`classify` with `router: embedding`)."""

    model_config = SettingsConfigDict(env_prefix="FRUGAL_ROUTER_", extra="ignore")

    file: Path | None = Field(
        None,
        description="router file to route by; default FRUGAL_DATA_DIR/router.json if it exists, else the packaged router",
    )


#: every settings model, in the order the configuration table lists them
MODELS: tuple[type[BaseSettings], ...] = (
    CacheSettings,
    EngineSettings,
    BatchSettings,
    FileSettings,
    SlmSettings,
    LlmSettings,
    LimitSettings,
    PriceSettings,
    LedgerSettings,
    GatewaySettings,
    AuditSettings,
    EmbedderSettings,
    RouterSettings,
)


def field_variables(model: type[BaseSettings], name: str) -> tuple[str, ...]:
    """The environment variables one field reads, first the one to document."""
    info = model.model_fields[name]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    if isinstance(alias, str):
        return (alias,)
    return ((str(model.model_config.get("env_prefix", "")) + name).upper(),)


def variables() -> tuple[str, ...]:
    """Every environment variable the settings read (derived from the models: the one list)."""
    names = [v for model in MODELS for name in model.model_fields for v in field_variables(model, name)]
    return (*names, "XDG_DATA_HOME")  # the default data directory follows XDG_DATA_HOME


#: Every variable the settings read; a change to any of them makes a new snapshot.
WATCHED = variables()


def settings_table() -> str:
    """The configuration table of docs/configuration.md, made from the models (a test keeps the two equal)."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for model in MODELS:
        for name, info in model.model_fields.items():
            names = field_variables(model, name)
            default = "" if info.default_factory is not None or info.default is None else info.default
            if isinstance(info.annotation, type) and issubclass(info.annotation, SecretStr):
                default = ""
            shown = f"`{default}`" if default not in ("", None) else "-"
            also = f" (also `{'`, `'.join(names[1:])}`)" if len(names) > 1 else ""
            text = (info.description or "").replace("|", "\\|")
            rows.append(f"| `{names[0]}`{also} | {shown} | {text} |")
    return "\n".join(rows) + "\n"


@dataclass(frozen=True)
class Settings:
    cache: CacheSettings
    engine: EngineSettings
    slm: SlmSettings
    llm: LlmSettings
    batch: BatchSettings
    prices: PriceSettings = field(default_factory=PriceSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    files: FileSettings = field(default_factory=FileSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    embedder: EmbedderSettings = field(default_factory=EmbedderSettings)
    router: RouterSettings = field(default_factory=RouterSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)


_snapshot: tuple[tuple[object, ...], Settings] | None = None
_WATCHED_KEYS: tuple[object, ...] = tuple(os.fsencode(k) for k in WATCHED) if os.name == "posix" else WATCHED


def env_value(name: str) -> object:
    """The raw value of an environment variable, or None: cheaper than os.environ.get (no decoding);
    for comparisons, not for use."""
    data = getattr(os.environ, "_data", None)
    if data is not None and os.name == "posix":
        return data.get(os.fsencode(name))
    return os.environ.get(name)


def _fingerprint() -> tuple[object, ...]:
    # os.environ[k] encodes and decodes on every access (~1 µs each); its backing
    # mapping answers the same question without that, which matters on a cache hit.
    data = getattr(os.environ, "_data", None)
    if data is not None and os.name == "posix":
        return tuple(map(data.get, _WATCHED_KEYS))
    return tuple(os.environ.get(k) for k in WATCHED)


#: the snapshot a pipeline run took when it started (`pin_settings`): its steps read that one
_pinned: ContextVar[Settings | None] = ContextVar("frugal_settings", default=None)


def pin_settings(snapshot: Settings | None = None) -> Token[Settings | None]:
    """Make the current snapshot (or `snapshot`: a run's, for work done on its behalf later) the one
    `get_settings` returns in this context (a run and its steps): a run sees one consistent set of
    settings, and its steps do not each compare the environment."""
    return _pinned.set(snapshot or get_settings())


def unpin_settings(token: Token[Settings | None]) -> None:
    _pinned.reset(token)


def get_settings() -> Settings:
    """All settings, re-read only when one of the WATCHED variables changed.

    Reading the environment through pydantic-settings costs ~100 µs; a cache
    hit must not pay that on every request. Inside a run, the run's snapshot.
    """
    pinned = _pinned.get()
    if pinned is not None:
        return pinned
    global _snapshot
    fingerprint = _fingerprint()
    if _snapshot is None or _snapshot[0] != fingerprint:
        _snapshot = (
            fingerprint,
            Settings(
                cache=CacheSettings(),
                engine=EngineSettings(),
                slm=SlmSettings(),
                llm=LlmSettings(),
                batch=BatchSettings(),
                prices=PriceSettings(),
                ledger=LedgerSettings(),
                files=FileSettings(),
                gateway=GatewaySettings(),
                audit=AuditSettings(),
                embedder=EmbedderSettings(),
                router=RouterSettings(),
                limits=LimitSettings(),
            ),
        )
    return _snapshot[1]
