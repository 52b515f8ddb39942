"""Loading a configuration: the embedded defaults (`defaults.yaml`, the NRP's settings),
then one YAML file, then environment, then flags; validated into frozen objects."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from exporter.config import rules
from exporter.config.errors import ConfigError, convert, validation_errors
from exporter.config.schema import Config
from exporter.config.values import kind_name, short


def default_document() -> dict[str, Any]:
    """The embedded defaults as a plain mapping (a fresh copy)."""
    text = resources.files("exporter").joinpath("defaults.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


MAX_FILE_BYTES = 1_000_000  # a configuration is a few KB; more is a mistake or an attack
MERGE_TAG = "tag:yaml.org,2002:merge"  # the `<<` key


class _Loader(yaml.SafeLoader):
    """YAML without anchors and aliases (an alias repeats a node by reference, and a few
    hundred bytes of nested aliases expand to billions of values once read), and without a
    key twice in one mapping (YAML keeps the last silently: a second `grid:` would drop the
    first one's node rules)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue  # `<<:` merges a mapping in, whose keys this one may override
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # a list or mapping as a key: the constructor refuses it
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.YAMLError(
                    f"line {line}: key {key!r} is already set at line {seen[key]} of the same "
                    "mapping; write it once"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
            raise yaml.YAMLError(
                f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not "
                "supported in configuration files; write the value out"
            )
        return super().compose_node(parent, index)


def read_document(path: str) -> dict[str, Any]:
    """The mapping in a YAML file, or ConfigError with a one-line reason."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(MAX_FILE_BYTES + 1)
        if len(text) > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES} bytes, not a config file")
        data = yaml.load(text, Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or "invalid YAML"
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys, not a {kind_name(data)}"
        )
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`: mappings merge key by key, anything else replaces."""
    result = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def set_path(document: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested mapping, creating mappings on the way. A part of the path the
    document holds as something else (`prometheus: [1]`, then PROMETHEUS_URL) is an error
    that names it."""
    *parents, last = dotted.split(".")
    node = document
    for depth, key in enumerate(parents):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            where = ".".join(parents[: depth + 1])
            raise ConfigError(f"{where}: expected a mapping, got {kind_name(node)} {short(node)}")
    node[last] = value


def build(document: Mapping[str, Any]) -> Config:
    """Validate a complete document (defaults already merged in): every shape error at once,
    else every cross-section problem at once, as one ConfigError."""
    errors = validation_errors(document, Config)
    if errors:
        raise ConfigError(*errors)
    config: Config = convert(document, Config)
    found = [f"{path}: {message}" for path, message in rules.problems(config)]
    if found:
        raise ConfigError(*found)
    return config


def load(
    path: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults, then the file at `path`, then environment, then `overrides` (dotted keys)."""
    document = default_document()
    if path:
        document = merge(document, read_document(path))
    env = environ or {}
    origin: dict[str, str] = {}  # keys set from elsewhere than a file, and from where
    for variable, dotted in ENVIRONMENT.items():
        if env.get(variable):
            set_path(document, dotted, env[variable])
            origin[dotted] = variable
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_path(document, dotted, value)
            origin[dotted] = "the command line"
    _pod_identity(document, env)
    _yaml_off(document)
    try:
        return build(document)
    except ConfigError as exc:
        raise ConfigError(*(_with_origin(line, origin) for line in exc.lines)) from None


# Environment variables that set a key, as the deployment examples use them.
ENVIRONMENT = {
    "PROMETHEUS_URL": "prometheus.url",
    "PROMETHEUS_BEARER_TOKEN_FILE": "prometheus.bearer_token_file",
}


def _with_origin(line: str, origin: Mapping[str, str]) -> str:
    """An error line about a key no file set says where the value came from: nothing in
    the file matches `prometheus.url: invalid URL 'prom:9090'` when PROMETHEUS_URL set it."""
    for dotted, source in origin.items():
        if line.startswith(dotted) and line[len(dotted) : len(dotted) + 1] in (":", "[", "."):
            key, _, rest = line.partition(":")
            return f"{key} (from {source}):{rest}"
    return line


def _yaml_off(document: dict[str, Any]) -> None:
    """`recording_rules: off`, as the docs write it, is the boolean false to YAML."""
    section = document.get("prometheus")
    if isinstance(section, dict) and section.get("recording_rules") is False:
        section["recording_rules"] = "off"


def _pod_identity(document: dict[str, Any], env: Mapping[str, str]) -> None:
    """In direct mode, fill a pod's missing name and namespace from the downward API
    environment (POD_NAME, POD_NAMESPACE; HOSTNAME is the pod name in Kubernetes) and the
    node from NODE_NAME."""
    direct = document.get("direct")
    if document.get("source") != "direct" or not isinstance(direct, dict):
        return
    if not direct.get("node") and env.get("NODE_NAME"):
        direct["node"] = env["NODE_NAME"]
    for pod in direct.get("pods") or []:
        if isinstance(pod, dict):
            if not pod.get("pod"):
                pod["pod"] = env.get("POD_NAME") or env.get("HOSTNAME")
            if not pod.get("namespace"):
                pod["namespace"] = env.get("POD_NAMESPACE") or "default"
