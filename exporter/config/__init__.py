"""Configuration: one YAML file over embedded defaults (`defaults.yaml`, the NRP's settings),
then environment, then flags; strictly validated into frozen objects.

- `schema`: the shape, one frozen struct per section (unknown keys refused);
- `values`: checked values (durations, URLs, regular expressions, ...);
- `rules`: checks that need more than one key;
- `errors`: every error of a document as one line each, key path first;
- `loading`: defaults, file, environment and flags merged, then validated.

Every problem ends in a `ConfigError`, e.g.
`prometheus.timeout: invalid duration 'soon' (use e.g. 30s, 5m, 1h, 7d)`.
"""

from exporter.config.embedded import SITE_KEYS, site_defaults_in_force
from exporter.config.errors import ConfigError
from exporter.config.loading import build, default_document, load, merge, read_document, set_path
from exporter.config.schema import (
    BasicAuth,
    Config,
    DirectPod,
    DirectSettings,
    LiveGrid,
    PrometheusSettings,
    Region,
    as_dict,
)
from exporter.config.values import selector_problem

__all__ = [
    "SITE_KEYS",
    "BasicAuth",
    "Config",
    "ConfigError",
    "DirectPod",
    "DirectSettings",
    "LiveGrid",
    "PrometheusSettings",
    "Region",
    "as_dict",
    "build",
    "default_document",
    "load",
    "merge",
    "read_document",
    "selector_problem",
    "set_path",
    "site_defaults_in_force",
]
