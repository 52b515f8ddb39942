"""Configuration: embedded defaults, merging, environment and strict validation with one-line
errors naming the key."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import (
    ConfigError,
    build,
    default_document,
    load,
    merge,
    selector_problem,
)
from exporter.config.errors import MAX_LINE
from exporter.durations import parse_duration, promql_duration
from exporter.text import redact


def write(tmp_path: Path, data: object, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def error_for(tmp_path: Path, data: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, data))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_are_the_nrp_settings() -> None:
    config = load()
    assert config.exporter.listen == ":29877"
    assert config.exporter.interval == 30
    assert config.exporter.min_tokens_per_second == 5
    assert config.prometheus.window == 300
    assert config.grid.default_region == "CAMX"
    assert config.workload.default_preset == "agentic"
    assert config.workload.presets["agentic"].input_tokens == 40000
    nrp = config.baselines["nrp-envelope"]
    assert (nrp.prefill.low, nrp.prefill.mid, nrp.prefill.high) == (1, 3, 10)
    assert (nrp.decode.low, nrp.decode.mid, nrp.decode.high) == (0.5, 1.5, 3)
    assert config.upstream.gpu_labels.pod == ["exported_pod", "pod"]
    assert config.upstream.gpu_labels.node == ["Hostname", "hostname"]


def test_file_merges_over_defaults_and_lists_replace(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            {
                "prometheus": {"url": "http://prom:9090/", "timeout": "3s"},
                "grid": {"nodes": [{"pattern": "^gpu-", "region": "NYUP"}]},
                "baselines": {"small": {"decode": {"low": 0.1, "mid": 0.2, "high": 0.3}}},
            },
        )
    )
    assert config.prometheus.url == "http://prom:9090"
    assert config.prometheus.timeout == 3
    assert config.prometheus.window == 300  # untouched default
    assert [rule.region for rule in config.grid.nodes] == ["NYUP"]
    assert config.baselines["small"].decode.mid == 0.2
    assert config.baselines["small"].prefill.mid == 0.03  # merged, not replaced


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, {"prometheus": {"url": "http://from-file:9090"}})
    assert load(path).prometheus.url == "http://from-file:9090"
    env = {"PROMETHEUS_URL": "http://from-env:9090"}
    assert load(path, environ=env).prometheus.url == "http://from-env:9090"
    flags = {"prometheus.url": "http://from-flag:9090", "exporter.listen": None}
    assert load(path, overrides=flags, environ=env).prometheus.url == "http://from-flag:9090"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"prometheus": {"timout": "3s"}}, "prometheus.timout: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"prometheus": {"timeout": "soon"}}, "prometheus.timeout: invalid duration 'soon'"),
        ({"prometheus": {"timeout": "-5s"}}, "prometheus.timeout: invalid duration '-5s'"),
        ({"prometheus": {"window": 0}}, "prometheus.window: duration must be positive"),
        ({"exporter": {"interval": True}}, "exporter.interval: invalid duration True"),
        ({"exporter": {"min_tokens_per_second": -1}}, "exporter.min_tokens_per_second:"),
        ({"exporter": {"max_models": 0}}, "exporter.max_models:"),
        ({"exporter": {"max_models": "many"}}, "exporter.max_models:"),
        ({"exporter": {"listen": "29877"}}, "exporter.listen: invalid listen address"),
        (
            {"exporter": {"log_level": "loud"}},
            "exporter.log_level: invalid enum value 'loud' (one of: debug, info, warning, error)",
        ),
        ({"source": "pull"}, "source: invalid enum value 'pull' (one of: prometheus, direct)"),
        (
            {
                "catalog": {
                    "models": [
                        {
                            "pattern": "x",
                            "total_params_b": 2,
                            "active_params_b": 1,
                            "precision": "fp64",
                        }
                    ]
                }
            },
            "catalog.models[0].precision: invalid enum value 'fp64' (one of: bf16,",
        ),
        ({"facility": {"pue": 0.9}}, "facility.pue:"),
        ({"facility": {"pue": "high"}}, "facility.pue:"),
        (
            {"grid": {"nodes": [{"pattern": "([", "region": "CAMX"}]}},
            "grid.nodes[0].pattern: invalid regular expression",
        ),
        (
            {"grid": {"nodes": [{"pattern": "x", "region": "MARS"}]}},
            "grid.nodes[0].region: unknown region 'MARS'",
        ),
        ({"grid": {"default_region": "MARS"}}, "grid.default_region: unknown region 'MARS'"),
        (
            {"grid": {"default_region": "camx"}},
            "grid.default_region: unknown region 'camx' (did you mean 'CAMX'?)",
        ),
        (
            {"grid": {"nodes": [{"pattern": "x", "region": "CAMZ"}]}},
            "grid.nodes[0].region: unknown region 'CAMZ' (did you mean 'CAMX'?)",
        ),
        (
            {"grid": {"regions": {"SITE": {"market": 10}}}},
            "grid.regions.SITE.location: required for a region not built in",
        ),
        ({"grid": {"regions": {"CAMX": {"market": -1}}}}, "grid.regions.CAMX.market:"),
        ({"workload": {"default_preset": "chat"}}, "workload.default_preset: unknown preset"),
        (
            {"workload": {"presets": {"x": {"input_tokens": 0, "output_tokens": 1}}}},
            "workload.presets.x.input_tokens:",
        ),
        (
            {"baselines": {"small": {"prefill": {"low": 1, "mid": 0.5, "high": 2}}}},
            "baselines.small.prefill: bounds must satisfy low <= mid <= high",
        ),
        ({"comparison": {"always": ["cloud"]}}, "comparison.always[0]: unknown baseline"),
        (
            {"catalog": {"models": [{"pattern": "x", "total_params_b": 1, "active_params_b": 2}]}},
            "catalog.models[0]: active_params_b must not exceed total_params_b",
        ),
        ({"prometheus": {"url": "prom:9090"}}, "prometheus.url: invalid URL 'prom:9090': want"),
        ({"prometheus": {"url": "http://"}}, "prometheus.url: invalid URL 'http://': no host"),
        ({"prometheus": {"url": "http://:9090"}}, "invalid URL 'http://:9090': no host"),
        ({"prometheus": {"url": "http://p:nine"}}, "'http://p:nine': the port is not a number"),
        ({"prometheus": {"url": "http://p:99999"}}, "'http://p:99999': the port is not a number"),
        ({"prometheus": {"url": "http://p q:9090"}}, "'http://p q:9090': contains whitespace"),
        ({"prometheus": {"url": ""}}, "prometheus.url: invalid URL '': empty"),
        ({"direct": {"dcgm_urls": ["ftp://n/metrics"]}}, "direct.dcgm_urls[0]: invalid URL"),
        (
            {"prometheus": {"headers": {"Authorization": "Bearer x"}}},
            "prometheus.headers.Authorization: do not put Authorization here",
        ),
        (
            {
                "prometheus": {
                    "bearer_token_file": "/t",
                    "basic_auth": {"username": "u", "password_file": "/p"},
                }
            },
            "prometheus.basic_auth: set bearer_token_file or basic_auth, not both",
        ),
        (
            {"prometheus": {"url": "http://p:9090/api/v1/query"}},
            "prometheus.url: ends in the query path, which the exporter appends",
        ),
        ({"prometheus": {"url": "http://p:9090/api/v1"}}, "prometheus.url: ends in the query"),
        (
            {"prometheus": {"recording_rules": True}},
            "prometheus.recording_rules: expected 'auto' or 'off', got a boolean True "
            "(YAML reads an unquoted on, off, yes or no as a boolean: quote it)",
        ),
        ({"upstream": {"gpu_labels": {"pod": []}}}, "upstream.gpu_labels.pod:"),
        (
            {"upstream": {"gpu_labels": {"pod": ["bad-label"]}}},
            "upstream.gpu_labels.pod[0]: invalid Prometheus label name",
        ),
        (
            {"upstream": {"metrics": {"prompt_tokens": "1x"}}},
            "upstream.metrics.prompt_tokens: invalid Prometheus metric name",
        ),
        ({"prometheus": []}, "prometheus:"),
        ({"exporter": {"interval": "100ms"}}, "exporter.interval: must be at least 1s"),
        ({"prometheus": {"gpu_selector": 'job="dcgm'}}, "prometheus.gpu_selector: 'job=\"dcgm'"),
        ({"prometheus": {"token_selector": "{job=vllm}"}}, "prometheus.token_selector: '"),
        ({"prometheus": {"gpu_selector": '{job="x"'}}, "gpu_selector: unbalanced braces"),
        ({"prometheus": {"namespaces": "team-("}}, "prometheus.namespaces: 'team-(' is not a"),
        (
            {"prometheus": {"namespaces": "team-(?!ops)"}},
            "prometheus.namespaces: 'team-(?!ops)' uses a negative lookahead, which PromQL's "
            "regular expressions (RE2) lack",
        ),
        ({"prometheus": {"namespaces": "(a)-\\1"}}, "uses a backreference (\\1), which"),
        ({"prometheus": {"namespaces": "(?<=x)y"}}, "uses a lookbehind, which"),
        ({"prometheus": {"namespaces": "team-a++"}}, "uses a possessive quantifier, which"),
        ({"prometheus": {"headers": {"X-Org": "a\nb"}}}, "headers.X-Org: the value contains a"),
        ({"prometheus": {"headers": {"X Org": "a"}}}, "headers.X Org: not a valid HTTP header"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, data: dict, expected: str) -> None:
    assert expected in error_for(tmp_path, data)


@pytest.mark.parametrize(
    "pattern",
    ["team-0[0-9]|nrp-llm", "[(?!]x", "a\\(?=b", "team-.+?", "(?i)Team-A", "a{2,3}?", "[\\]+]+"],
)
def test_namespace_patterns_re2_accepts_are_taken(pattern: str) -> None:
    """Text that only looks like a construct RE2 lacks (escaped, in a class, a lazy
    quantifier) is accepted."""
    config = build(merge(default_document(), {"prometheus": {"namespaces": pattern}}))
    assert config.prometheus.namespaces == pattern


def test_url_credentials_are_not_echoed(tmp_path: Path) -> None:
    message = error_for(tmp_path, {"prometheus": {"url": "ftp://user:hunter2@prom"}})
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("prometheus.url", "http://prom:9090/?access_token=hunter2"),
        ("prometheus.url", "https://prom/#hunter2"),
        ("direct.dcgm_urls", "http://node:9400/metrics?key=hunter2"),
    ],
)
def test_urls_with_a_query_are_refused_without_echoing_it(
    tmp_path: Path, key: str, url: str
) -> None:
    section, field = key.split(".")
    value: object = [url] if field.endswith("urls") else url
    message = error_for(tmp_path, {section: {field: value}})
    assert message.startswith(key) and "query or fragment" in message
    assert "hunter2" not in message


def test_one_inference_server_page_under_two_pods_is_refused(tmp_path: Path) -> None:
    pods = [
        {"pod": name, "namespace": "ns", "vllm_urls": ["http://127.0.0.1:8000/metrics"]}
        for name in ("a", "b")
    ]
    direct = {"dcgm_urls": ["http://127.0.0.1:9400/metrics"], "pods": pods}
    message = error_for(tmp_path, {"source": "direct", "direct": direct})
    assert message == (
        "direct.pods[1].vllm_urls[0]: already listed for direct.pods[0]: its tokens would count "
        "for both pods"
    )


def test_a_direct_pod_without_a_name_asks_for_the_name_only(tmp_path: Path) -> None:
    """The namespace falls back to `default`: only the name can be missing."""
    pods = [{"vllm_urls": ["http://127.0.0.1:8000/metrics"]}]
    direct = {"dcgm_urls": ["http://127.0.0.1:9400/metrics"], "pods": pods}
    message = error_for(tmp_path, {"source": "direct", "direct": direct})
    assert message.startswith("direct.pods[0].pod: the pod's name is required (--pod or POD_NAME")
    assert "namespace" not in message
    path = write(tmp_path, {"source": "direct", "direct": direct})
    config = load(path, environ={"POD_NAME": "vllm-0"})
    assert (config.direct.pods[0].pod, config.direct.pods[0].namespace) == ("vllm-0", "default")


def test_a_url_listed_twice_is_refused(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9400/metrics"
    pods = [{"namespace": "ns", "pod": "p", "vllm_urls": ["http://127.0.0.1:8000/metrics"]}]
    direct = {"dcgm_urls": [url, "http://127.0.0.2:9400/metrics", url], "pods": pods}
    message = error_for(tmp_path, {"source": "direct", "direct": direct})
    assert message == "direct.dcgm_urls[2]: listed twice: its GPUs would count twice"
    pods[0]["vllm_urls"] *= 2
    direct["dcgm_urls"] = [url]
    message = error_for(tmp_path, {"source": "direct", "direct": direct})
    assert message == "direct.pods[0].vllm_urls[1]: listed twice: its tokens would count twice"


def test_redact_hides_credentials_in_urls_and_secret_parameters() -> None:
    text = redact("GET http://u:pw@h:9/q?query=up&access_token=t0k&apiKey=k3y&x=1 failed")
    assert "pw" not in text and "t0k" not in text and "k3y" not in text
    assert "query=up" in text and "x=1" in text  # the rest stays readable


def test_header_values_are_not_echoed(tmp_path: Path) -> None:
    message = error_for(tmp_path, {"prometheus": {"headers": {"X-Api-Key": 31415926}}})
    assert message.startswith("prometheus.headers.X-Api-Key: expected a string")
    assert "31415926" not in message


def test_wrong_types_show_the_value(tmp_path: Path) -> None:
    message = error_for(tmp_path, {"exporter": {"max_models": "many"}})
    assert message == "exporter.max_models: expected an integer, got a string 'many'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prometheus: [unclosed", "YAML syntax error at line 1"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("\xff\xfe", None),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, expected: str | None) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    if expected:
        assert expected in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "grid:\n  nodes: [{pattern: 'mysite', region: RFCE}]\n"
            "facility: {pue: 1.2}\ngrid:\n  default_region: RFCE\n",
            "line 4: key 'grid' is already set at line 1 of the same mapping; write it once",
        ),
        ("facility:\n  pue: 1.2\n  pue: 1.5\n", "line 3: key 'pue' is already set at line 2"),
    ],
    ids=["top-level", "nested"],
)
def test_a_key_written_twice_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    """YAML itself keeps the last of two equal keys: the first block would vanish unseen."""
    message = error_for(tmp_path, text)
    assert expected in message and message.count("\n") == 0


def test_a_merge_key_may_be_overridden_and_a_list_key_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "facility:\n  <<: {pue: 1.2, host_overhead: 1.1}\n  pue: 1.3\n")
    assert load(path).facility.pue == 1.3
    message = error_for(tmp_path, "? [a, b]\n: 1\n")
    assert "line 1" in message and "unhashable key" in message


def test_recording_rules_off_as_the_docs_write_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("prometheus:\n  url: http://p:9090\n  recording_rules: off\n")
    assert load(str(path)).prometheus.recording_rules == "off"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load(str(tmp_path / "nope.yaml"))


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, "")).grid.default_region == "CAMX"


def test_merge_does_not_touch_its_inputs() -> None:
    base = {"a": {"b": 1, "c": [1]}}
    merged = merge(base, {"a": {"b": 2}})
    assert merged == {"a": {"b": 2, "c": [1]}} and base == {"a": {"b": 1, "c": [1]}}


def test_default_document_is_a_fresh_copy() -> None:
    first = default_document()
    first["exporter"]["interval"] = "1s"
    assert default_document()["exporter"]["interval"] == "30s"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("7d", 604800),
        ("500ms", 0.5),
        ("2", 2),
        (45, 45),
        ("1w", 604800),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "5x", "1h-5m", None, [], "-1s", "inf"])
def test_bad_durations(text: object) -> None:
    if text == "5":
        assert parse_duration(text) == 5
        return
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duration_spellings() -> None:
    assert promql_duration(300) == "300s"
    with pytest.raises(ValueError):
        promql_duration(0.2)


# Generated documents: whatever the shape, a ConfigError or a valid config, never a crash.
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
)


def _branches(kids: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3)


tree = st.recursive(leaf, _branches, max_leaves=8)
keys = st.sampled_from(
    [
        "prometheus",
        "exporter",
        "grid",
        "facility",
        "workload",
        "baselines",
        "comparison",
        "catalog",
        "utilization",
        "underutilized",
        "upstream",
    ]
)


def _key_paths(document: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in document.items():
        paths.append(prefix + key)
        if isinstance(value, dict):
            paths += _key_paths(value, f"{prefix}{key}.")
    return paths


# Every key the defaults have, and a few levels below the mappings whose keys are free.
REAL_KEYS = sorted(
    {*_key_paths(default_document()), "grid.regions.XX", "prometheus.headers.X-Scope-OrgID"}
)


def _said_in_one_line(attempt: Callable[[], object]) -> None:
    """A ConfigError, if any, is one short line per problem."""
    try:
        attempt()
    except ConfigError as exc:
        assert exc.lines and str(exc) == "\n".join(exc.lines)
        for line in exc.lines:
            assert line and "\n" not in line and len(line) <= MAX_LINE


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, tree, max_size=3))
def test_generated_documents_never_crash(document: dict) -> None:
    from exporter.config import build

    _said_in_one_line(lambda: build(merge(default_document(), document)))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(REAL_KEYS), tree, min_size=1, max_size=3))
def test_generated_values_under_real_keys_never_crash(changes: dict) -> None:
    _said_in_one_line(lambda: load(overrides=changes))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["PROMETHEUS_URL", "PROMETHEUS_BEARER_TOKEN_FILE", "POD_NAME"]),
        st.text(max_size=40),
        max_size=3,
    )
)
def test_generated_environments_never_crash(environ: dict) -> None:
    _said_in_one_line(lambda: load(environ=environ))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"prometheus": {"window": "500ms"}}, "prometheus.window: must be at least 1s"),
        (
            {"exporter": {"interval": "10m"}},
            "exporter.interval: 600s is longer than prometheus.window (300s)",
        ),
        (
            {"utilization": {"lookback": "1m"}},
            "utilization.lookback: 60s is shorter than prometheus.window (300s)",
        ),
        ({"facility": {"pue": float("inf")}}, "facility.pue: must be a finite number"),
        ({"facility": {"host_overhead": float("inf")}}, "facility.host_overhead:"),
    ],
)
def test_windows_and_factors_that_would_give_wrong_numbers(
    tmp_path: Path, data: dict, expected: str
) -> None:
    assert expected in error_for(tmp_path, data)


@pytest.mark.parametrize(
    "selector",
    [
        'job="dcgm"',
        '{job="dcgm", namespace!~"kube-.*"}',
        'gpu=~"0,1",',
        "job='dcgm'",
        "job=`dcgm`",
        '{"service.name"="dcgm"}',  # Prometheus 3's quoted (UTF-8) label names
        'job="a\\"b"',
        "",
        "  ",
    ],
)
def test_good_selectors_pass(selector: str) -> None:
    assert selector_problem(selector) == ""


def test_environment_over_a_malformed_section_is_a_config_error(tmp_path: Path) -> None:
    # Found by the generated-values test: set_path walked into a list with a traceback.
    path = tmp_path / "c.yaml"
    path.write_text("prometheus: [1]\n")
    with pytest.raises(ConfigError, match=r"^prometheus: expected a mapping, got list \[1\]$"):
        load(str(path), environ={"PROMETHEUS_URL": "http://prom:9090"})


def test_every_error_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    data = {
        "prometheus": {"timeout": "soon", "timout": "3s"},
        "exporter": {"interval": "fast", "max_models": 0},
        "grid": {"regions": {"XX": {"location": -1}}, "nodes": [{"pattern": "(", "region": "US"}]},
        "baselines": {"small": {"prefill": {"low": 1, "mid": 0.5, "high": 2}}},
    }
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, data))
    lines = caught.value.lines
    assert [line.split(":")[0] for line in lines] == [
        "prometheus.timout",
        "prometheus.timeout",
        "exporter.interval",
        "exporter.max_models",
        "grid.regions.XX.location",
        "grid.nodes[0].pattern",
        "baselines.small.prefill",
    ]
    assert "invalid duration 'soon'" in lines[1]
    assert lines[3] == "exporter.max_models: expected an integer >= 1"
    assert lines[6] == "baselines.small.prefill: bounds must satisfy low <= mid <= high"


def test_every_cross_section_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = {
        "grid": {"default_region": "NOWHERE", "nodes": [{"pattern": "x", "region": "ELSEWHERE"}]},
        "workload": {"default_preset": "huge"},
        "comparison": {"always": ["nope"]},
    }
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, data))
    assert caught.value.lines == (
        "grid.default_region: unknown region 'NOWHERE' (grid.regions defines new ones)",
        "grid.nodes[0].region: unknown region 'ELSEWHERE' (grid.regions defines new ones)",
        "workload.default_preset: unknown preset 'huge'",
        "comparison.always[0]: unknown baseline 'nope'",
    )


@pytest.mark.parametrize(
    ("document", "kind", "message"),
    [
        # The formats errors.describe reads: pinned, so a msgspec upgrade that changes them
        # fails here rather than garbling every config error.
        ({"a": 1}, "Strict", "Object contains unknown field `a`"),
        ({}, "Required", "Object missing required field `x`"),
        ({"x": "s"}, "Required", "Expected `int`, got `str` - at `$.x`"),
        ([{"x": 1}, {"x": "s"}], "list[Required]", "Expected `int`, got `str` - at `$[1].x`"),
        ({"k": {"x": "s"}}, "dict[str, Required]", "Expected `int`, got `str` - at `$[...].x`"),
        ({"x": 0}, "Positive", "Expected `int` >= 1 - at `$.x`"),
    ],
)
def test_msgspec_messages_keep_the_format_the_rendering_reads(
    document: object, kind: str, message: str
) -> None:
    class Strict(msgspec.Struct, forbid_unknown_fields=True):
        pass

    class Required(msgspec.Struct):
        x: int

    class Positive(msgspec.Struct):
        x: Annotated[int, msgspec.Meta(ge=1)]

    kinds = {
        "Strict": Strict,
        "Required": Required,
        "Positive": Positive,
        "list[Required]": list[Required],
        "dict[str, Required]": dict[str, Required],
    }
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(document, kinds[kind])
    assert str(caught.value) == message


def test_an_error_line_is_capped_however_long_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, {"workload": {"default_preset": "x" * 5000}}))
    (line,) = caught.value.lines
    assert line.startswith("workload.default_preset: unknown preset 'xxx")
    assert len(line) == MAX_LINE and line.endswith("...")


@pytest.mark.parametrize(
    "text",
    [
        # 9 levels of nine aliases each: 9**9 strings once expanded, from a few hundred bytes.
        "a: &a [x,x,x,x,x,x,x,x,x]\n"
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n"
            for i in range(8)
        )
        + "workload: {default_preset: *i}\n",
        "prometheus: &p {timeout: 5s}\ndirect: *p\n",
    ],
    ids=["alias-bomb", "plain-alias"],
)
def test_yaml_aliases_are_refused_in_one_line_at_once(tmp_path: Path, text: str) -> None:
    started = time.monotonic()
    message = error_for(tmp_path, text)
    assert time.monotonic() - started < 1.0
    assert "YAML aliases" in message and "not supported" in message
    assert len(message) < 300


def test_a_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    message = error_for(tmp_path, "# padding\n" * 200_000)
    assert message.endswith("larger than 1000000 bytes, not a config file")


def test_a_huge_nested_value_is_shown_short() -> None:
    deep: object = "x"
    for _ in range(50):
        deep = [deep] * 3
    with pytest.raises(ConfigError) as caught:
        build(merge(default_document(), {"exporter": {"interval": deep}}))
    (message,) = caught.value.lines
    assert message.startswith("exporter.interval: invalid duration") and len(message) < 200


def test_url_errors_never_show_credentials(tmp_path: Path) -> None:
    error = error_for(tmp_path, {"prometheus": {"url": "http://user:hunter2@"}})
    assert "no host" in error and "hunter2" not in error


def test_site_defaults_in_force_are_named_until_changed() -> None:
    from exporter.config import SITE_KEYS, site_defaults_in_force

    assert site_defaults_in_force(load()) == SITE_KEYS
    mine = load(overrides={"facility.pue": 1.3, "grid.nodes": [], "grid.default_region": "US"})
    assert site_defaults_in_force(mine) == ("facility.host_overhead",)
    # The NRP's own values, written out, are still the NRP's.
    assert "facility.pue" in site_defaults_in_force(load(overrides={"facility.pue": 1.4}))
