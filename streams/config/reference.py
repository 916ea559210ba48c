"""The configuration reference table of the README, generated from the models
(tests/test_docs.py keeps the two equal)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from streams.config.models import KEYS


def _shown(default: object) -> str:
    if isinstance(default, list):
        return ", ".join(default) or "(none)"
    if default is None:
        return "(none)"
    if default == "":
        return '""'
    return str(default).lower() if isinstance(default, bool) else str(default)


def _types(types: Mapping[str, Iterable[str]] | None, section: str, generic: str) -> str:
    if types is None or section not in types:
        return generic
    return ", ".join(types[section])


def reference_markdown(types: Mapping[str, Iterable[str]] | None = None) -> str:
    """The configuration reference table. ``types`` may list the connector types per
    section (``{"providers": [...], "pollers": [...], "alerts.sinks": [...]}``, e.g. from
    connectors/base/catalogue.py); without it the rows point at connectors/."""
    rows = [
        "| key | environment override | default | meaning |",
        "|---|---|---|---|",
    ]
    for key in KEYS:
        rows.append(f"| `{key.path}` | `{key.env}` | `{_shown(key.default)}` | {key.doc} |")
    providers = _types(
        types, "providers", "a key of `PROVIDER_TYPES` in connectors/base/catalogue.py"
    )
    pollers = _types(types, "pollers", "a key of `POLLER_SETTINGS` in connectors/base/catalogue.py")
    sinks = _types(types, "alerts.sinks", "a key of `SINK_TYPES` in connectors/base/catalogue.py")
    rows.append(
        "| `providers.<name>.<key>` | `ACCESSGUARD_PROVIDERS__<NAME>__<KEY>` | — | "
        f"a provider: `type` ({providers}), `base_url`, `token`, `dry_run`, type-specific "
        "keys (connectors/*/settings.py) |"
    )
    rows.append(
        "| `pollers.<name>.<key>` | `ACCESSGUARD_POLLERS__<NAME>__<KEY>` | — | "
        f"a poller run by `accessguard run` or `connect poller NAME`: `type` ({pollers}; "
        "login logs, or a leak feed with `api_key`, `domains`), `base_url`, `token`, "
        "`interval`, `start`, type-specific keys |"
    )
    rows.append(
        "| `alerts.sinks.<name>.<key>` | `ACCESSGUARD_ALERTS_SINKS__<NAME>__<KEY>` | — | "
        f"an alert sink: `type` ({sinks}), `routing_key` / `webhook_url` / `token` and "
        "`channel` (each type's keys: connectors/sinks/settings.py), `dry_run` |"
    )
    return "\n".join(rows)
