"""The README and the OpenAPI spec stay true to the code."""

from __future__ import annotations

from pathlib import Path

import yaml

from streams.config import reference_markdown
from streams.model.records import HR_TYPES, ROLES

REPO = Path(__file__).resolve().parent.parent


def test_readme_configuration_table_matches_the_config_keys() -> None:
    """Every configuration key, its env override and default appear in the README exactly as
    the validator knows them (regenerate with streams.config.reference_markdown())."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert reference_markdown() in readme


def test_readme_gives_the_two_commands() -> None:
    """A new user finds `make run` and `make test` in the README."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make run" in readme
    assert "make test" in readme


def test_openapi_hr_event_schema_matches_the_validator() -> None:
    """The published HR event schema lists the same types, roles and required fields."""
    spec = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
    schema = spec["components"]["schemas"]["HrEvent"]
    assert tuple(schema["properties"]["type"]["enum"]) == HR_TYPES
    assert tuple(schema["properties"]["new_role"]["enum"]) == ROLES
    assert set(schema["required"]) == {
        "event_id",
        "type",
        "employee_id",
        "email",
        "effective_at",
        "source",
    }
    assert set(spec["paths"]) == {
        "/v1/hr/events",
        "/v1/auth/events",
        "/v1/leaks",
        "/v1/okta/event-hooks",
        "/ssf/push/{transmitter}",
        "/metrics",
        "/healthz",
        "/readyz",
    }


def test_every_runbook_an_alert_names_exists() -> None:
    """Runbook paths used in code point at files in docs/runbooks/."""
    import re

    sources = "".join(p.read_text() for p in (REPO / "streams").rglob("*.py"))
    paths = set(re.findall(r'"(docs/runbooks/[a-z0-9-]+\.md)"', sources))
    assert paths
    for path in paths:
        assert (REPO / path).is_file(), path


def _readme_answers() -> dict[str, set[str]]:
    """The status codes of each ``<!-- answers: METHOD PATH -->`` table in the README."""
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    tables: dict[str, set[str]] = {}
    for match in re.finditer(r"<!-- answers: (\w+) (\S+) -->\n((?:\s*\|.*\n)+)", readme):
        operation = f"{match.group(1).lower()} {match.group(2)}"
        codes = re.findall(r"^\s*\| (\d{3})\b", match.group(3), re.M)
        tables[operation] = set(codes)
    return tables


def test_readme_answer_tables_match_the_openapi_responses() -> None:
    """Every ingest endpoint has an answer table in the README, and it lists exactly the
    status codes the OpenAPI spec gives for the operation."""
    spec = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
    tables = _readme_answers()
    ingest = {
        f"{method} {path}"
        for path, operations in spec["paths"].items()
        if path.startswith(("/v1/", "/ssf/push/"))
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert {"post /v1/hr/events", "post /v1/auth/events", "post /v1/leaks"} <= ingest
    assert set(tables) == ingest
    for operation, codes in tables.items():
        method, path = operation.split(" ", 1)
        documented = set(spec["paths"][path][method]["responses"])
        assert codes == documented, (
            f"{operation}: README {sorted(codes)} != spec {sorted(documented)}"
        )


def test_the_config_check_example_gives_the_output_shown(tmp_path: Path) -> None:
    """The README's `config check` example: its bad.yaml, run for real, prints exactly the
    lines shown (stdout, then the count on stderr)."""
    import os
    import re
    import subprocess
    import sys

    text = (REPO / "README.md").read_text(encoding="utf-8")
    yaml_block = re.search(r"```yaml\n# bad.yaml\n(.*?)```", text, re.S)
    out_block = re.search(
        r"```sh\n\$ accessguard config check --config bad.yaml\n(.*?)```", text, re.S
    )
    assert yaml_block
    assert out_block
    (tmp_path / "bad.yaml").write_text(yaml_block.group(1), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSGUARD_")}
    env.pop("UNSET_VAR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "config", "check", "--config", "bad.yaml"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout + proc.stderr == out_block.group(1)


def test_the_real_provider_examples_are_valid_settings() -> None:
    """Every YAML example of "Connecting to real providers" validates against its provider
    type's settings model (placeholders such as `<kid>` filled with a dummy value), so the
    README cannot name a key the code does not take."""
    import re

    import yaml

    from connectors.base.catalogue import validate_settings

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Connecting to real providers", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    for block in blocks:
        filled = re.sub(r"<[^>\n]+>", "placeholder", block)
        for name, settings in yaml.safe_load(filled)["providers"].items():
            values, problems = validate_settings("providers", name, settings)
            assert problems == [], (name, problems)
            assert values is not None
