"""No silent drops: a registry relying on a provider the configuration lacks is found before
anything runs (`run`, `registry import`, `config check`), and `replay` without a
configuration says what it cannot decide."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streams.bus.bootstrap import import_registry
from streams.config import load_config
from streams.model.coverage import gap_problems, provider_gaps
from streams.model.registry import Registry
from streams.model.registry_yaml import parse_registry
from streams.support.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

REGISTRY = textwrap.dedent(
    """\
    identities:
      - id: ana
        name: Ana
        kind: employee
        emails: [ana@example.com]
        aliases: {okta: "00u1", entra: "ana@example.com", instagram: "ana.ig", okta-prd: "x"}
      - id: ben
        name: Ben
        kind: employee
        emails: [ben@example.com]
        aliases: {okta: "00u2"}
    accounts:
      - id: x-brand
        platform: x
        handle: brand
        criticality: high
        provider: hootsuite
      - id: ig-brand
        platform: instagram
        handle: brand
        criticality: high
        provider: meta-business
    grants:
      - {identity: ana, account: x-brand, role: admin, via: sso, mfa: totp}
    """
)


def _registry() -> Registry:
    registry, problems = parse_registry(REGISTRY, "registry.yaml")
    assert problems == []
    return registry


def test_every_unconfigured_provider_the_registry_relies_on_is_a_gap() -> None:
    """Account managers always count; aliases count when they name an identity-provider type
    or a login vendor (okta, entra) or are a typo of a configured name (okta-prd beside
    okta-prod); a platform handle (instagram) does not."""
    gaps = provider_gaps(_registry(), {"okta-prod": "okta", "meta-business": "generic"})
    assert [(g.kind, g.provider, g.subjects, g.nearest) for g in gaps] == [
        ("account", "hootsuite", ("x-brand",), None),
        ("alias", "entra", ("ana",), None),
        ("alias", "okta", ("ana", "ben"), None),
        ("alias", "okta-prd", ("ana",), "okta-prod"),
    ]
    assert "did you mean 'okta-prod'?" in gaps[-1].message()
    assert (
        gaps[2]
        .message()
        .startswith("alias 'okta' of 2 identities (ana, ben) names no configured provider")
    )


def test_configured_or_ignored_providers_are_no_gap() -> None:
    providers = {"okta": "okta", "entra": "graph", "hootsuite": "generic", "okta-prod": "okta"}
    assert provider_gaps(_registry(), providers, ignored=["meta-business", "okta-prd"]) == []


def test_a_gap_is_a_config_problem_at_the_registry_file() -> None:
    (problem,) = gap_problems(
        provider_gaps(
            _registry(),
            {"okta": "okta", "entra": "graph", "meta-business": "generic", "okta-prd": "okta"},
        ),
        "reg.yaml",
    )
    assert problem.located().startswith(
        "reg.yaml: providers.hootsuite: provider 'hootsuite' of 1 account (x-brand) is not "
        "configured: grants there would never be removed"
    )
    assert problem.located().endswith(
        "configure providers.hootsuite or list it in ignored_providers"
    )


def _config(tmp_path: Path, providers: str, ignored: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"data_dir: {tmp_path / 'data'}\n{ignored}providers:\n{providers}", encoding="utf-8"
    )
    return path


OKTA_ONLY = "  okta: {type: okta, base_url: 'https://example.okta.com', dry_run: true}\n"


def test_registry_import_refuses_a_gap_before_touching_the_broker(tmp_path: Path) -> None:
    """`registry import` (and `run`, which imports the same way) raises ConfigError listing
    every gap; nothing is published (the bootstrap address is never used). ``okta-prd`` is
    no typo of ``okta`` (too far), so it stays a platform handle here."""
    (tmp_path / "registry.yaml").write_text(REGISTRY, encoding="utf-8")
    config = load_config(_config(tmp_path, OKTA_ONLY), env={})
    with pytest.raises(ConfigError) as err:
        import_registry(config, "127.0.0.1:1", tmp_path / "registry.yaml")
    assert [p.key for p in err.value.problems] == [
        "providers.hootsuite",
        "providers.meta-business",
        "providers.entra",
    ]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_check_lists_each_gap_and_accepts_them_once_ignored(tmp_path: Path) -> None:
    (tmp_path / "registry.yaml").write_text(REGISTRY, encoding="utf-8")
    config = _config(tmp_path, OKTA_ONLY)
    bad = _cli(
        "config", "check", "--config", str(config), "--registry", "registry.yaml", cwd=tmp_path
    )
    assert bad.returncode == 1
    assert [line.split(": ")[1] for line in bad.stdout.splitlines()] == [
        "providers.hootsuite",
        "providers.meta-business",
        "providers.entra",
    ]
    ignored = "ignored_providers: [hootsuite, meta-business, entra]\n"
    good = _cli(
        "config",
        "check",
        "--config",
        str(_config(tmp_path, OKTA_ONLY, ignored)),
        "--registry",
        "registry.yaml",
        cwd=tmp_path,
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "registry registry.yaml: every provider it uses is configured" in good.stdout


def test_replay_without_config_warns_what_it_cannot_decide() -> None:
    """The tour's replay without --config decides fewer actions; stderr says why, stdout
    stays the decisions only. With the example configuration there is no warning."""
    args = (
        "replay",
        "--registry",
        "examples/registry.yaml",
        "--input",
        "examples/events.ndjson",
        "--at",
        "2026-11-26T12:00:00Z",
    )
    bare = _cli(*args, cwd=REPO)
    assert bare.returncode == 0
    (warning,) = bare.stderr.splitlines()
    assert warning.startswith("warning: no provider is configured (replay without --config?)")
    assert "sessions and MFA factors at entra, google, okta are not decided" in warning
    assert "actions at hootsuite, meta-business go to providers that do not exist" in warning
    configured = _cli(*args, "--config", "examples/config.yaml", cwd=REPO)
    assert configured.returncode == 0
    assert configured.stderr == ""
