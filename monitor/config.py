"""The one configuration loader: TOML file -> validated, frozen pydantic models.

Every error names the key path, the bad value and what was expected, e.g.
``models[0].window.size: expected a duration like "15m", got "fast"``; the CLI
prints them and exits with status 2 before anything connects. Secrets are never
literal: ``*_env = "NAME"`` reads an environment variable, ``*_file = "path"``
reads a file (trailing newline stripped). Resolved secrets live in
:attr:`Config.secrets`, keyed by their dotted path, and never in ``repr``.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """One or more problems in a config file; ``problems`` are ``path: message`` lines."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """Parse ``"500ms"``, ``"30s"``, ``"15m"``, ``"1h"``, ``"1h30m"``, ``"2d"``, ``"1w"``.

    Bare numbers are refused (seconds or minutes would be a guess).
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, total = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if text and pos == len(text):
            return timedelta(seconds=total)
    raise PydanticCustomError(
        "duration", 'expected a duration like "15m", got {got}', {"got": _show(value)}
    )


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def format_duration(td: timedelta) -> str:
    """Inverse of :func:`parse_duration` for display (``"15m"``, ``"1h30m"``, ``"500ms"``)."""
    ms = round(td.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


# --------------------------------------------------------------------------- base


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _secret_pair(model: BaseModel, stem: str) -> None:
    if getattr(model, f"{stem}_env", None) and getattr(model, f"{stem}_file", None):
        raise PydanticCustomError(
            "secret_pair", "set {stem}_env or {stem}_file, not both", {"stem": stem}
        )


# --------------------------------------------------------------------------- sections


class DaemonConfig(Strict):
    state_dir: Path = Path("./driftwarden-state")
    http_listen: str = "127.0.0.1:9308"
    public_url: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    api_token_env: str | None = None
    api_token_file: Path | None = None
    tick_interval: Duration = timedelta(seconds=5)
    shutdown_timeout: Duration = timedelta(seconds=30)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"

    @field_validator("http_listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise PydanticCustomError(
                "listen", 'expected host:port like "127.0.0.1:9308", got {got}', {"got": _show(v)}
            )
        return v

    @model_validator(mode="after")
    def _secrets(self) -> DaemonConfig:
        _secret_pair(self, "api_token")
        return self

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.http_listen}").rstrip("/")


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


class KafkaConfig(Strict):
    bootstrap_servers: list[str] = ["localhost:9092"]
    group_id: str = "driftwarden"
    client_id: str = "driftwarden"
    predictions_topic: str = "predictions"
    labels_topic: str | None = "labels"
    dead_letter_topic: str | None = None
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password_env: str | None = None
    ssl_password_file: Path | None = None
    ssl_check_hostname: bool = True
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout: Duration = timedelta(seconds=10)
    heartbeat_interval: Duration = timedelta(seconds=3)
    poll_timeout: Duration = timedelta(milliseconds=500)
    commit_interval: Duration = timedelta(seconds=5)
    max_poll_records: int = Field(10_000, ge=1)
    max_message_bytes: int = Field(1_048_576, ge=64)
    consumer_options: dict[str, Any] = {}

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _security(self) -> KafkaConfig:
        _secret_pair(self, "sasl_password")
        _secret_pair(self, "ssl_password")
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise PydanticCustomError(
                "sasl", "sasl_mechanism is required when security_protocol is {p}",
                {"p": self.security_protocol},
            )
        if self.sasl_mechanism and not (self.sasl_username and (self.sasl_password_env or self.sasl_password_file)):
            raise PydanticCustomError(
                "sasl", "sasl_mechanism needs sasl_username and sasl_password_env or sasl_password_file", {}
            )
        return self


class FieldMap(Strict):
    """Where each field lives in a message (dotted paths are not supported: top-level keys)."""

    event_id: str = "event_id"
    model: str = "model"
    version: str = "version"
    ts: str = "ts"
    features: str = "features"
    prediction: str = "prediction"
    segment: str = "segment"
    label: str = "label"


class FeaturesConfig(Strict):
    numerical: list[str] = []
    categorical: list[str] = []


class WindowConfig(Strict):
    type: Literal["tumbling", "sliding"] = "tumbling"
    by: Literal["time", "count"] = "time"
    size: Any = "15m"
    slide: Any = None
    lateness: Duration = timedelta(minutes=1)
    min_rows: int = Field(30, ge=1)
    idle_timeout: Duration | None = timedelta(seconds=30)

    @field_validator("size", "slide", mode="before")
    @classmethod
    def _size(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None:
            return None
        if info.data.get("by") == "count":
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
            raise PydanticCustomError(
                "rows", "expected a number of rows (a positive integer) for count windows, got {got}",
                {"got": _show(v)},
            )
        td = parse_duration(v)
        if td <= timedelta(0):
            raise PydanticCustomError("positive", "expected a positive duration, got {got}", {"got": _show(v)})
        return td

    @model_validator(mode="after")
    def _shape(self) -> WindowConfig:
        if self.type == "tumbling" and self.slide is not None and self.slide != self.size:
            raise PydanticCustomError("slide", "slide is only for sliding windows (set type = \"sliding\")", {})
        if self.type == "sliding":
            if self.slide is None:
                raise PydanticCustomError("slide", "sliding windows need slide", {})
            if self.slide > self.size:
                raise PydanticCustomError("slide", "slide must not exceed size", {})
            ratio = (self.size / self.slide) if self.by == "count" else self.size / self.slide
            if abs(ratio - round(ratio)) > 1e-9:
                raise PydanticCustomError("slide", "size must be a whole multiple of slide", {})
        return self

    @property
    def step(self) -> Any:
        return self.slide if self.type == "sliding" else self.size


class ColumnDriftConfig(Strict):
    method: str = "auto"
    threshold: float | None = None

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _check_method(v)


def _check_method(v: str) -> str:
    names = known_drift_methods()
    if v != "auto" and names and v not in names:
        raise PydanticCustomError(
            "method", "unknown drift test {got}; expected \"auto\" or one of: {names}",
            {"got": _show(v), "names": ", ".join(sorted(names))},
        )
    return v


def known_drift_methods() -> set[str]:
    """Names registered in ``detectors`` (empty if the registry is unavailable)."""
    try:
        from detectors.drift.registry import list_tests  # noqa: PLC0415
    except ImportError:
        return set()
    return {t if isinstance(t, str) else t.name for t in list_tests()}


class DriftConfig(Strict):
    method: str = "auto"
    threshold: float | None = None
    share: float = Field(0.5, gt=0, le=1)
    bins: Literal["evidently", "fixed"] = "evidently"
    multiple_testing: Literal["none", "bh"] = "none"
    prediction: bool = True
    columns: dict[str, ColumnDriftConfig] = {}

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _check_method(v)


class ModelConfig(Strict):
    name: str = Field(min_length=1)
    task: Literal["classification", "regression"] = "classification"
    reference: Path
    layout: Literal["nested", "flat"] = "nested"
    features: FeaturesConfig
    prediction: str = "prediction"
    prediction_type: Literal["numerical", "categorical"] = "numerical"
    label: str = "label"
    class_of_interest: str | int | None = 1
    fields: FieldMap = FieldMap()
    window: WindowConfig = WindowConfig()
    drift: DriftConfig = DriftConfig()
    segments: list[str] = []

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise PydanticCustomError(
                "name", "expected letters, digits, '_', '-' or '.', got {got}", {"got": _show(v)}
            )
        return v

    @model_validator(mode="after")
    def _features(self) -> ModelConfig:
        names = [*self.features.numerical, *self.features.categorical]
        if not names:
            raise PydanticCustomError("features", "features: list at least one numerical or categorical feature", {})
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise PydanticCustomError("features", "features listed twice: {dup}", {"dup": ", ".join(dup)})
        unknown = sorted(set(self.drift.columns) - set(names) - {self.prediction})
        if unknown:
            raise PydanticCustomError(
                "columns", "drift.columns names unknown columns: {u}", {"u": ", ".join(unknown)}
            )
        return self

    @property
    def feature_names(self) -> list[str]:
        return [*self.features.numerical, *self.features.categorical]


Comparison = Literal[">", ">=", "<", "<=", "==", "!="]


class RuleConfig(Strict):
    name: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    op: Comparison = ">"
    threshold: float = 0.0
    model: str | None = None
    column: str | None = None
    segment: str | None = None
    version: str | None = None
    relative: bool = False
    for_: int = Field(1, alias="for", ge=1)
    resolve_after: int = Field(1, ge=1)
    severity: Literal["warning", "critical"] = "warning"
    labels: dict[str, str] = {}
    notifiers: list[str] = []
    repeat_interval: Duration | None = None
    no_data_for: Duration | None = None

    @model_validator(mode="after")
    def _no_data(self) -> RuleConfig:
        if self.metric == "no_data" and self.no_data_for is None:
            raise PydanticCustomError("no_data", 'metric "no_data" needs no_data_for, e.g. "30m"', {})
        return self


class RetryConfig(Strict):
    max_attempts: int = Field(12, ge=1)
    backoff: Duration = timedelta(seconds=5)
    max_backoff: Duration = timedelta(hours=1)
    timeout: Duration = timedelta(seconds=10)


class SlackNotifierConfig(RetryConfig):
    type: Literal["slack"]
    channel: str | None = None
    token_env: str | None = None
    token_file: Path | None = None
    webhook_url_env: str | None = None
    webhook_url_file: Path | None = None
    base_url: str = "https://slack.com/api/"

    @model_validator(mode="after")
    def _mode(self) -> SlackNotifierConfig:
        _secret_pair(self, "token")
        _secret_pair(self, "webhook_url")
        has_token = bool(self.token_env or self.token_file)
        has_hook = bool(self.webhook_url_env or self.webhook_url_file)
        if has_token == has_hook:
            raise PydanticCustomError(
                "slack", "set either token_env/token_file (with channel) or webhook_url_env/webhook_url_file", {}
            )
        if has_token and not self.channel:
            raise PydanticCustomError("slack", "channel is required with a bot token", {})
        return self


class WebhookNotifierConfig(RetryConfig):
    type: Literal["webhook"]
    url: str
    kind: Literal["alert", "retrain"] = "alert"
    secret_env: str | None = None
    secret_file: Path | None = None
    cooldown: Duration | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"https?://[^/\s]+", v):
            raise PydanticCustomError("url", "expected an http:// or https:// URL, got {got}", {"got": _show(v)})
        return v

    @model_validator(mode="after")
    def _secret(self) -> WebhookNotifierConfig:
        _secret_pair(self, "secret")
        if self.kind == "retrain" and not (self.secret_env or self.secret_file):
            raise PydanticCustomError("secret", "retraining webhooks must be signed: set secret_env or secret_file", {})
        return self


NotifierConfig = Annotated[SlackNotifierConfig | WebhookNotifierConfig, Field(discriminator="type")]


class AlertingConfig(Strict):
    repeat_interval: Duration = timedelta(hours=4)
    group_by: list[str] = ["model", "rule"]


class Config(Strict):
    daemon: DaemonConfig = DaemonConfig()
    kafka: KafkaConfig = KafkaConfig()
    models: list[ModelConfig] = Field(min_length=1)
    rules: list[RuleConfig] = []
    notifiers: dict[str, NotifierConfig] = {}
    alerting: AlertingConfig = AlertingConfig()
    #: Resolved secrets by dotted path (``notifiers.slack.token``); filled by :func:`load_config`.
    secrets: dict[str, SecretStr] = Field(default_factory=dict, exclude=True, repr=False)

    @model_validator(mode="after")
    def _references(self) -> Config:
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise PydanticCustomError("models", "model names must be unique; repeated: {d}", {"d": ", ".join(dup)})
        return self

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def secret(self, path: str) -> str | None:
        s = self.secrets.get(path)
        return s.get_secret_value() if s is not None else None


# --------------------------------------------------------------------------- loading

_SECRET_WORDS = ("token", "password", "secret", "webhook_url")


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _describe(err: dict[str, Any], model_fields: dict[str, list[str]]) -> str:
    loc = tuple(p for p in err["loc"] if p not in ("slack", "webhook") or True)
    # the discriminated union adds its tag ("slack"/"webhook") to the location: drop it
    if len(loc) >= 3 and loc[0] == "notifiers" and loc[2] in ("slack", "webhook"):
        loc = loc[:2] + loc[3:]
    path = _loc(loc)
    kind, got = err["type"], err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        hint = ""
        if any(w in key for w in _SECRET_WORDS) and not key.endswith(("_env", "_file")):
            hint = f"; secrets are never literal: use {key}_env or {key}_file"
        return f"{path}: unknown key{hint}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{path}: expected an integer, got {_show(got)}"
    if kind in ("float_type", "float_parsing"):
        return f"{path}: expected a number, got {_show(got)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{path}: expected true or false, got {_show(got)}"
    if kind in ("string_type",):
        return f"{path}: expected a string, got {_show(got)}"
    if kind in ("list_type",):
        return f"{path}: expected a list, got {_show(got)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{path}: expected a table, got {_show(got)}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{path}: expected one of {expected}, got {_show(got)}"
    if kind == "union_tag_invalid":
        return f"{path}.type: expected \"slack\" or \"webhook\", got {_show(err.get('ctx', {}).get('tag'))}"
    if kind == "union_tag_not_found":
        return f"{path}.type: required key is missing (\"slack\" or \"webhook\")"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"{path}: {err['msg'].lower()}, got {_show(got)}"
    if kind in ("too_short",) and isinstance(got, list):
        return f"{path}: expected at least {err.get('ctx', {}).get('min_length', 1)} entry, got none"
    if kind == "string_too_short":
        return f"{path}: must not be empty"
    return f"{path}: {err['msg']}" if path else err["msg"]


def _read_secret(problems: list[str], base: Path, path: str, env: str | None, file: Path | None) -> SecretStr | None:
    if env:
        value = os.environ.get(env)
        if value is None or value == "":
            problems.append(f"{path}_env: environment variable {env} is not set")
            return None
        return SecretStr(value)
    if file:
        p = file if file.is_absolute() else base / file
        try:
            return SecretStr(p.read_text().rstrip("\r\n"))
        except OSError as exc:
            problems.append(f"{path}_file: cannot read {p}: {exc.strerror or exc}")
    return None


def _post_checks(cfg: Config, base: Path) -> tuple[list[str], dict[str, SecretStr]]:
    problems: list[str] = []
    secrets: dict[str, SecretStr] = {}

    def secret(path: str, env: str | None, file: Path | None) -> None:
        s = _read_secret(problems, base, path, env, file)
        if s is not None:
            secrets[path] = s

    secret("daemon.api_token", cfg.daemon.api_token_env, cfg.daemon.api_token_file)
    secret("kafka.sasl_password", cfg.kafka.sasl_password_env, cfg.kafka.sasl_password_file)
    secret("kafka.ssl_password", cfg.kafka.ssl_password_env, cfg.kafka.ssl_password_file)
    for name, n in cfg.notifiers.items():
        if isinstance(n, SlackNotifierConfig):
            secret(f"notifiers.{name}.token", n.token_env, n.token_file)
            secret(f"notifiers.{name}.webhook_url", n.webhook_url_env, n.webhook_url_file)
        else:
            secret(f"notifiers.{name}.secret", n.secret_env, n.secret_file)
    for i, m in enumerate(cfg.models):
        ref = m.reference if m.reference.is_absolute() else base / m.reference
        if not ref.is_file():
            problems.append(f"models[{i}].reference: file not found: {ref}")
        elif ref.suffix.lower() not in (".csv", ".parquet", ".pq"):
            problems.append(f"models[{i}].reference: expected a .csv or .parquet file, got {ref.name}")
    model_names = {m.name for m in cfg.models}
    for i, r in enumerate(cfg.rules):
        if r.model is not None and r.model not in model_names:
            problems.append(f"rules[{i}].model: unknown model \"{r.model}\"; expected one of: {', '.join(sorted(model_names))}")
        for j, n in enumerate(r.notifiers):
            if n not in cfg.notifiers:
                known = ", ".join(sorted(cfg.notifiers)) or "(none configured)"
                problems.append(f"rules[{i}].notifiers[{j}]: unknown notifier \"{n}\"; expected one of: {known}")
    for name, n in cfg.notifiers.items():
        if isinstance(n, WebhookNotifierConfig) and n.kind == "retrain" and n.cooldown is None:
            pass  # no cooldown: every firing requests retraining
    return problems, secrets


def parse_config(data: dict[str, Any], *, base_dir: Path | None = None, source: str = "") -> Config:
    """Validate an already-parsed TOML document; relative paths resolve against ``base_dir``."""
    base = base_dir or Path.cwd()
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(e, {}) for e in exc.errors()], source) from None
    problems, secrets = _post_checks(cfg, base)
    if problems:
        raise ConfigError(problems, source)
    # resolve relative paths against the config file's folder
    models = [
        m.model_copy(update={"reference": m.reference if m.reference.is_absolute() else (base / m.reference)})
        for m in cfg.models
    ]
    daemon = cfg.daemon
    if not daemon.state_dir.is_absolute():
        daemon = daemon.model_copy(update={"state_dir": base / daemon.state_dir})
    return cfg.model_copy(update={"models": models, "daemon": daemon, "secrets": secrets})


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file. Raises :class:`ConfigError` naming every problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"cannot read {p}: {exc.strerror or exc}"], str(p)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(["file is not UTF-8"], str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax: {exc}"], str(p)) from None
    return parse_config(data, base_dir=p.resolve().parent, source=str(p))
