"""The one configuration loader: TOML file -> validated, frozen pydantic models.

Every error names the key path, the bad value and what was expected, e.g.
``models[0].window.size: expected a duration like "15m", got "fast"``; the CLI
prints them and exits with status 2 before anything connects. Secrets are never
literal: ``*_env = "NAME"`` reads an environment variable, ``*_file = "path"``
reads a file (trailing newline stripped). Resolved secrets live in
:attr:`Config.secrets`, keyed by their dotted path, and never in ``repr``. A command
that only reads the store loads with ``secrets=STORE_SECRETS``: the others are not
read, so an operator needs the store's password and none of the notifiers'.

Relative paths (references, state directory, secret and TLS files) resolve
against the folder of the config file. Types are strict: ``"30"`` is not an
integer and ``1`` is not ``true`` (TOML has real types; a quoted number is a
mistake worth reporting).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import stat
import tomllib
import types
import typing
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import Strict as _StrictType
from pydantic_core import PydanticCustomError

from monitor.metric_names import (
    COLUMN_METRICS,
    DATASET_METRICS,
    LATENCY_METRICS,
    has_reference_figure,
    model_metrics,
)
from storage import redaction
from storage.limits import DEAD_LETTER_PAYLOADS_PER_MINUTE, DEAD_LETTERS_PER_MINUTE
from storage.text import log_text

__all__ = [
    "AlertingConfig",
    "ColumnDriftConfig",
    "Config",
    "CusumConfig",
    "ConfigError",
    "DaemonConfig",
    "DriftConfig",
    "Duration",
    "FeaturesConfig",
    "FieldMap",
    "KafkaConfig",
    "LabelsConfig",
    "ModelConfig",
    "PageHinkleyConfig",
    "PerformanceConfig",
    "RetentionConfig",
    "RetryConfig",
    "RuleConfig",
    "STORE_SECRETS",
    "SlackNotifierConfig",
    "WebhookNotifierConfig",
    "WindowConfig",
    "apply_env_overrides",
    "env_override_names",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
]

# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """One or more problems in a config file; ``problems`` are ``path: message`` lines."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


def _fail(key: str, message: str, **ctx: Any) -> PydanticCustomError:
    """An error about ``key`` (a path below the model being validated, may be ``""``)."""
    return PydanticCustomError("config", message, {"key": key, **ctx})


def _show(value: Any) -> str:
    """A value as it would be written in TOML."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return f'"{format_duration(value)}"'
    if isinstance(value, Path):
        return f'"{value}"'
    return repr(value)


# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: the longest duration accepted: now plus or minus it stays a valid time (``datetime``
#: ends at year 9999), so a retention, a ``--since`` or a silence cannot overflow
MAX_DURATION = timedelta(days=36_500)


def parse_duration(value: Any) -> timedelta:
    """Parse ``"500ms"``, ``"30s"``, ``"15m"``, ``"1h"``, ``"1h30m"``, ``"2d"``, ``"1w"``.

    Bare numbers are refused (seconds or minutes would be a guess). Raises a
    ``ValueError`` subclass naming the bad value.
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
            if total > MAX_DURATION.total_seconds():
                raise PydanticCustomError(
                    "duration_too_long", 'expected a duration of at most 100 years ("36500d"), got {got}',
                    {"got": _show(value)},
                )
            return timedelta(seconds=total)
    raise PydanticCustomError(
        "duration", 'expected a duration like "15m", got {got}', {"got": _show(value)}
    )


def _positive(td: timedelta) -> timedelta:
    if td <= timedelta(0):
        raise PydanticCustomError(
            "duration", 'expected a positive duration like "30s", got {got}', {"got": _show(td)}
        )
    return td


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]


def format_duration(td: timedelta) -> str:
    """Inverse of :func:`parse_duration` for display (``"15m"``, ``"1h30m"``, ``"500ms"``)."""
    ms = round(td.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return sign + "".join(out)


# --------------------------------------------------------------------------- small types

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(v: str) -> str:
    if not _ENV_NAME.fullmatch(v):
        # never echo it: a value that is not a variable name may be the secret itself
        raise PydanticCustomError(
            "env_name",
            'expected the name of an environment variable like "SLACK_TOKEN", got a value that'
            " is not a variable name (not shown, in case it is the secret itself)",
        )
    return v


#: the name of an environment variable holding a secret
EnvName = Annotated[str, AfterValidator(_env_name)]


def _non_empty_path(v: object) -> object:
    # Path("") is ".", which resolves to the config file's folder: a state_dir = "" (or an
    # empty DRIFTWARDEN_DAEMON__STATE_DIR) made `run` take that folder's files private
    if isinstance(v, str) and not v.strip():
        raise PydanticCustomError("empty_path", "expected a path, got an empty string")
    return v


#: a filesystem path; relative paths resolve against the config file's folder
FilePath = Annotated[Path, BeforeValidator(_non_empty_path), _StrictType(False)]


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/+")


def _url_shown(v: str) -> str:
    """A URL as an error message may quote it: without what may hold a secret, the
    ``user:password@`` part (``pg://…@host/db``) and the value of a ``password=``."""
    scheme = _SCHEME.match(v)
    head, rest = (scheme.group(0), v[scheme.end():]) if scheme else ("", v)
    if "@" in rest:  # the last one: a password may hold "@", "/" or "?" unencoded
        rest = "…@" + rest.rpartition("@")[2]
    return head + re.sub(r"(?i)(password=)[^&]*", r"\1…", rest)


def _url(v: str) -> str:
    ok = bool(re.match(r"https?://[^/\s]+", v)) and not any(c.isspace() for c in v)
    if ok:
        try:  # a port past 65535 or a broken [IPv6] host failed only at the first request
            parts = urlsplit(v)
            ok = bool(parts.hostname) and (parts.port is None or parts.port > 0)
        except ValueError:
            ok = False
    if not ok:
        raise PydanticCustomError(
            "url", "expected an http:// or https:// URL, got {got}", {"got": _show(_url_shown(v))}
        )
    return v


Url = Annotated[str, AfterValidator(_url)]


def _host_port(v: str) -> bool:
    host, sep, port = v.rpartition(":")
    if re.fullmatch(r"[\d.]+", host):  # looks like an IPv4 address: must be one (not 999.1.1.1)
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


# --------------------------------------------------------------------------- base


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, types strict, instances frozen."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, strict=True, allow_inf_nan=False
    )


#: the secrets that opening the store needs: all a command that only reads the store
#: resolves (``load_config(path, secrets=STORE_SECRETS)``), so an operator reading the
#: shared store needs neither the notifiers' nor the API's secrets
STORE_SECRETS = frozenset({"storage.password"})
_STORE_NOTE = "the secrets opening the store"


def _from_env(info: ValidationInfo, path: str) -> bool:
    """Whether the key at ``path`` was set by a ``DRIFTWARDEN_`` variable rather than
    written in the file (:func:`parse_config` passes the paths the variables set)."""
    return path in (info.context or {}).get("env_keys", ())


def _secret_pair(model: BaseModel, stem: str) -> None:
    if getattr(model, f"{stem}_env", None) and getattr(model, f"{stem}_file", None):
        raise _fail(
            f"{stem}_file", "expected either {stem}_env or {stem}_file, got both", stem=stem
        )


# --------------------------------------------------------------------------- sections


#: absolute, so the systemd unit (StateDirectory=driftwarden) and the container image
#: (a volume there) agree and nothing lands next to a read-only config file
DEFAULT_STATE_DIR = Path("/var/lib/driftwarden")


class DaemonConfig(Strict):
    state_dir: FilePath = DEFAULT_STATE_DIR
    http_listen: str = "127.0.0.1:9308"
    public_url: Url | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    api_token_env: EnvName | None = None
    api_token_file: FilePath | None = None
    tick_interval: PositiveDuration = timedelta(seconds=5)
    shutdown_timeout: PositiveDuration = timedelta(seconds=30)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    #: payload bytes kept per dead letter (0 keeps none)
    max_payload_bytes: int = Field(default=65_536, ge=0)
    #: HTTP: largest reference upload (bytes); streamed to disk, then parsed once
    max_reference_bytes: int = Field(default=128 * 1024 * 1024, ge=1)
    #: HTTP: largest JSON request body (bytes), e.g. a silence
    max_json_bytes: int = Field(default=65_536, ge=1)
    #: HTTP: a connection must send a complete request head within this long of
    #: opening or of its previous response (idle keep-alive, headers trickled)
    http_idle_timeout: PositiveDuration = timedelta(seconds=10)
    #: HTTP: a request body must arrive completely within this long (body trickled)
    http_body_timeout: PositiveDuration = timedelta(seconds=60)
    #: HTTP: open connections at once; beyond it new ones get 503 and are closed
    http_max_connections: int = Field(default=100, ge=1)
    #: HTTP: open connections at once from one client address; beyond it its new ones
    #: get 503 and are closed, so one client cannot hold them all (health probes too).
    #: Unset: 25, or http_max_connections if lower (see :attr:`client_connection_cap`)
    http_max_client_connections: int | None = Field(default=None, ge=1)
    #: HTTP: reads (dashboard, API, reports, /metrics) need the bearer token too;
    #: /healthz and /readyz never do
    protect_reads: bool = False

    @property
    def client_connection_cap(self) -> int:
        """Open connections one client address may hold: ``http_max_client_connections``,
        by default 25 or ``http_max_connections`` if lower."""
        if self.http_max_client_connections is not None:
            return self.http_max_client_connections
        return min(25, self.http_max_connections)

    @field_validator("http_listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if not _host_port(v):
            raise PydanticCustomError(
                "listen", 'expected host:port like "127.0.0.1:9308", got {got}', {"got": _show(v)}
            )
        return v

    @model_validator(mode="after")
    def _secrets(self) -> DaemonConfig:
        if self.http_max_client_connections is not None and self.http_max_client_connections > self.http_max_connections:
            raise _fail("http_max_client_connections", "expected at most http_max_connections ({most}): one"
                        " client could hold every connection; got {got}",
                        most=self.http_max_connections, got=self.http_max_client_connections)
        _secret_pair(self, "api_token")
        if self.protect_reads and not (self.api_token_env or self.api_token_file):
            raise _fail(
                "protect_reads",
                "expected daemon.api_token_env or daemon.api_token_file as well: reads would need a token"
                " that is not configured",
            )
        return self

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.http_listen}").rstrip("/")

    @property
    def listen_address(self) -> tuple[str, int]:
        """``http_listen`` as (host, port): an IPv6 host without its brackets."""
        host, _, port = self.http_listen.rpartition(":")
        return host.strip("[]"), int(port)


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


#: kafka-python consumer options the daemon sets itself: from the [kafka] key named, or
#: (None) because its correctness depends on the value it sets
_OWNED_CONSUMER_OPTIONS: dict[str, str | None] = {
    "bootstrap_servers": "kafka.bootstrap_servers", "client_id": "kafka.client_id", "group_id": "kafka.group_id",
    "security_protocol": "kafka.security_protocol", "sasl_mechanism": "kafka.sasl_mechanism",
    "sasl_plain_username": "kafka.sasl_username", "sasl_oauth_token_provider": "kafka.sasl_oauth_token_file",
    "ssl_cafile": "kafka.ssl_cafile", "ssl_certfile": "kafka.ssl_certfile", "ssl_keyfile": "kafka.ssl_keyfile",
    "ssl_check_hostname": "kafka.ssl_check_hostname", "auto_offset_reset": "kafka.auto_offset_reset",
    "session_timeout_ms": "kafka.session_timeout", "heartbeat_interval_ms": "kafka.heartbeat_interval",
    "max_poll_records": "kafka.max_poll_records",
    # offsets are committed by the daemon once what they cover is stored
    "enable_auto_commit": None, "auto_commit_interval_ms": None, "default_offset_commit_callback": None,
    # the label join relies on the range assignor giving partition N of both topics to one member
    "partition_assignment_strategy": None,
    # the records' bytes are decoded by the daemon; poll() must not end the consumer
    "key_deserializer": None, "value_deserializer": None, "consumer_timeout_ms": None,
    # objects, not values a config file can hold
    "kafka_client": None, "selector": None, "metric_reporters": None, "ssl_context": None, "socket_options": None,
    # GSSAPI is not a supported sasl_mechanism
    "sasl_kerberos_domain_name": None, "sasl_kerberos_name": None, "sasl_kerberos_service_name": None,
}


#: the types of the consumer options whose kafka-python default is None (no type to
#: read from it); api_version: a list like [2, 8] (made a tuple) or a string like "2.8"
_NONE_DEFAULT_TYPES: dict[str, tuple[type, ...]] = {
    "api_version": (list, str), "group_instance_id": (str,), "receive_buffer_bytes": (int,),
    "send_buffer_bytes": (int,), "proxy_url": (str,), "socks5_proxy": (str,), "ssl_ciphers": (str,),
    "ssl_crlfile": (str,),
}


def _consumer_option(key: str, value: Any) -> None:
    """Refuse a ``kafka.consumer_options`` entry kafka-python does not know, the daemon
    sets itself, or of the wrong type (it failed only when the consumer was made: a
    reconnect loop or a traceback)."""
    from difflib import get_close_matches  # noqa: PLC0415

    from kafka import KafkaConsumer  # noqa: PLC0415 - only for a config that has consumer_options

    defaults = KafkaConsumer.DEFAULT_CONFIG
    if key in _OWNED_CONSUMER_OPTIONS:
        own = _OWNED_CONSUMER_OPTIONS[key]
        raise _fail(key, f"set by the daemon from {own}: set that instead" if own else "set by the daemon itself")
    if key not in defaults:
        near = get_close_matches(key, [k for k in defaults if k not in _OWNED_CONSUMER_OPTIONS], n=1)
        raise _fail(key, "not a kafka-python consumer option" + (f' (did you mean "{near[0]}"?)' if near else ""))
    default = defaults[key]
    if default is None:
        want: tuple[type, ...] = _NONE_DEFAULT_TYPES.get(key, (str, int, list))
    elif isinstance(default, bool):
        want = (bool,)
    elif isinstance(default, int):
        want = (int,)
    elif isinstance(default, float):
        want = (int, float)
    elif isinstance(default, str):
        want = (str,)
    else:
        want = (type(default),)
    if key == "api_version" and isinstance(value, list) and not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise _fail(key, "expected a list of integers like [2, 8] or a string like \"2.8\", got {got}", got=_show(value))
    if not isinstance(value, want) or (int in want and bool not in want and isinstance(value, bool)):
        names = " or ".join({bool: "true/false", int: "an integer", float: "a number", str: "a string",
                             list: "a list"}.get(t, t.__name__) for t in want)
        raise _fail(key, "expected {names}, got {got}", names=names, got=_show(value))


#: a name Kafka accepts for a topic (its own rule: at most 249 of these characters)
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _topic_name(v: str | None) -> str | None:
    if v is not None and (not _TOPIC.fullmatch(v) or v in (".", "..")):
        raise PydanticCustomError(
            "topic", "expected a Kafka topic name (at most 249 letters, digits, '.', '_' or '-'), got {got}",
            {"got": _show(v)},
        )
    return v


TopicName = Annotated[str, AfterValidator(_topic_name)]


def _not_blank(v: str) -> str:
    if not v.strip():
        raise PydanticCustomError("blank", "expected a name, got {got}", {"got": _show(v)})
    return v


#: a name that is more than white space
Name = Annotated[str, AfterValidator(_not_blank)]


class KafkaConfig(Strict):
    bootstrap_servers: list[str] = Field(default=["localhost:9092"], min_length=1)
    group_id: Name = Field(default="driftwarden", min_length=1)
    client_id: Name = Field(default="driftwarden", min_length=1)
    predictions_topic: TopicName = "predictions"
    labels_topic: TopicName | None = "labels"
    dead_letter_topic: TopicName | None = None
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password_env: EnvName | None = None
    sasl_password_file: FilePath | None = None
    #: OAUTHBEARER: a file holding the current token (re-read whenever it changes) ...
    sasl_oauth_token_file: FilePath | None = None
    #: ... or a command printing one (a raw token, or JSON with access_token/expires_in)
    sasl_oauth_token_command: list[str] | None = Field(default=None, min_length=1)
    #: how long a command's token is reused when neither its JSON nor the token (a JWT's
    #: exp) says when it expires
    sasl_oauth_token_ttl: PositiveDuration = timedelta(minutes=5)
    ssl_cafile: FilePath | None = None
    ssl_certfile: FilePath | None = None
    ssl_keyfile: FilePath | None = None
    ssl_password_env: EnvName | None = None
    ssl_password_file: FilePath | None = None
    ssl_check_hostname: bool = True
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout: PositiveDuration = timedelta(seconds=10)
    heartbeat_interval: PositiveDuration = timedelta(seconds=3)
    poll_timeout: PositiveDuration = timedelta(milliseconds=500)
    commit_interval: PositiveDuration = timedelta(seconds=5)
    max_poll_records: int = Field(default=10_000, ge=1)
    max_message_bytes: int = Field(default=1_048_576, ge=64)
    #: an event time further ahead of its record's timestamp (and of the wall clock)
    #: than this is a dead letter: one far-future ``ts`` must not move the watermark
    max_future_skew: Duration = timedelta(hours=1)
    consumer_options: dict[str, Any] = {}

    @property
    def uses_tls(self) -> bool:
        """Whether the connection is encrypted (``SSL``, ``SASL_SSL``): the ``ssl_*`` keys apply."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        if isinstance(v, list):
            for i, s in enumerate(v):
                if isinstance(s, str) and not _host_port(s):
                    raise _fail(
                        f"[{i}]",
                        'expected host:port like "localhost:9092", got {got}',
                        got=_show(s),
                    )
        return v

    @field_validator("labels_topic", "dead_letter_topic", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        return None if v == "" else v  # "" switches the topic off (TOML has no null)

    @field_validator("consumer_options")
    @classmethod
    def _consumer_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            if "password" in key or "token" in key:
                raise _fail(
                    key,
                    "secrets are never literal: use kafka.sasl_password_env/sasl_password_file"
                    " or kafka.ssl_password_env/ssl_password_file",
                )
            _consumer_option(key, value)
        return v

    @model_validator(mode="after")
    def _security(self) -> KafkaConfig:
        _secret_pair(self, "sasl_password")
        _secret_pair(self, "ssl_password")
        sasl = self.security_protocol.startswith("SASL")
        tls = self.uses_tls
        # set but unused, they would let a PLAINTEXT connection pass for an encrypted or
        # authenticated one
        for key in sorted(self.model_fields_set):
            if getattr(self, key) == type(self).model_fields[key].default:  # ssl_check_hostname = true
                continue
            if key.startswith("ssl_") and not tls:
                raise _fail(key, 'expected only with security_protocol "SSL" or "SASL_SSL" (it is ignored'
                                 " otherwise), got security_protocol {p}", p=_show(self.security_protocol))
            if key in ("sasl_username", "sasl_password_env", "sasl_password_file") and not self.sasl_mechanism:
                raise _fail(key, 'expected only with a sasl_mechanism and security_protocol "SASL_PLAINTEXT"'
                                 ' or "SASL_SSL" (it is ignored otherwise), got security_protocol {p}',
                            p=_show(self.security_protocol))
        if self.ssl_certfile is None:  # the client loads the key and its password with a certificate only
            for key in ("ssl_keyfile", "ssl_password_env", "ssl_password_file"):
                if getattr(self, key) is not None:
                    raise _fail(key, "expected only with kafka.ssl_certfile (the client certificate it"
                                     " goes with; it is ignored otherwise)")
        for key in self.consumer_options:
            if key.startswith("ssl_") and not tls:
                raise _fail(f"consumer_options.{key}", 'expected only with security_protocol "SSL" or'
                            ' "SASL_SSL" (it is ignored otherwise), got security_protocol {p}',
                            p=_show(self.security_protocol))
        if sasl and not self.sasl_mechanism:
            raise _fail(
                "sasl_mechanism",
                'required when security_protocol is {p}; expected one of "PLAIN",'
                ' "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"',
                p=_show(self.security_protocol),
            )
        if self.sasl_mechanism and not sasl:
            raise _fail(
                "sasl_mechanism",
                'expected no SASL mechanism with security_protocol {p} (use "SASL_PLAINTEXT" or'
                ' "SASL_SSL"), got {got}',
                p=_show(self.security_protocol),
                got=_show(self.sasl_mechanism),
            )
        oauth = self.sasl_mechanism == "OAUTHBEARER"
        has_file, has_command = self.sasl_oauth_token_file is not None, self.sasl_oauth_token_command is not None
        if oauth and has_file == has_command:
            raise _fail(
                "sasl_oauth_token_file",
                'expected either sasl_oauth_token_file or sasl_oauth_token_command with sasl_mechanism'
                ' "OAUTHBEARER", got {got}',
                got="both" if has_file else "neither",
            )
        if not oauth and (has_file or has_command):
            key = "sasl_oauth_token_file" if has_file else "sasl_oauth_token_command"
            raise _fail(key, 'expected only with sasl_mechanism "OAUTHBEARER", got sasl_mechanism {m}',
                        m=_show(self.sasl_mechanism) if self.sasl_mechanism else "unset")
        if oauth:
            for key in ("sasl_username", "sasl_password_env", "sasl_password_file"):
                if getattr(self, key) is not None:
                    raise _fail(key, 'expected none with sasl_mechanism "OAUTHBEARER" (the token'
                                     " authenticates), got {got}", got=_show(getattr(self, key)))
        if self.sasl_mechanism and not oauth and not self.sasl_username:
            raise _fail(
                "sasl_username", "required with sasl_mechanism {m}", m=_show(self.sasl_mechanism)
            )
        if self.sasl_mechanism and not oauth and not (self.sasl_password_env or self.sasl_password_file):
            raise _fail(
                "sasl_password_env",
                "required with sasl_mechanism {m} (or sasl_password_file)",
                m=_show(self.sasl_mechanism),
            )
        if "sasl_oauth_token_ttl" in self.model_fields_set and not (oauth and has_command):
            raise _fail("sasl_oauth_token_ttl", 'expected only with sasl_mechanism "OAUTHBEARER" and'
                        " sasl_oauth_token_command (a token file is re-read whenever it changes; it is"
                        " ignored otherwise)")
        if self.dead_letter_topic is not None and self.dead_letter_topic == self.predictions_topic:
            raise _fail(
                "dead_letter_topic",
                "expected a topic other than predictions_topic (bad messages would be read back), got {got}",
                got=_show(self.dead_letter_topic),
            )
        if self.heartbeat_interval >= self.session_timeout:
            raise _fail(
                "heartbeat_interval",
                "expected less than session_timeout ({s}), got {got}",
                s=_show(self.session_timeout),
                got=_show(self.heartbeat_interval),
            )
        return self


class FieldMap(Strict):
    """Where each field lives in a message (top-level keys; dotted paths are not supported)."""

    event_id: str = Field(default="event_id", min_length=1)
    model: str = Field(default="model", min_length=1)
    version: str = Field(default="version", min_length=1)
    ts: str = Field(default="ts", min_length=1)
    features: str = Field(default="features", min_length=1)
    prediction: str = Field(default="prediction", min_length=1)
    segment: str = Field(default="segment", min_length=1)
    #: the ground truth in label events
    label: str = Field(default="label", min_length=1)
    #: prediction events: the serving latency (a number; default none); p50/p95/p99 per window
    latency: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> FieldMap:
        # a label event holds event_id, model, ts and label; a prediction event all the others
        seen: dict[str, str] = {}
        for key in ("event_id", "model", "version", "ts", "features", "prediction", "segment", "latency"):
            name = getattr(self, key)
            if name is not None and name in seen:
                raise _fail(key, "expected a field of its own, got {got}, which fields.{other} reads too",
                            got=_show(name), other=seen[name])
            seen[name] = key
        for key in ("event_id", "model", "ts"):
            if self.label == getattr(self, key):
                raise _fail("label", "expected a field of its own, got {got}, which fields.{other} reads too",
                            got=_show(self.label), other=key)
        return self


class FeaturesConfig(Strict):
    numerical: list[str] = []
    categorical: list[str] = []


def _window_extent(v: Any, by: Any) -> Any:
    if by == "count":
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
        raise PydanticCustomError(
            "rows",
            "expected a number of rows (a positive integer) for count windows, got {got}",
            {"got": _show(v)},
        )
    td = parse_duration(v)
    if td <= timedelta(0):
        raise PydanticCustomError(
            "positive", 'expected a positive duration like "15m", got {got}', {"got": _show(v)}
        )
    return td


class WindowConfig(Strict):
    type: Literal["tumbling", "sliding"] = "tumbling"
    by: Literal["time", "count"] = "time"
    #: a duration for time windows, a number of rows for count windows (default "15m" by time)
    size: timedelta | int
    slide: timedelta | int | None = None
    lateness: Duration = timedelta(minutes=1)
    min_rows: int = Field(default=30, ge=1)
    idle_timeout: PositiveDuration | None = timedelta(seconds=30)

    @model_validator(mode="before")
    @classmethod
    def _default_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and "size" not in data:
            if data.get("by", "time") != "count":
                return {**data, "size": timedelta(minutes=15)}
            raise _fail("size", "required for count windows; expected a number of rows like 1000")
        if isinstance(data, dict) and data.get("by") == "count" and "min_rows" not in data:
            size = data["size"]
            default = cls.model_fields["min_rows"].default
            if isinstance(size, int) and not isinstance(size, bool) and 0 < size < default:
                # the default above a smaller count window's size: no window could get a verdict
                return {**data, "min_rows": size}
        return data

    @field_validator("size", "slide", mode="before")
    @classmethod
    def _extent(cls, v: Any, info: ValidationInfo) -> Any:
        return None if v is None else _window_extent(v, info.data.get("by"))

    @model_validator(mode="after")
    def _shape(self) -> WindowConfig:
        example = '"5m"' if self.by == "time" else "1000"
        if self.by == "count":
            for key in ("lateness", "idle_timeout"):
                if key in self.model_fields_set:
                    raise _fail(key, 'expected only with by = "time" (a count window closes at its row'
                                     " count and has neither), got {got}", got=_show(getattr(self, key)))
        if self.by == "count" and self.min_rows > self.size:  # type: ignore[operator]
            raise _fail("min_rows", "expected at most size ({size}) for count windows (every window would"
                        " be too small for a verdict), got {got}", size=_show(self.size), got=self.min_rows)
        if self.type == "tumbling" and self.slide is not None and self.slide != self.size:
            raise _fail(
                "slide",
                'expected no slide for a tumbling window (set type = "sliding"), got {got}',
                got=_show(self.slide),
            )
        if self.type == "sliding":
            if self.slide is None:
                raise _fail("slide", "required for a sliding window, e.g. slide = {ex}", ex=example)
            if self.slide > self.size:  # type: ignore[operator]
                raise _fail(
                    "slide",
                    "expected at most size ({size}), got {got}",
                    size=_show(self.size),
                    got=_show(self.slide),
                )
            ratio = float(self.size / self.slide)  # type: ignore[operator, arg-type]
            if abs(ratio - round(ratio)) > 1e-9:
                raise _fail(
                    "slide",
                    "expected a whole divisor of size ({size}), got {got}",
                    size=_show(self.size),
                    got=_show(self.slide),
                )
        return self

    @property
    def step(self) -> Any:
        return self.slide if self.type == "sliding" else self.size


# --------------------------------------------------------------------------- drift


def _drift_registry() -> Any:
    """``detectors.drift.registry`` or ``None`` when it cannot be imported (yet)."""
    try:
        from detectors.drift import registry  # noqa: PLC0415

        registry.list_tests()
    except Exception:  # the registry is optional at config time: fall back to no check
        return None
    return registry


def known_drift_methods() -> set[str]:
    """Names registered in ``detectors`` (empty if the registry is unavailable)."""
    reg = _drift_registry()
    if reg is None:
        return set()
    return {t if isinstance(t, str) else t.name for t in reg.list_tests()}


def _drift_test(name: str) -> Any:
    if name == "auto":  # no import: loading a config stays fast (CLI, health checks)
        return None
    reg = _drift_registry()
    if reg is None:
        return None
    try:
        return reg.get_test(name)
    except Exception:
        return None


def _check_method(v: str) -> str:
    if v == "auto":
        return v
    names = known_drift_methods()
    if v != "auto" and names and v not in names and _drift_test(v) is None:
        raise PydanticCustomError(
            "method",
            'expected "auto" or one of: {names}, got {got}',
            {"got": _show(v), "names": ", ".join(sorted(names))},
        )
    return v


class ColumnDriftConfig(Strict):
    method: str = "auto"
    threshold: float | None = Field(default=None, gt=0)

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _check_method(v)


class DriftConfig(Strict):
    method: str = "auto"
    threshold: float | None = Field(default=None, gt=0)
    share: float = Field(default=0.5, gt=0, le=1)
    bins: Literal["evidently", "fixed"] = "evidently"
    multiple_testing: Literal["none", "bh"] = "none"
    prediction: bool = True
    columns: dict[str, ColumnDriftConfig] = {}
    #: "evidently": the tests' fixed thresholds and a share of columns (Evidently parity);
    #: "calibrated": thresholds and the dataset verdict calibrated on the reference
    thresholds: Literal["evidently", "calibrated"] = "evidently"
    #: calibrated: false-alarm level of the dataset verdict per stationary window
    alpha: float = Field(default=0.01, gt=0, le=0.5)
    #: calibrated: false-alarm level of each column's verdict per stationary window
    alpha_column: float = Field(default=0.01, gt=0, le=0.5)
    #: "domain_classifier": also a multivariate verdict (cross-validated ROC AUC)
    multivariate: Literal["none", "domain_classifier"] = "none"

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _check_method(v)

    @model_validator(mode="after")
    def _threshold_mode(self) -> DriftConfig:
        check_threshold_mode(self)
        return self


def check_threshold_mode(d: DriftConfig) -> None:
    """Options of one threshold mode are refused in the other (none is parsed and ignored)."""
    given = d.model_fields_set
    if d.thresholds == "calibrated":
        for key in ("share", "threshold"):
            if key in given:
                raise _fail(
                    key,
                    'applies only to thresholds = "evidently"; with "calibrated" the thresholds'
                    " come from the reference (set alpha and alpha_column instead)",
                )
        for col, cd in d.columns.items():
            if cd.threshold is not None:
                raise _fail(
                    f"columns.{col}.threshold",
                    'applies only to thresholds = "evidently"; with "calibrated" the thresholds'
                    " come from the reference (set alpha_column instead)",
                )
    else:
        for key in ("alpha", "alpha_column"):
            if key in given:
                raise _fail(key, 'applies only to thresholds = "calibrated"')


# --------------------------------------------------------------------------- models


class LimitsConfig(Strict):
    """Caps on what the stream controls, per model (see the README's "Limits")."""

    #: distinct versions with windows of their own; more go to the ``__other__`` bucket
    max_versions: int = Field(default=16, ge=1, le=10_000)
    #: distinct values per segment key with windows of their own; more go to ``__other__``
    max_segment_values: int = Field(default=64, ge=1, le=100_000)
    #: longer version or segment values go to ``__other__``
    max_value_length: int = Field(default=128, ge=1, le=4096)
    #: longer event ids are dead letters (ids are join keys: never cut)
    max_event_id_length: int = Field(default=256, ge=1, le=65_536)


#: Bytes of the keys a PostgreSQL B-tree index entry holds: 2704 (a third of a page) less
#: the entry's and its columns' headers. SQLite has no such bound: a key over it fails every
#: flush on PostgreSQL alone (a poison pill stalling the consumer), so limits that admit one
#: are refused with a PostgreSQL store.
PG_INDEX_KEY_BYTES = 2600
#: an ISO window bound as stored (``2026-11-23T14:00:00.000Z``)
_TIME_BYTES = 24


def pg_key_bytes(model: str, segments: list[str], limits: LimitsConfig) -> dict[str, int]:
    """The largest index keys the stream can make under ``limits``, in bytes (each
    character up to 4 in UTF-8): ``value`` the window tables' (``reference_members``,
    whose key holds the version and segment twice, once inside the window id),
    ``event_id`` the label join's ``(model, ts, event_id)``."""
    m = len(model.encode())
    k = max((len(s.encode()) for s in segments), default=0)
    v = 4 * limits.max_value_length
    segment = k + 1 + v if segments else 0
    window_id = m + 1 + v + 1 + segment + 1 + _TIME_BYTES + 1 + _TIME_BYTES
    return {"value": m + v + segment + window_id, "event_id": m + 8 + 4 * limits.max_event_id_length}


class PerformanceConfig(Strict):
    """The label join and performance windows of one model (see ``[labels]`` for timing)."""

    #: join this model's labels (kafka.labels_topic) and compute performance windows
    enabled: bool = False
    #: score models: the predicted class is the class of interest when score >= threshold
    threshold: float | None = None
    #: A/B and canary: the version every other live version is compared with
    baseline_version: str | None = Field(default=None, min_length=1)
    #: score models: whether the score is a probability in [0, 1] (log loss and Brier
    #: score are computed; a live score outside it is a dead letter ``out_of_range``), or
    #: not (a margin: those two stay NaN). Unset: the reference file's prediction column
    #: decides at start (every score in [0, 1]: probabilities); without one, each window
    #: as before (log loss and Brier only if every score of the window is in [0, 1])
    probabilities: bool | None = None


class ModelConfig(Strict):
    name: str = Field(min_length=1)
    task: Literal["classification", "regression"] = "classification"
    reference: FilePath
    #: "fixed": the reference file; "rolling": the previous reference_windows closed windows;
    #: "seasonal": the windows at the same phase of the previous reference_windows seasons
    reference_mode: Literal["fixed", "rolling", "seasonal"] = "fixed"
    reference_windows: int = Field(default=4, ge=1, le=100)
    rolling_include_drifted: bool = False
    season: PositiveDuration | None = None
    #: rows a reference needs (file, upload, start-up); default: ``window.min_rows``
    reference_min_rows: int | None = Field(default=None, ge=1)
    layout: Literal["nested", "flat"] = "nested"
    features: FeaturesConfig
    prediction: str = Field(default="prediction", min_length=1)
    prediction_type: Literal["numerical", "categorical"] = "numerical"
    label: str = Field(default="label", min_length=1)
    class_of_interest: str | int | None = 1
    fields: FieldMap = FieldMap()
    window: WindowConfig = WindowConfig()  # type: ignore[call-arg]  # size defaults to "15m"
    drift: DriftConfig = DriftConfig()
    segments: list[str] = []
    limits: LimitsConfig = LimitsConfig()
    performance: PerformanceConfig = PerformanceConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise PydanticCustomError(
                "name",
                "expected letters, digits, '_', '-' or '.', got {got}",
                {"got": _show(v)},
            )
        if v and not v.strip("."):
            # "." and "..": a URL path's and a file name's own and parent folder (clients
            # turn /api/v1/models/../windows into /api/v1/windows; uploads would land in
            # the state directory itself); longer runs of dots only read like them
            raise PydanticCustomError(
                "name",
                "expected a name with a letter, digit, '_' or '-' (a URL path or file name reads"
                " \".\" and \"..\" as a folder: the model's URLs and reference uploads would point"
                " elsewhere), got {got}",
                {"got": _show(v)},
            )
        return v

    @field_validator("reference")
    @classmethod
    def _reference(cls, v: Path) -> Path:
        if v.suffix.lower() not in (".csv", ".parquet", ".pq"):
            raise PydanticCustomError(
                "reference", "expected a .csv or .parquet file, got {got}", {"got": _show(v)}
            )
        return v

    @model_validator(mode="after")
    def _columns(self) -> ModelConfig:
        names = self.feature_names
        if not names:
            raise _fail(
                "features", "expected at least one numerical or categorical feature, got none"
            )
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise _fail(
                "features",
                "expected each feature once, got {dup} more than once",
                dup=", ".join(_show(d) for d in dup),
            )
        if self.prediction in names:
            raise _fail(
                "prediction",
                "expected a column distinct from the features, got {got}",
                got=_show(self.prediction),
            )
        known = [*names, self.prediction]
        if self.prediction in self.drift.columns and not self.drift.prediction:
            raise _fail(f"drift.columns.{self.prediction}", "expected no settings for the prediction with"
                        " drift.prediction = false (its drift is not judged)")
        if self.layout == "flat" and "features" in self.fields.model_fields_set:
            raise _fail("fields.features", 'expected only with layout = "nested" (flat messages hold the'
                        " features at the top level), got {got}", got=_show(self.fields.features))
        for col, cd in self.drift.columns.items():
            if col not in known:
                raise _fail(
                    f"drift.columns.{col}",
                    "unknown column {got}; expected a feature or the prediction: {known}",
                    got=_show(col),
                    known=", ".join(known),
                )
            kind = self._kind(col)
            test = _drift_test(cd.method)
            if test is not None and kind not in test.kinds:
                raise _fail(
                    f"drift.columns.{col}.method",
                    "expected a test for {kind} columns, got {got} (accepts {kinds})",
                    kind=kind,
                    got=_show(cd.method),
                    kinds=", ".join(test.kinds),
                )
        test = _drift_test(self.drift.method)
        if test is not None:
            for col in names:
                if col not in self.drift.columns and self._kind(col) not in test.kinds:
                    raise _fail(
                        "drift.method",
                        "expected a test for every feature kind, got {got} which does not accept"
                        " {kind} column {col} (override it in [models.drift.columns.{name}])",
                        got=_show(self.drift.method),
                        kind=self._kind(col),
                        col=_show(col),
                        name=col,
                    )
        return self

    @model_validator(mode="after")
    def _segments(self) -> ModelConfig:
        for i, key in enumerate(self.segments):
            if not key.strip():
                raise _fail(f"segments[{i}]", "expected a segment key, got {got}", got=_show(key))
            if key in self.segments[:i]:
                raise _fail(f"segments[{i}]", "expected each segment key once, got {got} again", got=_show(key))
        if not self.segments:
            if "segment" in self.fields.model_fields_set:
                raise _fail("fields.segment", "applies only with segments (it is ignored otherwise)")
            if "max_segment_values" in self.limits.model_fields_set:
                raise _fail("limits.max_segment_values", "applies only with segments (it is ignored otherwise)")
        return self

    @model_validator(mode="after")
    def _reference_mode(self) -> ModelConfig:
        check_reference_mode(self)
        return self

    @model_validator(mode="after")
    def _performance(self) -> ModelConfig:
        check_performance(self)
        return self

    def _kind(self, col: str) -> str:
        if col == self.prediction:
            return self.prediction_type
        return "categorical" if col in self.features.categorical else "numerical"

    @property
    def feature_names(self) -> list[str]:
        return [*self.features.numerical, *self.features.categorical]

    @property
    def min_reference_rows(self) -> int:
        """Rows a reference must have: ``reference_min_rows``, by default ``window.min_rows``.

        The window's ``min_rows`` is the operator's own statement of the smallest
        sample worth a drift verdict; the reference is the other sample of every
        test, so a smaller one is not worth judging against either. A 0-row
        reference makes every window "no drift", a 1-row one "drift".
        """
        return self.reference_min_rows if self.reference_min_rows is not None else self.window.min_rows


def check_reference_mode(m: ModelConfig) -> None:
    """``reference_windows``, ``rolling_include_drifted`` and ``season`` need their mode;
    a ``reference_min_rows`` calibrated thresholds would refuse anyway is refused here."""
    given = m.model_fields_set
    if m.drift.thresholds == "calibrated" and m.reference_min_rows is not None:
        from detectors.calibration import MIN_CALIBRATION_ROWS  # noqa: PLC0415

        if m.reference_min_rows < MIN_CALIBRATION_ROWS:
            raise _fail("reference_min_rows", 'expected at least {least} with drift.thresholds = "calibrated"'
                        " (a smaller reference is refused: its bootstrap is too coarse), got {got}",
                        least=MIN_CALIBRATION_ROWS, got=m.reference_min_rows)
    if m.reference_mode == "fixed":
        for key in ("reference_windows", "rolling_include_drifted"):
            if key in given:
                raise _fail(key, 'applies only to reference_mode = "rolling" or "seasonal"')
    if m.reference_mode != "seasonal" and m.season is not None:
        raise _fail("season", 'applies only to reference_mode = "seasonal"')
    if m.reference_mode == "seasonal":
        if m.season is None:
            raise _fail("season", 'required for reference_mode = "seasonal", e.g. season = "7d"')
        if m.window.by != "time":
            raise _fail("reference_mode", '"seasonal" needs time windows (window.by = "time")')
        step = m.window.step.total_seconds()
        ratio = m.season.total_seconds() / step
        if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
            raise _fail(
                "season",
                "expected a whole multiple of the window step ({step}), got {got}",
                step=_show(m.window.step),
                got=_show(m.season),
            )


def check_performance(m: ModelConfig) -> None:
    """What a model's label join needs, and options that apply only with it."""
    perf = m.performance
    given = perf.model_fields_set
    if not perf.enabled:
        for key in ("threshold", "baseline_version", "probabilities"):
            if key in given:
                raise _fail(f"performance.{key}", "applies only with performance.enabled = true")
        # read by the label join alone
        for key in ("label", "class_of_interest"):
            if key in m.model_fields_set:
                raise _fail(key, "applies only with performance.enabled = true (the label join reads it)")
        if "label" in m.fields.model_fields_set:
            raise _fail("fields.label", "applies only with performance.enabled = true (the label join reads it)")
        return
    if m.task == "regression" and "class_of_interest" in m.model_fields_set:
        raise _fail("class_of_interest", 'applies only to task = "classification"')
    if m.window.by != "time":
        raise _fail(
            "performance.enabled",
            "performance windows follow the predictions' event time:"
            ' expected window.by = "time", got "count"',
        )
    score = m.task == "classification" and m.prediction_type == "numerical"
    if m.task == "regression" and m.prediction_type != "numerical":
        raise _fail(
            "prediction_type",
            'expected "numerical" for a regression model with performance enabled, got {got}',
            got=_show(m.prediction_type),
        )
    for key in ("threshold", "probabilities"):
        if getattr(perf, key) is not None and not score:
            raise _fail(
                f"performance.{key}",
                'applies only to classifiers that publish a score (prediction_type = "numerical")',
            )
    if perf.probabilities and perf.threshold is not None and not 0.0 <= perf.threshold <= 1.0:
        # a threshold in percent (50) made every probability a negative: precision, recall
        # and F1 were 0 in every window, silently
        raise _fail(
            "performance.threshold",
            "expected a value in [0, 1] with performance.probabilities = true (scores are"
            " probabilities), got {got}",
            got=_show(perf.threshold),
        )
    if score and m.class_of_interest is None:
        raise _fail(
            "class_of_interest",
            "required for a classifier that publishes a score (the class the score is for)",
        )


# --------------------------------------------------------------------------- rules


Comparison = Literal[">", ">=", "<", "<=", "==", "!="]


class CusumConfig(Strict):
    """Tabular CUSUM over the rule's figure series, standardised by its in-control level."""

    type: Literal["cusum"]
    #: slack, in in-control standard deviations (0.5 finds a one-sigma shift fastest)
    k: float = Field(default=0.5, ge=0)
    #: decision interval, in in-control standard deviations
    h: float = Field(default=5.0, gt=0)
    #: in-control mean and standard deviation; default: learned from the first warmup windows
    target: float | None = None
    sigma: float | None = Field(default=None, gt=0)
    warmup: int = Field(default=20, ge=2)

    @model_validator(mode="after")
    def _warmup(self) -> CusumConfig:
        if "warmup" in self.model_fields_set and self.target is not None and self.sigma is not None:
            raise _fail("warmup", "applies only when target or sigma is learned (both are given, so"
                                  " nothing is)")
        return self


class PageHinkleyConfig(Strict):
    """Page–Hinkley over the rule's figure series (delta and threshold in the figure's units)."""

    type: Literal["page_hinkley"]
    delta: float = Field(default=0.005, ge=0)
    threshold: float = Field(gt=0)
    alpha: float = Field(default=0.9999, gt=0, le=1)
    warmup: int = Field(default=20, ge=1)


def _detector_shorthand(v: Any) -> Any:
    return {"type": v} if isinstance(v, str) else v


DetectorConfig = Annotated[
    CusumConfig | PageHinkleyConfig,
    Field(discriminator="type"),
    BeforeValidator(_detector_shorthand),
]


class RuleConfig(Strict):
    name: Name = Field(min_length=1)
    metric: str = Field(min_length=1)
    op: Comparison = ">"
    #: required except for metric "no_data"
    threshold: float = 0.0
    model: str | None = None
    column: str | None = None
    segment: str | None = None
    version: str | None = None
    relative: bool = False
    for_: int = Field(default=1, alias="for", ge=1)
    resolve_after: int = Field(default=1, ge=1)
    severity: Literal["warning", "critical"] = "warning"
    labels: dict[str, str] = {}
    notifiers: list[str] = []
    repeat_interval: PositiveDuration | None = None
    no_data_for: PositiveDuration | None = None
    #: a change detector over the figure's series instead of a threshold
    detector: DetectorConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _threshold(cls, data: Any) -> Any:
        if isinstance(data, dict) and "for_" in data:  # the attribute's name, not a key
            raise _fail("for_", 'unknown key; did you mean "for"?')
        if isinstance(data, dict) and data.get("metric") == "no_data":
            for key in ("for", "resolve_after", "op", "threshold", "relative", "column", "segment", "version"):
                if key in data:
                    raise _fail(key, 'expected none with metric "no_data" (it fires once the model has'
                                     " sent nothing for no_data_for, and resolves at its next event)")
        if isinstance(data, dict) and data.get("detector") is not None:
            check_detector_rule(data)
            return data
        if isinstance(data, dict) and "threshold" not in data and data.get("metric") != "no_data":
            raise _fail(
                "threshold",
                "required key is missing; expected the number {m} is compared with",
                m=_show(data.get("metric", "the metric")),
            )
        return data

    @field_validator("labels")
    @classmethod
    def _label_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise _fail(key, "expected a label name (a letter or '_', then letters, digits or '_'), got {got}",
                            got=_show(key))
        return v

    @model_validator(mode="after")
    def _no_data(self) -> RuleConfig:
        if self.metric == "no_data" and self.no_data_for is None:
            raise _fail(
                "no_data_for", 'required for metric "no_data"; expected a duration like "30m"'
            )
        if self.metric != "no_data" and self.no_data_for is not None:
            raise _fail(
                "no_data_for",
                'expected no no_data_for unless metric = "no_data", got {got} with metric {m}',
                got=_show(self.no_data_for),
                m=_show(self.metric),
            )
        return self


def check_detector_rule(data: dict[str, Any]) -> None:
    """A detector replaces the threshold: threshold, relative and no_data do not apply;
    op only says which direction to watch (">" up, "<" down, "!=" both)."""
    if data.get("metric") == "no_data":
        raise _fail("detector", 'expected no detector with metric "no_data"')
    for key in ("threshold", "relative"):
        if key in data:
            raise _fail(
                key,
                "expected no {name} with a detector (it signals a change in the series itself;"
                " op sets the direction)",
                name=key,
            )
    if data.get("op") == "==":
        raise _fail("op", 'expected ">", ">=", "<", "<=" or "!=" (both directions) with a detector, got "=="')


# --------------------------------------------------------------------------- notifiers


#: The longest retry delay a notifier may be configured with (the outbox's own limit).
MAX_BACKOFF = timedelta(days=7)


class RetryConfig(Strict):
    max_attempts: int = Field(default=12, ge=1)
    backoff: PositiveDuration = timedelta(seconds=5)
    max_backoff: PositiveDuration = timedelta(hours=1)
    timeout: PositiveDuration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _backoff(self) -> RetryConfig:
        if self.max_backoff < self.backoff:
            raise _fail(
                "max_backoff",
                "expected at least backoff ({b}), got {got}",
                b=_show(self.backoff),
                got=_show(self.max_backoff),
            )
        if self.max_backoff > MAX_BACKOFF:
            # the outbox cuts every wait (Retry-After included) to max_backoff: keep it sane
            raise _fail(
                "max_backoff",
                "expected at most {m}, got {got}",
                m=_show(MAX_BACKOFF),
                got=_show(self.max_backoff),
            )
        return self


class SlackNotifierConfig(RetryConfig):
    type: Literal["slack"]
    channel: str | None = None
    token_env: EnvName | None = None
    token_file: FilePath | None = None
    webhook_url_env: EnvName | None = None
    webhook_url_file: FilePath | None = None
    base_url: Url = "https://slack.com/api/"

    @field_validator("base_url")
    @classmethod
    def _slash(cls, v: str) -> str:
        return v if v.endswith("/") else v + "/"  # slack-sdk joins method names onto it

    @model_validator(mode="after")
    def _mode(self) -> SlackNotifierConfig:
        _secret_pair(self, "token")
        _secret_pair(self, "webhook_url")
        has_token = bool(self.token_env or self.token_file)
        has_hook = bool(self.webhook_url_env or self.webhook_url_file)
        if has_token == has_hook:
            raise _fail(
                "",
                "expected either token_env/token_file (with channel) or"
                " webhook_url_env/webhook_url_file, got {got}",
                got="both" if has_token else "neither",
            )
        if has_hook:
            for key in ("channel", "base_url"):
                if key in self.model_fields_set:
                    raise _fail(key, "expected only with token_env/token_file (an incoming webhook posts to"
                                     " its own channel at its own URL), got {got}", got=_show(getattr(self, key)))
        if has_token and not self.channel:
            raise _fail("channel", 'required with a bot token, e.g. channel = "#ml-alerts"')
        return self


class WebhookNotifierConfig(RetryConfig):
    type: Literal["webhook"]
    url: Url
    kind: Literal["alert", "retrain"] = "alert"
    secret_env: EnvName | None = None
    secret_file: FilePath | None = None
    cooldown: PositiveDuration | None = None

    @model_validator(mode="after")
    def _secret(self) -> WebhookNotifierConfig:
        _secret_pair(self, "secret")
        if self.cooldown is not None and self.kind != "retrain":
            raise _fail("cooldown", 'expected only with kind = "retrain" (alert notifications are grouped and'
                        " repeated by [alerting] and each rule's repeat_interval), got {got}",
                        got=_show(self.cooldown))
        if self.kind == "retrain" and not (self.secret_env or self.secret_file):
            raise _fail(
                "secret_env",
                'required for kind = "retrain" (retraining webhooks are signed); set secret_env'
                " or secret_file",
            )
        return self


NotifierConfig = Annotated[SlackNotifierConfig | WebhookNotifierConfig, Field(discriminator="type")]


# --------------------------------------------------------------------------- the rest


#: the labels every alert has (alerts.rules.Rule.instance_labels; "rule" is alertname),
#: besides each rule's own ``labels``
ALERT_LABELS = ("alertname", "model", "metric", "severity", "column", "segment", "version")


class AlertingConfig(Strict):
    repeat_interval: PositiveDuration = timedelta(hours=4)
    group_by: list[str] = ["model", "rule"]


#: default of ``labels.max_early``: labels that wait for their prediction, per model. Labels
#: normally wait only while their prediction is in flight (a label reaches the daemon before
#: it when the two topics' polls interleave so): a few flushes' worth
MAX_EARLY_LABELS = 1_000_000


class LabelsConfig(Strict):
    """Timing of the label join (event time), for models with performance enabled."""

    #: how long (event time) a prediction waits for its label before it leaves the join
    ttl: PositiveDuration = timedelta(days=7)
    #: how long a label that came before its prediction waits for it
    early_ttl: PositiveDuration = timedelta(days=1)
    #: at most this many labels wait for their prediction, per model; past it those stamped
    #: ahead of the wall clock, then the oldest, are dropped (counted): labels for ids that
    #: never come cannot grow the store for a whole early_ttl (1M rows: about 130 MB on
    #: SQLite with UUID ids)
    max_early: int = Field(default=MAX_EARLY_LABELS, ge=1)
    #: a performance window matures this long after its end (or, once ended, at coverage if sooner)
    delay: Duration = timedelta(hours=1)
    #: ... or once this share of its predictions is labelled
    coverage: float = Field(default=0.95, gt=0, le=1)
    #: a mature window that received late labels is recomputed at most this often
    recompute_interval: PositiveDuration = timedelta(minutes=1)
    #: bootstrap replicates per performance window (0: no confidence intervals)
    bootstrap: int = Field(default=200, ge=0, le=10_000)
    #: level of the confidence intervals (ci_low, ci_high)
    confidence: float = Field(default=0.95, gt=0, lt=1)

    @model_validator(mode="after")
    def _intervals(self) -> LabelsConfig:
        if self.bootstrap == 0 and "confidence" in self.model_fields_set:
            raise _fail("confidence", "applies only with bootstrap > 0 (bootstrap = 0 computes no intervals)")
        return self

    @field_validator("delay")
    @classmethod
    def _delay(cls, v: timedelta) -> timedelta:
        if v < timedelta(0):
            raise PydanticCustomError(
                "duration", 'expected a duration of 0s or more like "1h", got {got}', {"got": _show(v)}
            )
        return v


def _keep(value: Any) -> timedelta | None:
    """A retention: a positive duration, or ``"forever"`` (None)."""
    if value == "forever":
        return None
    try:
        td = parse_duration(value)
    except PydanticCustomError as exc:
        if exc.type == "duration_too_long":  # "forever" is what was meant
            raise PydanticCustomError(
                "retention", 'expected at most 100 years ("36500d"), or "forever", got {got}', {"got": _show(value)}
            ) from None
        raise PydanticCustomError(
            "retention", 'expected a duration like "90d", or "forever", got {got}', {"got": _show(value)}
        ) from None
    if td <= timedelta(0):
        raise PydanticCustomError(
            "retention",
            'expected a positive duration like "90d", or "forever" to keep rows for ever, got {got}',
            {"got": _show(value)},
        )
    return td


#: how long a table keeps its rows: a positive duration, or "forever" (None)
Keep = Annotated[timedelta | None, BeforeValidator(_keep)]


def _show_keep(td: timedelta | None) -> str:
    return '"forever"' if td is None else _show(td)


class RetentionConfig(Strict):
    """How long each table keeps its rows, and the dead-letter volume cap.

    Retentions are durations (``"90d"``) or ``"forever"``; zero and negative
    durations are refused. See :mod:`storage.retention` for what is never pruned.
    """

    windows: Keep = timedelta(days=90)
    metrics: Keep = timedelta(days=90)
    alerts: Keep = timedelta(days=365)
    deliveries: Keep = timedelta(days=30)
    dead_letters: Keep = timedelta(days=14)
    prune_interval: PositiveDuration = timedelta(hours=1)
    #: dead letters stored per reason, partition and minute; beyond: counted only
    dead_letters_per_minute: int = Field(default=DEAD_LETTERS_PER_MINUTE, ge=1)
    #: of those, how many keep their payload; the rest are stored without it
    dead_letter_payloads_per_minute: int = Field(default=DEAD_LETTER_PAYLOADS_PER_MINUTE, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in sorted(data):
                if isinstance(key, str) and key.endswith("_days") and key[:-5] in cls.model_fields:
                    value, new = data[key], key[:-5]
                    if value == 0:
                        raise _fail(key, 'renamed: write {new} = "forever" (0 kept rows for ever)', new=new)
                    n = value if isinstance(value, int) and value > 0 else 90
                    raise _fail(key, 'renamed: write {new} = "{n}d" (a duration, or "forever")', new=new, n=n)
            if "windows" in data and "metrics" not in data:
                # figures go with their windows: unset, metrics follows windows (its default,
                # 90d, refused windows = "7d" alone as longer than the windows); a bad
                # windows value is reported once, as itself
                try:
                    _keep(data["windows"])
                except PydanticCustomError:
                    return data
                data = {**data, "metrics": data["windows"]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RetentionConfig:
        if self.windows is not None and (self.metrics is None or self.metrics > self.windows):
            raise _fail(
                "metrics",
                "expected at most retention.windows ({w}): figures are deleted with their"
                " window, got {got}",
                w=_show_keep(self.windows),
                got=_show_keep(self.metrics),
            )
        if self.dead_letter_payloads_per_minute > self.dead_letters_per_minute:
            raise _fail(
                "dead_letter_payloads_per_minute",
                "expected at most retention.dead_letters_per_minute ({n}), got {got}",
                n=self.dead_letters_per_minute,
                got=self.dead_letter_payloads_per_minute,
            )
        return self


class ReportsConfig(Strict):
    """Window samples kept for Evidently reports (see :mod:`storage.samples`)."""

    #: rows of each closed window kept (a seeded random sample); 0 keeps none (no reports)
    sample_rows: int = Field(default=2000, ge=0, le=100_000)
    #: windows per model that keep their sample (the newest ones); 0 keeps none
    sample_windows: int = Field(default=200, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _both_on(self) -> ReportsConfig:
        for off, other in (("sample_rows", "sample_windows"), ("sample_windows", "sample_rows")):
            if getattr(self, off) == 0 and other in self.model_fields_set and getattr(self, other) != 0:
                raise _fail(other, "applies only with {off} > 0 ({off} = 0 keeps no samples)", off=off)
        return self


_PG_URL = re.compile(r"postgres(ql)?://", re.IGNORECASE)


def _libpq_parses(url: str) -> bool:
    """Whether libpq reads ``url`` (its own parser: bad brackets, unknown parameters such
    as ``?foo=bar``, a port past 65535 are refused here instead of at start)."""
    try:
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - only for a shared store
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return True
    try:
        params = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - psycopg.ProgrammingError: libpq refused it
        return False
    # several hosts give a list; an empty item is the default port (libpq)
    return all(p.isdigit() and 0 < int(p) < 65536 for p in str(params.get("port") or "").split(",") if p)


class StorageConfig(Strict):
    """Where figures and stream state live: SQLite in ``daemon.state_dir`` (no ``url``,
    the default), or a PostgreSQL shared by several instances (``url``)."""

    #: ``postgresql://user@host:5432/db?sslmode=require``; "" or absent: SQLite
    url: str | None = None
    password_env: EnvName | None = None
    password_file: FilePath | None = None
    #: connections to PostgreSQL at most (consumer, scheduler, outbox lanes, HTTP readers)
    pool_size: int = Field(default=8, ge=2, le=100)
    #: a statement (lock waits included) running longer fails; consumption pauses and retries
    statement_timeout: PositiveDuration = timedelta(seconds=30)

    @field_validator("url", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("url")
    @classmethod
    def _pg(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        if not _PG_URL.match(v) or any(c.isspace() for c in v) or not _libpq_parses(v):
            raise PydanticCustomError(
                "url", 'expected a URL like "postgresql://user@host:5432/db", got {got}',
                {"got": _show(_url_shown(v))},
            )
        netloc = v.split("://", 1)[1].split("/", 1)[0]
        userinfo = netloc.rpartition("@")[0]
        if userinfo.partition(":")[2] or re.search(r"[?&]password=", v, re.IGNORECASE):
            # never echo it: the value holds the secret
            if _from_env(info, "storage.url"):
                raise PydanticCustomError(
                    "url",
                    "a password must not be part of the URL (not shown); name the variable holding it in"
                    " storage.password_env (DRIFTWARDEN_STORAGE__PASSWORD_ENV), or use storage.password_file",
                )
            raise PydanticCustomError(
                "url",
                "a password must not be written in the file (not shown); use"
                " storage.password_env or storage.password_file",
            )
        return v

    @model_validator(mode="after")
    def _secrets(self) -> StorageConfig:
        _secret_pair(self, "password")
        if self.url is None and (self.password_env or self.password_file):
            raise _fail("password_env" if self.password_env else "password_file",
                        "expected only with storage.url (SQLite has no password)")
        return self


class Config(Strict):
    daemon: DaemonConfig = DaemonConfig()
    kafka: KafkaConfig = KafkaConfig()
    models: list[ModelConfig] = Field(min_length=1)
    rules: list[RuleConfig] = []
    notifiers: dict[str, NotifierConfig] = {}
    alerting: AlertingConfig = AlertingConfig()
    labels: LabelsConfig = LabelsConfig()
    retention: RetentionConfig = RetentionConfig()
    reports: ReportsConfig = ReportsConfig()
    storage: StorageConfig = StorageConfig()
    #: Resolved secrets by dotted path (``notifiers.slack.token``); filled by :func:`load_config`.
    secrets: dict[str, SecretStr] = Field(default_factory=dict, exclude=True, repr=False)

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def model_field(self) -> str:
        """The message field naming the model, ``fields.model`` (the same for every model:
        it is read before the message's model is known; see :func:`_post_checks`)."""
        return self.models[0].fields.model

    @property
    def joins_labels(self) -> bool:
        """Whether a label stream is read: a labels topic and a model with performance on."""
        return self.kafka.labels_topic is not None and any(m.performance.enabled for m in self.models)

    #: configured secrets the loader was asked not to resolve (see ``load_config(secrets=...)``)
    _unresolved: frozenset[str] = PrivateAttr(default=frozenset())
    _warnings: tuple[str, ...] = PrivateAttr(default=())

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the loader found worth fixing but not refusing, ``key: what and the fix``
        (a secret file every user can read): ``run`` logs them, ``check`` prints them."""
        return self._warnings

    def secret(self, path: str) -> str | None:
        """The resolved secret at ``path`` (None when none is configured there). A secret
        left unresolved (a config loaded for reading the store) raises ``LookupError``
        rather than pass for one that is not configured."""
        if path in self._unresolved:
            raise LookupError(f"{path}: not resolved (the config was loaded with only {_STORE_NOTE})")
        s = self.secrets.get(path)
        return s.get_secret_value() if s is not None else None


# --------------------------------------------------------------------------- messages


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _join(path: str, key: str) -> str:
    if not key:
        return path
    if not path or key.startswith("["):
        return path + key
    return f"{path}.{key}"


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _step(tp: Any, part: Any) -> Any:
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, f in tp.model_fields.items():
            if part in (name, f.alias):
                return f.annotation
        return None
    if origin is list and isinstance(part, int):
        return typing.get_args(tp)[0]
    if origin is dict:
        return typing.get_args(tp)[1]
    if origin in (Union, types.UnionType):  # a discriminated union: part is the tag
        for member in typing.get_args(tp):
            member = _unwrap(member)
            if isinstance(member, type) and issubclass(member, BaseModel):
                tag = member.model_fields.get("type")
                if tag is not None and part in typing.get_args(tag.annotation):
                    return member
    return None


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the table at ``loc`` (empty if unknown)."""
    tp: Any = Config
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items() if n != "secrets"]
    return []


_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _describe(err: Any) -> str:
    raw_loc = tuple(err["loc"])
    loc = raw_loc
    # the discriminated union adds its tag ("slack"/"webhook") to the location: drop it
    if len(loc) >= 3 and loc[0] == "notifiers" and loc[2] in ("slack", "webhook"):
        loc = loc[:2] + loc[3:]
    ctx = err.get("ctx") or {}
    path = _join(_loc(loc), str(ctx.get("key", "")))
    kind, got = err["type"], err.get("input")
    if kind == "extra_forbidden":
        key = str(raw_loc[-1]) if raw_loc else "?"
        allowed = _keys_at(raw_loc[:-1])
        if f"{key}_env" in allowed:
            return f"{path}: unknown key; secrets are never literal: use {key}_env or {key}_file"
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        if close:
            return f'{path}: unknown key; did you mean "{close[0]}"?'
        if allowed:
            return f"{path}: unknown key; expected one of: {', '.join(sorted(allowed))}"
        return f"{path}: unknown key"
    if kind == "missing":
        if loc == ("models",):
            return "models: required key is missing; expected at least one [[models]] table"
        return f"{path}: required key is missing"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{path}: expected an integer, got {_show(got)}"
    if kind in ("float_type", "float_parsing"):
        return f"{path}: expected a number, got {_show(got)}"
    if kind == "finite_number":
        return f"{path}: expected a finite number, got {_show(got)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{path}: expected true or false, got {_show(got)}"
    if kind == "string_type":
        return f"{path}: expected a string, got {_show(got)}"
    if kind == "list_type":
        return f"{path}: expected a list, got {_show(got)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{path}: expected a table, got {_show(got)}"
    if kind in ("path_type", "path_parsing"):
        return f"{path}: expected a path (a string), got {_show(got)}"
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        expected = ", ".join(f'"{o}"' for o in options) or str(ctx.get("expected", ""))
        return f"{path}: expected one of {expected}, got {_show(got)}"
    tags = '"cusum" or "page_hinkley"' if "detector" in loc else '"slack" or "webhook"'
    if kind == "union_tag_invalid":
        return f"{path}.type: expected {tags}, got {_show(ctx.get('tag'))}"
    if kind == "union_tag_not_found":
        return f"{path}.type: required key is missing; expected {tags}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"{path}: expected a number {words} {bound}, got {_show(got)}"
    if kind == "too_short":
        if loc == ("models",):
            return "models: expected at least one [[models]] table, got none"
        return f"{path}: expected at least {ctx.get('min_length', 1)} entry, got none"
    if kind == "string_too_short":
        return f'{path}: expected a non-empty string, got ""'
    if kind == "time_delta_type":
        return f'{path}: expected a duration like "15m", got {_show(got)}'
    msg = str(err["msg"])
    return f"{path}: {msg}" if path else msg


# --------------------------------------------------------------------------- loading


def _abs(p: Path, base: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else base / p


def _exposed(key: str, p: Path) -> str | None:
    """A warning when the secret file ``p`` (of config key ``key``) can be read by every
    user on the machine. Not refused: container runtimes mount secrets with modes the
    operator does not always choose (a Kubernetes Secret volume is 0644 by default)."""
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except OSError:
        return None
    if not mode & stat.S_IROTH:
        return None
    return (f"{key}: {p} is readable by every user (mode {mode:04o}); restrict it: chmod 600 {p}"
            " (640 if the daemon reads it through its group)")


def _read_secret(
    problems: list[str], base: Path, path: str, env: str | None, file: Path | None,
    environ: typing.Mapping[str, str] | None = None, warnings: list[str] | None = None,
) -> SecretStr | None:
    if env:
        value = (os.environ if environ is None else environ).get(env)
        if value is None:
            problems.append(f'{path}_env: environment variable "{env}" is not set')
            return None
        if not value.strip():
            problems.append(f'{path}_env: environment variable "{env}" is empty')
            return None
        return SecretStr(value)
    if file:
        p = _abs(file, base)
        try:
            text = p.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(f"{path}_file: expected a readable file, got {_show(file)} ({reason})")
            return None
        if not text.strip():
            problems.append(
                f"{path}_file: expected a file holding the secret, got {_show(file)} (empty)"
            )
            return None
        exposed = _exposed(f"{path}_file", p)
        if exposed and warnings is not None:
            warnings.append(exposed)
        return SecretStr(text)
    return None


def _pg_key_problems(path: str, m: ModelConfig) -> list[str]:
    """Limits of model ``m`` admitting values whose keys a PostgreSQL index cannot hold."""
    out = []
    sizes = pg_key_bytes(m.name, m.segments, m.limits)
    for key, kind in (("max_value_length", "value"), ("max_event_id_length", "event_id")):
        size = sizes[kind]
        if size <= PG_INDEX_KEY_BYTES:
            continue
        given = getattr(m.limits, key)
        # the key grows by the same bytes with each character the limit admits
        per = size - pg_key_bytes(m.name, m.segments, m.limits.model_copy(update={key: given - 1}))[kind]
        most = max(given - -(-(size - PG_INDEX_KEY_BYTES) // per), 0)
        out.append(
            f"{path}.{key}: expected at most {most} with a PostgreSQL store (storage.url): longer values"
            f" (up to 4 bytes a character) make index keys of up to {size} bytes, over the"
            f" {PG_INDEX_KEY_BYTES} a PostgreSQL index entry holds; got {given}"
        )
    return out


def _unusable_webhook_url(value: str) -> str | None:
    """Why a Slack incoming-webhook URL read from a secret cannot be used (None: it can)."""
    try:
        _url(value)
    except PydanticCustomError:
        return "expected an http:// or https:// URL (a Slack incoming webhook)"
    return None


def _unusable_signing_secret(value: str) -> str | None:
    """Why a webhook signing secret cannot be used by Standard Webhooks (not base64, under
    24 bytes; None: it can)."""
    from alerts.notifiers.webhook import check_secret  # noqa: PLC0415 - httpx only with a webhook

    try:
        check_secret(value)
    except ValueError as exc:
        return f"{exc}, e.g. whsec_ and the base64 of 32 random bytes (`openssl rand -base64 32`)"
    return None


def _kafka_tls_problems(k: KafkaConfig, base: Path, password: str | None) -> list[str]:
    """The Kafka TLS files loaded as the client loads them at its first connection, where a
    file that exists but holds no certificate, or a key that does not match its certificate
    or its password, was only a connection error repeated for ever (``check`` said "no
    answer"). Files that do not exist are reported by the caller. Never prompts for a
    password: a missing one is an empty one."""
    import ssl  # noqa: PLC0415 - only with TLS files

    def reason(exc: Exception) -> str:
        text = getattr(exc, "reason", None) or str(exc)
        return str(text).replace("_", " ").lower() if isinstance(exc, ssl.SSLError) else str(text)

    out: list[str] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca = _abs(k.ssl_cafile, base) if k.ssl_cafile is not None else None
    if ca is not None and ca.is_file():
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError, ValueError) as exc:
            out.append(f"kafka.ssl_cafile: no usable CA certificate in {_show(str(ca))}: {reason(exc)}")
    cert = _abs(k.ssl_certfile, base) if k.ssl_certfile is not None else None
    key = _abs(k.ssl_keyfile, base) if k.ssl_keyfile is not None else None
    if cert is not None and cert.is_file() and (key is None or key.is_file()):
        try:
            ctx.load_cert_chain(str(cert), str(key) if key is not None else None, password=password or "")
        except (ssl.SSLError, OSError, ValueError) as exc:
            with_key = f" with the key {_show(str(key))}" if key is not None else ""
            hint = ("" if password else "; an encrypted key needs its password in kafka.ssl_password_env or"
                    " kafka.ssl_password_file")
            out.append(f"kafka.ssl_certfile: cannot load the client certificate {_show(str(cert))}{with_key}"
                       f" (and kafka.ssl_password, if set): {reason(exc)}{hint}")
    return out


class _Checked(typing.NamedTuple):
    problems: list[str]
    secrets: dict[str, SecretStr]
    #: configured secrets not resolved (not in ``wanted``)
    unresolved: set[str]
    warnings: list[str]


#: files the daemon reads that hold a secret without being one of the ``*_file`` keys
_SECRET_FILES = ("ssl_keyfile", "sasl_oauth_token_file")


def _post_checks(
    cfg: Config, base: Path, environ: typing.Mapping[str, str] | None = None,
    wanted: typing.Collection[str] | None = None,
) -> _Checked:
    """Checks that need the file system, the environment or the whole config. Secrets
    are resolved (and required) when their path is in ``wanted`` (default: all)."""
    problems: list[str] = []
    secrets: dict[str, SecretStr] = {}
    unresolved: set[str] = set()
    warnings: list[str] = []

    def secret(path: str, env: str | None, file: Path | None) -> None:
        if wanted is not None and path not in wanted:
            if env or file:
                unresolved.add(path)
            return
        s = _read_secret(problems, base, path, env, file, environ, warnings)
        if s is not None:
            secrets[path] = s

    def notifier_secret(path: str, env: str | None, file: Path | None, unusable: typing.Callable[[str], str | None]) -> None:
        # one its notifier cannot use is refused here (run and check exit 2), naming where it
        # came from and never the value, rather than failing the daemon when it is built
        secret(path, env, file)
        got = secrets.get(path)
        why = unusable(got.get_secret_value()) if got is not None else None
        if why:
            source = f"environment variable {env}" if env else f"file {file}"
            problems.append(f"{path}: {why}; read from {source} (not shown)")

    def exists(path: str, p: Path | None) -> None:
        if p is not None and not _abs(p, base).is_file():
            # "not found" about a folder that is there would send the user looking for it
            why = "a folder" if _abs(p, base).is_dir() else "not found"
            problems.append(
                f"{path}: expected an existing file, got {_show(p)} ({why} in {base})"
            )

    secret("daemon.api_token", cfg.daemon.api_token_env, cfg.daemon.api_token_file)
    secret("kafka.sasl_password", cfg.kafka.sasl_password_env, cfg.kafka.sasl_password_file)
    secret("kafka.ssl_password", cfg.kafka.ssl_password_env, cfg.kafka.ssl_password_file)
    secret("storage.password", cfg.storage.password_env, cfg.storage.password_file)
    for key in ("ssl_cafile", "ssl_certfile", *_SECRET_FILES):
        exists(f"kafka.{key}", getattr(cfg.kafka, key))
    if wanted is None and cfg.kafka.uses_tls:
        pw = secrets.get("kafka.ssl_password")
        problems += _kafka_tls_problems(cfg.kafka, base, pw.get_secret_value() if pw is not None else None)
    for key in _SECRET_FILES:
        file = getattr(cfg.kafka, key)
        if file is not None and (wanted is None or f"kafka.{key}" in wanted):
            exposed = _exposed(f"kafka.{key}", _abs(file, base))
            if exposed:
                warnings.append(exposed)
    for name, n in cfg.notifiers.items():
        if isinstance(n, SlackNotifierConfig):
            secret(f"notifiers.{name}.token", n.token_env, n.token_file)
            notifier_secret(f"notifiers.{name}.webhook_url", n.webhook_url_env, n.webhook_url_file,
                            _unusable_webhook_url)
        else:
            notifier_secret(f"notifiers.{name}.secret", n.secret_env, n.secret_file, _unusable_signing_secret)

    seen: dict[str, str] = {}
    for i, m in enumerate(cfg.models):
        other = seen.get(m.name.casefold())
        if other == m.name:
            problems.append(
                f"models[{i}].name: expected a unique model name, got {_show(m.name)} again"
            )
        elif other is not None:
            problems.append(
                f"models[{i}].name: expected a name unique regardless of case, got {_show(m.name)} next to"
                f" {_show(other)} (a case-insensitive file system gives both one reference upload folder)"
            )
        seen.setdefault(m.name.casefold(), m.name)
        exists(f"models[{i}].reference", m.reference)
        if cfg.storage.url is not None:
            problems += _pg_key_problems(f"models[{i}].limits", m)

    fields_model = {m.fields.model for m in cfg.models}
    if len(fields_model) > 1:
        i = next(i for i, m in enumerate(cfg.models) if m.fields.model != cfg.models[0].fields.model)
        problems.append(
            f"models[{i}].fields.model: expected the same field as models[0] ({_show(cfg.models[0].fields.model)}):"
            f" it is read to learn a message's model, before the model is known; got {_show(cfg.models[i].fields.model)}"
        )
    labelled = [i for i, m in enumerate(cfg.models) if m.performance.enabled]
    if cfg.labels.delay >= cfg.labels.ttl:
        problems.append(
            f"labels.delay: expected less than labels.ttl ({_show(cfg.labels.ttl)}): a window must mature"
            f" before its predictions leave the join, got {_show(cfg.labels.delay)}"
        )
    if labelled and cfg.kafka.labels_topic is None:
        problems.append(
            f"kafka.labels_topic: required by models[{labelled[0]}].performance.enabled;"
            ' expected a topic name like "labels", got "" (off)'
        )
    if cfg.joins_labels and cfg.kafka.dead_letter_topic == cfg.kafka.labels_topic:
        problems.append(
            "kafka.dead_letter_topic: expected a topic other than labels_topic, which a model with performance"
            f" enabled reads (bad messages would be read back), got {_show(cfg.kafka.dead_letter_topic)}"
        )
    if cfg.kafka.labels_topic is not None and cfg.kafka.labels_topic == cfg.kafka.predictions_topic:
        problems.append(
            f"kafka.labels_topic: expected a topic other than predictions_topic, got {_show(cfg.kafka.labels_topic)}"
        )

    if cfg.labels.model_fields_set and not labelled:
        problems.append("labels: expected only with a model whose [models.performance] enabled = true"
                        " (no model joins labels, so these settings change nothing)")
    if cfg.storage.url is None and "statement_timeout" in cfg.storage.model_fields_set:
        problems.append(f"storage.statement_timeout: expected only with storage.url (PostgreSQL's own"
                        f" statement timeout; SQLite has none), got {_show(cfg.storage.statement_timeout)}")
    if cfg.storage.url is None and "pool_size" in cfg.storage.model_fields_set:
        problems.append(f"storage.pool_size: expected only with storage.url (a PostgreSQL pool; the SQLite"
                        f" store has no pool), got {cfg.storage.pool_size}")
    if cfg.storage.url is not None and "sqlite_synchronous" in cfg.daemon.model_fields_set:
        problems.append(f"daemon.sqlite_synchronous: expected only without storage.url (the SQLite store),"
                        f" got {_show(cfg.daemon.sqlite_synchronous)}")
    group_labels = {*ALERT_LABELS, "rule"} | {k for r in cfg.rules for k in r.labels}
    for j, g in enumerate(cfg.alerting.group_by):
        if g not in group_labels:
            close = difflib.get_close_matches(g, sorted(group_labels), n=1)
            problems.append(f"alerting.group_by[{j}]: unknown alert label {_show(g)}"
                            + (f'; did you mean "{close[0]}"?' if close else
                               f"; expected one of: {', '.join(sorted(group_labels))}"))

    model_names = sorted({m.name for m in cfg.models})
    rule_names: set[str] = set()
    for i, r in enumerate(cfg.rules):
        if r.name in rule_names:
            problems.append(
                f"rules[{i}].name: expected a unique rule name, got {_show(r.name)} again"
            )
        rule_names.add(r.name)
        if r.model is not None and r.model not in model_names:
            problems.append(
                f"rules[{i}].model: unknown model {_show(r.model)}; expected one of: {', '.join(model_names)}"
            )
            continue
        targets = [cfg.model(r.model)] if r.model else cfg.models
        available = set().union(*(model_metrics(m) for m in targets))
        if r.metric not in available:
            problems.append(f"rules[{i}].metric: {_unknown_metric(r.metric, available, targets)}")
        problems += _rule_shape_problems(i, r, targets)
        if r.column is not None and r.column != "*":
            columns = sorted(
                {c for m in targets for c in (*m.feature_names, m.prediction)}
                | {m.label for m in targets if m.performance.enabled}  # label_drift's column
            )
            if r.column not in columns:
                problems.append(
                    f"rules[{i}].column: unknown column {_show(r.column)}; expected one of: {', '.join(columns)}"
                )
        for j, target in enumerate(r.notifiers):
            if target not in cfg.notifiers:
                known = ", ".join(sorted(cfg.notifiers)) or "(none configured)"
                problems.append(
                    f"rules[{i}].notifiers[{j}]: unknown notifier {_show(target)}; expected one of: {known}"
                )
    return _Checked(problems, secrets, unresolved, warnings)


def _rule_shape_problems(i: int, r: RuleConfig, targets: list[ModelConfig]) -> list[str]:
    """A rule whose column, segment or relative threshold its metric's figures never have:
    it would never fire (each was accepted and silently never matched)."""
    out = []
    which = f"model {_show(targets[0].name)}" if len(targets) == 1 else "any model"
    if r.metric in DATASET_METRICS and r.column is not None:
        out.append(f"rules[{i}].column: {_show(r.metric)} is a figure of the whole window, stored without a"
                   f" column; expected no column, got {_show(r.column)}")
    if r.metric in COLUMN_METRICS and r.column is None:
        out.append(f'rules[{i}].column: required for {_show(r.metric)}, a figure of each column; expected a'
                   ' column name or "*" (any column)')
    if r.segment is not None:
        keys = sorted({k for m in targets for k in m.segments})
        # KEY=VALUE, the KEY one of them (a key may hold "=" itself)
        known = any(r.segment.startswith(f"{k}=") for k in keys)
        if not keys:
            out.append(f"rules[{i}].segment: {which} has no segments ([models] segments), so no window has"
                       f" segment {_show(r.segment)}")
        elif r.segment != "*" and not known:
            out.append(f'rules[{i}].segment: expected "*" or KEY=VALUE with KEY one of: {", ".join(keys)};'
                       f" got {_show(r.segment)}")
    if r.relative and not has_reference_figure(r.metric):
        out.append(f"rules[{i}].relative: the reference has no {_show(r.metric)} of its own to compare with"
                   " (relative thresholds apply to row_count, missing_share and performance figures)")
    out += _baseline_version_problems(i, r, targets)
    return out


def _baseline_version_problems(i: int, r: RuleConfig, targets: list[ModelConfig]) -> list[str]:
    """A comparison rule (``<figure>_delta``, ``<figure>_worse_p``) pinned to the version
    every target model compares the others *with*: the baseline's own windows never carry
    those figures, so the rule would never fire (an easy slip: the baseline's name is the
    one in the config). Models without a baseline are left to the metric check."""
    if r.version is None or r.version == "*" or not r.metric.endswith(("_delta", "_worse_p")):
        return []
    baselines = {m.performance.baseline_version for m in targets if m.performance.baseline_version is not None}
    if baselines != {r.version}:
        return []
    return [f"rules[{i}].version: {_show(r.version)} is the baseline_version the other versions are compared"
            f" with, so its own windows never have {_show(r.metric)}; expected the canary's version, \"*\""
            " (each other version) or no version (any version)"]


_SHAPES = {
    ("classification", "numerical"): "a classifier that publishes a score",
    ("classification", "categorical"): "a classifier that publishes a class",
    ("regression", "numerical"): "a regression model",
}


def _unknown_metric(metric: str, available: set[str], targets: list[ModelConfig]) -> str:
    """Why a rule's metric can never exist, and what would make it exist."""
    which = f"model {_show(targets[0].name)}" if len(targets) == 1 else "any model"
    full = PerformanceConfig(enabled=True, baseline_version="x")

    def names(m: ModelConfig, **update: Any) -> set[str]:
        return model_metrics(m.model_copy(update={"performance": full, **update}))

    if metric in LATENCY_METRICS:
        return f'{_show(metric)} needs [models.fields] latency = "<field>" ({which} has no such figure)'
    if any(metric in names(m) for m in targets):
        hint = "needs [models.performance] enabled = true"
        if metric.endswith(("_delta", "_worse_p")):
            hint += " and baseline_version"
        return f"{_show(metric)} {hint} ({which} has no such figure)"
    shapes = [
        text for (task, kind), text in _SHAPES.items()
        if any(metric in names(m, task=task, prediction_type=kind) for m in targets)
    ]
    if shapes:
        return f"{_show(metric)} is a figure of {' or '.join(shapes)}; {which} is not one"
    close = difflib.get_close_matches(metric, sorted(available), n=1, cutoff=0.7)
    if close:
        return f'unknown metric {_show(metric)} for {which}; did you mean "{close[0]}"?'
    return f"unknown metric {_show(metric)} for {which}; expected one of: {', '.join(sorted(available))}"


def _resolve_paths(value: Any, base: Path) -> Any:
    """A copy of ``value`` with every relative :class:`Path` made absolute against ``base``."""
    if isinstance(value, Path):
        return _abs(value, base)
    if isinstance(value, BaseModel):
        update = {}
        for name in type(value).model_fields:
            if name == "secrets":
                continue
            old = getattr(value, name)
            new = _resolve_paths(old, base)
            if new is not old:
                update[name] = new
        return value.model_copy(update=update) if update else value
    if isinstance(value, list):
        new_list = [_resolve_paths(v, base) for v in value]
        return new_list if any(a is not b for a, b in zip(new_list, value, strict=True)) else value
    if isinstance(value, dict):
        new_dict = {k: _resolve_paths(v, base) for k, v in value.items()}
        return new_dict if any(new_dict[k] is not value[k] for k in value) else value
    return value



# --------------------------------------------------------------------------- environment

#: every override's name starts with this; the key path follows, its parts joined by ``__``
ENV_PREFIX = "DRIFTWARDEN_"
ENV_SEPARATOR = "__"
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def env_override_names(environ: typing.Mapping[str, str]) -> list[str]:
    """The variables that override config keys: ``DRIFTWARDEN_`` then a path with ``__``.

    Names without a double underscore (``DRIFTWARDEN_SLACK_TOKEN``, ``DRIFTWARDEN_CONFIG``)
    are not overrides: they are free for secrets named by ``*_env`` keys.
    """
    return sorted(n for n in environ if n.startswith(ENV_PREFIX) and ENV_SEPARATOR in n[len(ENV_PREFIX):])


def _named_env_vars(node: Any) -> set[str]:
    """The variables the config's ``*_env`` keys name (secrets, not overrides)."""
    out: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.endswith("_env") and isinstance(value, str):
                out.add(value)
            else:
                out |= _named_env_vars(value)
    elif isinstance(node, list):
        for value in node:
            out |= _named_env_vars(value)
    return out


def env_near_misses(environ: typing.Mapping[str, str], cfg: Config) -> list[str]:
    """Variables that look meant to override a key but are not read as overrides
    (``key: what and the fix``, as :attr:`Config.warnings`): the prefix in lower case
    (``driftwarden_daemon__log_level``), or one underscore where the key's parts need two
    (``DRIFTWARDEN_DAEMON_LOG_LEVEL`` for ``daemon.log_level``). A variable a ``*_env``
    key names is a secret, never one of these."""
    named = _named_env_vars(cfg.model_dump(by_alias=True, exclude={"secrets"}))
    out: list[str] = []
    for var in sorted(environ):
        upper = var.upper()
        if var in named or not upper.startswith(ENV_PREFIX):
            continue
        rest = upper[len(ENV_PREFIX):]
        if not var.startswith(ENV_PREFIX):
            if ENV_SEPARATOR in rest:
                out.append(f"{log_text(var)}: not read (override names are upper case); did you mean {upper}?")
            continue
        if ENV_SEPARATOR in rest:
            continue
        section, _, key = rest.lower().partition("_")
        field = Config.model_fields.get(section)
        tp = _unwrap(field.annotation) if field is not None else None
        if key and isinstance(tp, type) and issubclass(tp, BaseModel) and key in tp.model_fields:
            out.append(f"{var}: not read (an override separates the key's parts with {ENV_SEPARATOR});"
                       f" did you mean {ENV_PREFIX}{section.upper()}{ENV_SEPARATOR}{key.upper()}?")
    return out


def _union_members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _model_members(tp: Any, node: Any) -> list[type[BaseModel]]:
    """The config classes a table may be: one, or a tagged union narrowed by its ``type``."""
    members = [m for m in _union_members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(members) > 1 and isinstance(node, dict) and "type" in node:
        tagged = [m for m in members if node["type"] in typing.get_args(m.model_fields["type"].annotation)]
        return tagged or members
    return members


def _env_value(raw: str, tp: Any, var: str) -> Any:
    """Convert an environment string to what the key at ``tp`` expects (the documented rule)."""
    members = _union_members(tp)
    kinds = {typing.get_origin(m) or m for m in members}
    if kinds <= {bool}:
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise ValueError(f"expected true or false, got {_show(raw)}")
    if kinds & {list, dict} or any(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
        text = raw.strip()
        if text.startswith(("[", "{")):
            try:
                return tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"expected a TOML array or inline table, got {_show(raw)} ({exc})") from None
        if list in kinds:
            return [part.strip() for part in raw.split(",") if part.strip()]
        raise ValueError(f'expected a TOML inline table like {{size = "5m"}}, got {_show(raw)}')
    if kinds <= {int} or kinds <= {int, float} or kinds <= {float}:
        if _INT.fullmatch(raw.strip()) and int in kinds:
            return int(raw)
        if float in kinds and _FLOAT.fullmatch(raw.strip()):
            return float(raw)
        raise ValueError(f"expected {'an integer' if float not in kinds else 'a number'}, got {_show(raw)}")
    if kinds & {int, float} and _INT.fullmatch(raw.strip()) and int in kinds:
        return int(raw)  # a key taking a number or a string ("size": rows or a duration)
    if float in kinds and _FLOAT.fullmatch(raw.strip()):
        return float(raw)
    if Any in kinds:  # pass-through tables (consumer_options): TOML if it parses
        try:
            return tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            return raw
    return raw  # strings, paths, durations, choices: as written, no quotes


def _apply_env_var(data: dict[str, Any], var: str, raw: str) -> str:
    """Set the key ``var`` names in ``data``; returns its dotted path. Raises ValueError."""
    parts = var[len(ENV_PREFIX):].split(ENV_SEPARATOR)
    if any(not p for p in parts):
        raise ValueError(
            "expected DRIFTWARDEN_ then key names joined by double underscores,"
            " like DRIFTWARDEN_DAEMON__STATE_DIR"
        )
    node: Any = data
    tp: Any = Config
    path = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        members = _model_members(tp, node)
        origin = typing.get_origin(_unwrap(tp))
        if members:
            fields = {k: f for m in members for k, f in m.model_fields.items() if k != "secrets"}
            names = {(f.alias or k): f for k, f in fields.items()}
            key = next((n for n in names if n.lower() == part.lower()), None)
            if key is None and f"{part.lower()}_env" in names:
                env_var = ENV_PREFIX + ENV_SEPARATOR.join([*parts[:i], f"{part.upper()}_ENV"])
                raise ValueError(
                    f"secrets are never literal: set {env_var} to the name of the variable"
                    f" holding {_join(path, part.lower())}"
                )
            if key is None:
                close = difflib.get_close_matches(part.lower(), list(names), n=1, cutoff=0.6)
                hint = f'; did you mean {ENV_PREFIX}{ENV_SEPARATOR.join([*parts[:i], close[0].upper()])}?' if close else (
                    f"; expected one of: {', '.join(sorted(names))}")
                raise ValueError(f"unknown key {_join(path, part.lower())}{hint}")
            child_tp = names[key].annotation
            path = _join(path, key)
        elif origin is list:
            if not part.isdigit():
                raise ValueError(f"{path} is a list: expected an index like {path.upper()}__0, got {part}")
            index = int(part)
            key = index  # type: ignore[assignment]
            child_tp = typing.get_args(_unwrap(tp))[0]
            if index > len(node):
                raise ValueError(f"{path}[{index}]: the list has {len(node)} entr{'y' if len(node) == 1 else 'ies'};"
                                 f" an override may add the next one ({path}[{len(node)}]) at most")
            if index == len(node) and not last:
                node.append({})
            path = f"{path}[{index}]"
        elif origin is dict:
            key = next((k for k in node if k.lower() == part.lower()), part.lower())
            child_tp = typing.get_args(_unwrap(tp))[1]
            path = _join(path, key)
        else:
            raise ValueError(f"{path} is not a table: it has no key {part.lower()}")
        if last:
            value = _env_value(raw, child_tp, var)
            if isinstance(node, list) and key == len(node):
                node.append(value)
            else:
                node[key] = value
            return path
        child = node[key] if (isinstance(node, list) or key in node) else None
        if child is None:
            child = [] if typing.get_origin(_unwrap(child_tp)) is list else {}
            node[key] = child
        if not isinstance(child, dict | list):
            raise ValueError(f"{path} is a value in the file, not a table")
        node, tp = child, child_tp
    return path


def apply_env_overrides(
    data: dict[str, Any], environ: typing.Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """A copy of the TOML document with every ``DRIFTWARDEN_<PATH>`` variable applied.

    The rule: the key path in upper case with ``__`` between its parts
    (``models[0].window.size`` is ``DRIFTWARDEN_MODELS__0__WINDOW__SIZE``, a notifier
    ``notifiers.slack.channel`` is ``DRIFTWARDEN_NOTIFIERS__SLACK__CHANNEL``; names match
    case-insensitively, a list index may add the next entry). Values: text as is (no
    quotes), numbers and ``true``/``false`` where the key takes them, a list as a TOML
    array or comma-separated, a table as a TOML inline table. Returns the document,
    ``{key path: variable}`` and the problems (each naming its variable).
    """
    import copy  # noqa: PLC0415

    doc = copy.deepcopy(data)
    origins: dict[str, str] = {}
    problems: list[str] = []
    for var in env_override_names(environ):
        try:
            origins[_apply_env_var(doc, var, environ[var])] = var
        except ValueError as exc:
            problems.append(f"{var}: {exc}")
    return doc, origins, problems


def _name_env(problem: str, origins: dict[str, str]) -> str:
    """``path: message`` with the variables that set ``path`` (or keys below or above it) named."""
    path, sep, rest = problem.partition(": ")
    if not sep or not origins:
        return problem
    hits = sorted(
        var for key, var in origins.items()
        if key == path or key.startswith((path + ".", path + "[")) or path.startswith((key + ".", key + "["))
    )
    return f"{path} (from {', '.join(hits)}): {rest}" if hits else problem


def parse_config(
    data: dict[str, Any],
    *,
    base_dir: Path | None = None,
    source: str = "",
    environ: typing.Mapping[str, str] | None = None,
    secrets: typing.Collection[str] | None = None,
) -> Config:
    """Validate an already-parsed TOML document; relative paths resolve against ``base_dir``.

    With ``environ``, ``DRIFTWARDEN_<PATH>`` variables override keys first (see
    :func:`apply_env_overrides`); an error about such a key names its variable.
    ``secrets``: the dotted paths of the secrets to resolve, and so to require (e.g.
    :data:`STORE_SECRETS`); default: every configured one. The others are still
    validated as keys (``*_env`` a variable name, not both ``_env`` and ``_file``) but
    not read; :meth:`Config.secret` refuses them.
    """
    base = (base_dir or Path.cwd()).resolve()
    origins: dict[str, str] = {}
    if environ is not None:
        data, origins, env_problems = apply_env_overrides(data, environ)
        if env_problems:
            raise ConfigError(env_problems, source)
    try:
        cfg = Config.model_validate(data, context={"env_keys": frozenset(origins)})
    except ValidationError as exc:
        raise ConfigError([_name_env(_describe(e), origins) for e in exc.errors()], source) from None
    checked = _post_checks(cfg, base, environ, secrets)
    if checked.problems:
        raise ConfigError([_name_env(p, origins) for p in checked.problems], source)
    cfg = _resolve_paths(cfg, base).model_copy(update={"secrets": checked.secrets})
    register_secrets(cfg)
    cfg._unresolved = frozenset(checked.unresolved)
    misses = env_near_misses(environ, cfg) if environ is not None else []
    cfg._warnings = tuple(_name_env(w, origins) for w in checked.warnings) + tuple(misses)
    return cfg


def register_secrets(cfg: Config) -> None:
    """Have :func:`storage.redaction.redact` take ``cfg``'s resolved secrets out of every
    error text stored, logged or shown from now on: each secret's value (a URL-valued one,
    ``webhook_url``, also by its parts: a receiver's 404 page echoes the path), and the
    password in ``storage.url`` (``postgresql://user:password@host/db`` or ``?password=``)."""
    for path, value in cfg.secrets.items():
        plain = value.get_secret_value()
        redaction.register([plain])
        if path.endswith(".webhook_url"):
            redaction.register_url(plain)
    if cfg.storage.url is not None:
        try:
            password = urlsplit(cfg.storage.url).password
        except ValueError:  # libpq's own forms (several hosts) need not parse here
            password = None
        found = re.findall(r"(?i)(?:^|[?&])password=([^&]*)", cfg.storage.url)
        redaction.register([unquote(p) for p in [password or "", *found]])


def load_config(
    path: str | Path,
    *,
    environ: typing.Mapping[str, str] | None = None,
    secrets: typing.Collection[str] | None = None,
) -> Config:
    """Read and validate a TOML file, then the ``DRIFTWARDEN_<PATH>`` overrides of ``environ``
    (default: this process's environment). Raises :class:`ConfigError` naming every problem.

    ``secrets``: resolve only these (see :func:`parse_config`): the command line's read
    commands pass :data:`STORE_SECRETS`; ``run`` and ``check`` resolve every one."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"cannot read {p}: {exc.strerror or exc}"], str(p)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(["expected a UTF-8 text file, got undecodable bytes"], str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax: {exc}"], str(p)) from None
    return parse_config(
        data, base_dir=p.resolve().parent, source=str(p), environ=os.environ if environ is None else environ,
        secrets=secrets,
    )
