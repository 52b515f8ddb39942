"""grid.live: one provider or a list of them, the built-in zone map, and every mistake as one
line naming its key path (exit status 2 from the command line)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.cli import main
from exporter.config import ConfigError, load
from exporter.sources.grid_live import live_grid

EM = {"provider": "electricitymaps", "token_file": "/run/em/token"}
WT = {
    "provider": "watttime",
    "username": "nrp",
    "password_file": "/run/wt/password",
    "zones": {"CAMX": "CAISO_NORTH"},
}


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


def write(tmp_path: Path, live: object) -> str:
    path = tmp_path / "config.yaml"
    document = {"prometheus": {"url": "http://prom:9090"}, "grid": {"live": live}}
    # Written out in full: the same mapping twice would be an alias, which configs refuse.
    path.write_text(yaml.dump(document, Dumper=_NoAliases))
    return str(path)


def errors(tmp_path: Path, live: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, live))
    return list(caught.value.lines)


def test_off_by_default() -> None:
    config = load()
    assert config.grid.live == [] and config.grid.live_providers() == []
    assert live_grid(config) is None


def test_one_provider_as_a_mapping_with_its_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path, EM))
    [(path, live)] = config.grid.live_providers()
    assert path == "grid.live"
    assert (live.refresh, live.max_age, live.url, live.zones) == (900, 3 * 3600, None, None)
    feed = live_grid(config)
    assert feed is not None
    try:
        [provider] = feed.feeds
        # Without zones: the built-in map of the NRP's regions, one request per zone.
        assert provider.zones["CAMX"] == "US-CAL-CISO"
        assert provider.zones["MROW"] == provider.zones["SPNO"] == "US-CENT-SWPP"
        assert len({slot.zone for slot in provider.slots()}) == 7
        assert provider.provider.factor_type == "direct"
        assert provider.provider.url == "https://api.electricitymap.org"
    finally:
        feed.close()


def test_both_providers_as_a_list(tmp_path: Path) -> None:
    config = load(write(tmp_path, [{**EM, "zones": {"CAMX": "US-CAL-CISO"}}, WT]))
    paths = [path for path, _ in config.grid.live_providers()]
    assert paths == ["grid.live[0]", "grid.live[1]"]
    feed = live_grid(config)
    assert feed is not None
    try:
        assert feed.upstreams == ("electricitymaps", "watttime")
        assert {(s.region, s.basis, s.zone) for s in feed.slots()} == {
            ("CAMX", "location", "US-CAL-CISO"),
            ("CAMX", "marginal", "CAISO_NORTH"),
        }
    finally:
        feed.close()


@pytest.mark.parametrize(
    ("live", "expected"),
    [
        ({"provider": "electricitymaps"}, ["grid.live.token_file: required for provider"]),
        (
            {**WT, "token_file": "/t", "emission_factor_type": "direct"},
            [
                "grid.live.token_file: belongs to provider electricitymaps; watttime reads "
                "username and password_file",
                "grid.live.emission_factor_type: applies to provider electricitymaps only",
            ],
        ),
        ({**WT, "zones": None}, ["grid.live.zones: required for provider watttime"]),
        ({**EM, "username": "x"}, ["grid.live.username: belongs to provider watttime"]),
        ({**EM, "refresh": "500ms"}, ["grid.live.refresh: must be at least 1s"]),
        (
            {**EM, "refresh": "1h", "max_age": "30m"},
            ["grid.live.max_age: 1800s is shorter than grid.live.refresh (3600s)"],
        ),
        (
            {**EM, "zones": {"ATLANTIS": "XX", "CAMX": " "}},
            ["grid.live.zones.ATLANTIS: unknown region 'ATLANTIS'", "grid.live.zones.CAMX: empty"],
        ),
        ([EM, WT, EM], ["grid.live[2].provider: electricitymaps is already configured at grid"]),
        ({**EM, "provider": "carbonara"}, ["grid.live.provider: invalid enum value 'carbonara'"]),
        ({**EM, "emission_factor_type": "both"}, ["grid.live.emission_factor_type: invalid enum"]),
        ({**EM, "max_age": "soon"}, ["grid.live.max_age: invalid duration 'soon'"]),
        ({**EM, "url": "ftp://x"}, ["grid.live.url: invalid URL"]),
        ([EM, {**WT, "refres": "1m"}], ["grid.live[1].refres: unknown key"]),
        ("yes", ["grid.live: expected a mapping or a list, got a string 'yes'"]),
    ],
)
def test_mistakes_name_their_key(tmp_path: Path, live: object, expected: list[str]) -> None:
    found = errors(tmp_path, live)
    assert len(found) == len(expected), found
    for line, start in zip(found, expected, strict=True):
        assert line.startswith(start), (line, start)


def test_every_live_mistake_at_once_with_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, [{"provider": "electricitymaps", "max_age": "1s"}, {**WT, "zones": {}}])
    assert main(["check-config", path], environ={}) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        "grid.live[0].token_file",
        "grid.live[0].max_age",
    ]
    assert all(line.startswith("llm-carbon-exporter: config error: ") for line in lines)


def test_credential_values_are_never_echoed(tmp_path: Path) -> None:
    secret = "s3cr3t-in-the-wrong-place"
    [line] = errors(tmp_path, {**EM, "token_file": {"value": secret}})
    assert line == "grid.live.token_file: expected a string or null, got a mapping"
    assert secret not in line
