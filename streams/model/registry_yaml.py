"""Reading the registry YAML file (``registry check``, ``registry import``, the worker's start).

The file is composed into YAML nodes first so every problem carries ``path:line``, and every
problem is collected before anything is reported (an operator fixes the whole file in one pass).
:func:`check_registry` lists the problems, :func:`load_registry` raises
:class:`~streams.support.errors.RegistryError` with all of them, :func:`parse_registry` reads
text. Aliases are checked with :func:`streams.model.registry.validate_alias`, the one rule
every way into the registry applies.

A plain date (``2025-06-30``) in ``contract_ends`` or ``expires_at`` means 00:00 UTC that day;
timestamps must carry a zone, like every timestamp accessguard accepts.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode

from streams.model.records import (
    ACCESS_PATHS,
    IDENTITY_KINDS,
    IDENTITY_STATUSES,
    MFA_METHODS,
    ROLES,
)
from streams.model.registry import (
    CRITICALITIES,
    Account,
    Agency,
    Grant,
    Identity,
    Registry,
    SharedCredential,
    normalise_email,
    validate_alias,
)
from streams.support.errors import RegistryError
from streams.support.yamlcheck import Entry as _Entry
from streams.support.yamlcheck import Problems as _Problems
from streams.support.yamlcheck import entries as _entries
from streams.support.yamlcheck import label as _label
from streams.support.yamlcheck import line_of as _line

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")

_SECTIONS = ("accounts", "identities", "grants", "agencies")
_ACCOUNT_KEYS = {"id", "platform", "handle", "criticality", "provider", "shared_credential"}
_SHARED_KEYS = {"totp", "ref", "login"}
_IDENTITY_KEYS = {
    "id",
    "name",
    "kind",
    "emails",
    "aliases",
    "status",
    "employee_id",
    "credential_changed_at",
}
_GRANT_KEYS = {"identity", "account", "role", "via", "mfa", "expires_at"}
_AGENCY_KEYS = {"id", "name", "contract_ends", "members"}


def _parse(text: str, source: str) -> tuple[Registry, list[str]]:
    problems = _Problems(source)
    registry = Registry()
    try:
        root_node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        problems.add(line, f"YAML syntax error: {exc.problem or exc.context}")
        return registry, problems.render()
    except yaml.YAMLError as exc:
        problems.add(1, f"YAML error: {exc}")
        return registry, problems.render()
    if root_node is None:
        problems.add(1, "empty registry: expected a mapping with " + ", ".join(_SECTIONS))
        return registry, problems.render()
    if not isinstance(root_node, MappingNode):
        problems.add(_line(root_node), "the registry must be a mapping of " + ", ".join(_SECTIONS))
        return registry, problems.render()

    constructor = SafeConstructor()
    top = _Entry(root_node, "registry", set(_SECTIONS), problems, constructor)
    root = top.fields

    # ---- accounts
    account_lines: dict[str, int] = {}
    for index, item in _entries(root, "accounts", problems):
        e = _Entry(item, _label("accounts", index, item), _ACCOUNT_KEYS, problems, constructor)
        acc_id = e.ident("id")
        platform = e.string("platform", max_len=64)
        handle = e.string("handle")
        criticality = e.enum("criticality", CRITICALITIES)
        provider = e.string("provider", max_len=64)
        shared: SharedCredential | None = None
        shared_ok = True
        shared_node = e.mapping("shared_credential")
        if e.present("shared_credential") and shared_node is None:
            shared_ok = False
        if shared_node is not None:
            s = _Entry(
                shared_node, f"{e.where}: shared_credential", _SHARED_KEYS, problems, constructor
            )
            totp = s.boolean("totp", default=False)
            ref = s.string("ref", required=False) or f"shared/{acc_id}"
            login = s.string("login", required=False, max_len=320)
            shared = SharedCredential(totp=totp, ref=ref, login=login)
        if acc_id is not None and acc_id in account_lines:
            e.error(
                e.line, f"duplicate account id {acc_id!r} (first at line {account_lines[acc_id]})"
            )
            continue
        if acc_id is not None:
            account_lines[acc_id] = e.line
        if (
            acc_id is None
            or platform is None
            or handle is None
            or criticality is None
            or provider is None
            or not shared_ok
        ):
            continue
        registry.put_account(
            Account(acc_id, platform.lower(), handle, criticality, provider, shared)
        )

    # ---- identities
    identity_lines: dict[str, int] = {}
    email_owner: dict[str, tuple[str, int]] = {}
    hr_owner: dict[str, tuple[str, int]] = {}
    for index, item in _entries(root, "identities", problems):
        e = _Entry(item, _label("identities", index, item), _IDENTITY_KEYS, problems, constructor)
        ident_id = e.ident("id")
        name = e.string("name")
        kind = e.enum("kind", IDENTITY_KINDS)
        status = e.enum("status", IDENTITY_STATUSES, default="active")
        employee_id = e.string("employee_id", required=False, max_len=200)
        credential_changed_at = e.time("credential_changed_at", required=False)
        emails: list[str] = []
        ok = not (e.present("credential_changed_at") and credential_changed_at is None)
        email_nodes = e.seq("emails", required=True)
        if email_nodes is None:
            ok = False
        elif not email_nodes:
            e.error(e.fields["emails"], "emails: list at least one address")
            ok = False
        for email_node in email_nodes or ():
            raw = e.item_string("emails", email_node)
            if raw is None:
                ok = False
                continue
            email = normalise_email(raw)
            if not _EMAIL_RE.match(email):
                e.error(email_node, f"emails: {raw!r} is not an e-mail address")
                ok = False
                continue
            if email in emails:
                e.error(email_node, f"emails: {raw!r} listed twice")
                continue
            owner = email_owner.get(email)
            if owner is not None and owner[0] != ident_id:
                e.error(
                    email_node,
                    f"emails: {raw!r} already belongs to identity {owner[0]!r} (line {owner[1]})",
                )
                ok = False
                continue
            email_owner[email] = (ident_id or "?", _line(email_node))
            emails.append(email)
        aliases: dict[str, str] = {}
        alias_node = e.mapping("aliases")
        if e.present("aliases") and alias_node is None:
            ok = False
        if alias_node is not None:
            for key_node, value_node in alias_node.value:
                key = e._scalar(key_node)
                value = e._scalar(value_node)
                if not isinstance(key, str) or not key.strip():
                    e.error(key_node, "aliases: keys must be provider or platform names")
                    ok = False
                elif (
                    isinstance(value, bool)
                    or not isinstance(value, str | int)
                    or not str(value).strip()
                ):
                    e.error(value_node, f"aliases: {key}: expected a non-empty string")
                    ok = False
                elif key in aliases:
                    e.error(key_node, f"aliases: {key} given twice")
                    ok = False
                elif (problem := validate_alias(key.strip(), str(value).strip())) is not None:
                    e.error(value_node, f"aliases: {key}: {problem}")
                    ok = False
                else:
                    aliases[key.strip()] = str(value).strip()
        if ident_id is not None and ident_id in identity_lines:
            e.error(
                e.line,
                f"duplicate identity id {ident_id!r} (first at line {identity_lines[ident_id]})",
            )
            continue
        if ident_id is not None:
            identity_lines[ident_id] = e.line
            hr_id = employee_id or ident_id
            hr_prev = hr_owner.get(hr_id)
            if hr_prev is not None:
                e.error(
                    e.fields.get("employee_id", e.node),
                    f"employee_id {hr_id!r} is also identity {hr_prev[0]!r} (line {hr_prev[1]}): "
                    "HR events would be ambiguous",
                )
                ok = False
            else:
                hr_owner[hr_id] = (ident_id, e.line)
        if ident_id is None or name is None or kind is None or status is None or not ok:
            continue
        registry.put_identity(
            Identity(
                id=ident_id,
                name=name,
                kind=kind,
                emails=tuple(emails),
                aliases=aliases,
                status=status,
                employee_id=employee_id or ident_id,
                credential_changed_at=credential_changed_at,
            )
        )

    # ---- grants
    grant_lines: dict[tuple[str, str], int] = {}
    for index, item in _entries(root, "grants", problems):
        e = _Entry(item, f"grants[{index}]", _GRANT_KEYS, problems, constructor)
        identity_ref = e.ident("identity")
        account_ref = e.ident("account")
        if identity_ref and account_ref:
            e.where = f"grants[{index}] {identity_ref}->{account_ref}"
        role = e.enum("role", ROLES)
        via = e.enum("via", ACCESS_PATHS)
        mfa = e.enum("mfa", MFA_METHODS)
        expires_at = e.time("expires_at", required=False)
        ok = not (e.present("expires_at") and expires_at is None)
        if identity_ref is not None and identity_ref not in identity_lines:
            e.error(e.fields["identity"], f"identity: unknown identity {identity_ref!r}")
            ok = False
        if account_ref is not None and account_ref not in account_lines:
            e.error(e.fields["account"], f"account: unknown account {account_ref!r}")
            ok = False
        account = registry.accounts.get(account_ref or "")
        if via == "shared_credential" and account is not None and account.shared_credential is None:
            e.error(
                e.fields["via"],
                f"via: shared_credential, but account {account.id!r} declares no shared_credential",
            )
            ok = False
        if identity_ref and account_ref:
            pair = (identity_ref, account_ref)
            if pair in grant_lines:
                e.error(
                    e.line,
                    f"duplicate grant of {account_ref!r} to {identity_ref!r} "
                    f"(first at line {grant_lines[pair]})",
                )
                continue
            grant_lines[pair] = e.line
        if (
            identity_ref is None
            or account_ref is None
            or role is None
            or via is None
            or mfa is None
            or not ok
            # an invalid identity or account is already reported on its own line
            or identity_ref not in registry.identities
            or account_ref not in registry.accounts
        ):
            continue
        registry.put_grant(Grant(identity_ref, account_ref, role, via, mfa, expires_at))

    # ---- agencies
    agency_lines: dict[str, int] = {}
    for index, item in _entries(root, "agencies", problems):
        e = _Entry(item, _label("agencies", index, item), _AGENCY_KEYS, problems, constructor)
        agency_id = e.ident("id")
        name = e.string("name")
        contract_ends = e.time("contract_ends", required=True)
        members: list[str] = []
        ok = True
        for member_node in e.seq("members", required=False) or ():
            member = e.item_string("members", member_node)
            if member is None:
                ok = False
            elif member not in identity_lines:
                e.error(member_node, f"members: unknown identity {member!r}")
                ok = False
            elif member in members:
                e.error(member_node, f"members: {member!r} listed twice")
            else:
                members.append(member)
        if agency_id is not None and agency_id in agency_lines:
            e.error(
                e.line,
                f"duplicate agency id {agency_id!r} (first at line {agency_lines[agency_id]})",
            )
            continue
        if agency_id is not None:
            agency_lines[agency_id] = e.line
        if agency_id is None or name is None or contract_ends is None or not ok:
            continue
        registry.put_agency(Agency(agency_id, name, contract_ends, tuple(members)))

    return registry, problems.render()


def parse_registry(text: str, source: str = "<registry>") -> tuple[Registry, list[str]]:
    """Parse registry YAML text. Returns the valid part and every problem as
    ``source:line: message`` (an empty list means the registry is valid)."""
    return _parse(text, source)


def check_registry(path: str | Path) -> list[str]:
    """Every problem in the registry file at ``path`` as ``path:line: message`` (empty: valid)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{path}:0: cannot read the registry: {exc}"]
    return _parse(text, str(path))[1]


def load_registry(path: str | Path) -> Registry:
    """Load and validate the registry file; raises RegistryError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError([f"{path}:0: cannot read the registry: {exc}"]) from None
    registry, problems = _parse(text, str(path))
    if problems:
        raise RegistryError(problems)
    return registry
