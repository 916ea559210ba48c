"""Reading the registry YAML file (``registry check``, ``registry import``, the worker's start).

Every problem carries ``path:line`` and every problem is collected before anything is reported
(an operator fixes the whole file in one pass). :func:`check_registry` lists the problems,
:func:`load_registry` raises :class:`~streams.support.errors.RegistryError` with all of them,
:func:`parse_registry` reads text. Aliases are checked with
:func:`streams.model.registry.validate_alias`, the one rule every way into the registry applies.

A plain date (``2025-06-30``) in ``contract_ends`` or ``expires_at`` means 00:00 UTC that day;
timestamps must carry a zone, like every timestamp accessguard accepts.

Enterprise size (100k identities, ~50 MB of YAML) shapes how the file is read: as a stream of
libyaml's parser events (:mod:`streams.support.yamlstream`), composing one entry (an account,
identity, grant or agency) at a time into marked nodes, validating it with its line numbers,
turning it into a record and dropping it. Sections that refer to others (grants and agencies
name identities and accounts) wait for them when the file lists them first. The cyclic garbage
collector is paused while the registry is built: the load creates millions of objects and no
cycles, and its full passes over the growing registry took most of the time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from sys import intern
from typing import IO, Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import (
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

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
from streams.support.gcpause import gc_paused
from streams.support.yamlcheck import Problems as _Problems
from streams.support.yamlcheck import label as _label
from streams.support.yamlcheck import line_of as _line
from streams.support.yamlstream import MAP_TAG, NULL_TAG, STR_TAG, Composer, loader_class
from streams.support.yamlstream import MarkedEntry as Entry

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")

_SECTIONS = ("accounts", "identities", "grants", "agencies")
#: The sections an entry refers to: read them completely before validating it (a file that
#: lists grants first keeps their nodes until identities and accounts are read).
_DEPENDS: dict[str, tuple[str, ...]] = {
    "accounts": (),
    "identities": (),
    "grants": ("accounts", "identities"),
    "agencies": ("identities",),
}
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


class _Build:
    """Validates the registry entry by entry and builds it (see the module docstring)."""

    def __init__(self, problems: _Problems) -> None:
        self.problems = problems
        self.c = SafeConstructor()
        self.registry = Registry()
        self.account_lines: dict[str, int] = {}
        self.identity_lines: dict[str, int] = {}
        self.email_owner: dict[str, tuple[str, int]] = {}
        self.hr_owner: dict[str, tuple[str, int]] = {}
        self.grant_lines: dict[tuple[str, str], int] = {}
        self.agency_lines: dict[str, int] = {}
        self._done: set[str] = set()
        self._waiting: dict[str, list[tuple[int, Node]]] = {}
        self._handlers: dict[str, Callable[[int, MappingNode], None]] = {
            "accounts": self.account,
            "identities": self.identity,
            "grants": self.grant,
            "agencies": self.agency,
        }

    # ---- scheduling: entries in file order, each after the sections it refers to

    def entry(self, section: str, index: int, item: Node) -> None:
        if section in self._waiting or any(d not in self._done for d in _DEPENDS[section]):
            self._waiting.setdefault(section, []).append((index, item))
            return
        self._check(section, index, item)

    def section(self, section: str, node: Node) -> None:
        """A whole section's value (when it was not streamed entry by entry)."""
        if not (isinstance(node, ScalarNode) and node.tag == NULL_TAG):
            if not isinstance(node, SequenceNode):
                self.problems.add(_line(node), f"{section}: expected a list")
            else:
                for index, item in enumerate(node.value):
                    self.entry(section, index, item)
        self.end(section)

    def end(self, section: str) -> None:
        """Every entry of ``section`` was seen."""
        self._done.add(section)
        progress = True
        while progress:
            progress = False
            for name in _SECTIONS:
                if name in self._waiting and all(d in self._done for d in _DEPENDS[name]):
                    for index, item in self._waiting.pop(name):
                        self._check(name, index, item)
                    progress = True

    def finish(self) -> Registry:
        for name in _SECTIONS:
            if name not in self._done:
                self.end(name)  # an absent section: nothing to wait for
        return self.registry

    def _check(self, section: str, index: int, item: Node) -> None:
        if not isinstance(item, MappingNode):
            self.problems.add(_line(item), f"{section}[{index}]: expected a mapping")
            return
        self._handlers[section](index, item)

    # ---- one entry of each section

    def account(self, index: int, item: MappingNode) -> None:
        e = Entry(item, _label("accounts", index, item), _ACCOUNT_KEYS, self.problems, self.c)
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
            s = Entry(
                shared_node, f"{e.where}: shared_credential", _SHARED_KEYS, self.problems, self.c
            )
            totp = s.boolean("totp", default=False)
            ref = s.string("ref", required=False) or f"shared/{acc_id}"
            login = s.string("login", required=False, max_len=320)
            shared = SharedCredential(totp=totp, ref=ref, login=login)
        if acc_id is not None and acc_id in self.account_lines:
            e.error(
                e.line,
                f"duplicate account id {acc_id!r} (first at line {self.account_lines[acc_id]})",
            )
            return
        if acc_id is not None:
            self.account_lines[acc_id] = e.line
        if (
            acc_id is None
            or platform is None
            or handle is None
            or criticality is None
            or provider is None
            or not shared_ok
        ):
            return
        self.registry.put_account(
            Account(acc_id, intern(platform.lower()), handle, criticality, intern(provider), shared)
        )

    def identity(self, index: int, item: MappingNode) -> None:
        e = Entry(item, _label("identities", index, item), _IDENTITY_KEYS, self.problems, self.c)
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
            owner = self.email_owner.get(email)
            if owner is not None and owner[0] != ident_id:
                e.error(
                    email_node,
                    f"emails: {raw!r} already belongs to identity {owner[0]!r} (line {owner[1]})",
                )
                ok = False
                continue
            self.email_owner[email] = (ident_id or "?", _line(email_node))
            emails.append(email)
        aliases: dict[str, str] = {}
        alias_node = e.mapping("aliases")
        if e.present("aliases") and alias_node is None:
            ok = False
        if alias_node is not None:
            for key_node, value_node in alias_node.value:
                key = e._scalar(key_node)
                value = e._scalar(value_node)
                if not isinstance(key, str) or not (provider := key.strip()):
                    e.error(key_node, "aliases: keys must be provider or platform names")
                    ok = False
                elif (
                    isinstance(value, bool)
                    or not isinstance(value, str | int)
                    or not (text := str(value).strip())
                ):
                    e.error(value_node, f"aliases: {key}: expected a non-empty string")
                    ok = False
                elif key in aliases:
                    e.error(key_node, f"aliases: {key} given twice")
                    ok = False
                elif (problem := validate_alias(provider, text)) is not None:
                    e.error(value_node, f"aliases: {key}: {problem}")
                    ok = False
                else:
                    aliases[intern(provider)] = text
        if ident_id is not None and ident_id in self.identity_lines:
            e.error(
                e.line,
                f"duplicate identity id {ident_id!r} "
                f"(first at line {self.identity_lines[ident_id]})",
            )
            return
        if ident_id is not None:
            self.identity_lines[ident_id] = e.line
            hr_id = employee_id or ident_id
            hr_prev = self.hr_owner.get(hr_id)
            if hr_prev is not None:
                e.error(
                    e.fields.get("employee_id", e.node),
                    f"employee_id {hr_id!r} is also identity {hr_prev[0]!r} (line {hr_prev[1]}): "
                    "HR events would be ambiguous",
                )
                ok = False
            else:
                self.hr_owner[hr_id] = (ident_id, e.line)
        if ident_id is None or name is None or kind is None or status is None or not ok:
            return
        self.registry.put_identity(
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

    def grant(self, index: int, item: MappingNode) -> None:
        e = Entry(item, f"grants[{index}]", _GRANT_KEYS, self.problems, self.c)
        identity_ref = e.ident("identity")
        account_ref = e.ident("account")
        if identity_ref and account_ref:
            e.where = f"grants[{index}] {identity_ref}->{account_ref}"
        role = e.enum("role", ROLES)
        via = e.enum("via", ACCESS_PATHS)
        mfa = e.enum("mfa", MFA_METHODS)
        expires_at = e.time("expires_at", required=False)
        ok = not (e.present("expires_at") and expires_at is None)
        if identity_ref is not None and identity_ref not in self.identity_lines:
            e.error(e.fields["identity"], f"identity: unknown identity {identity_ref!r}")
            ok = False
        if account_ref is not None and account_ref not in self.account_lines:
            e.error(e.fields["account"], f"account: unknown account {account_ref!r}")
            ok = False
        account = self.registry.accounts.get(account_ref or "")
        if via == "shared_credential" and account is not None and account.shared_credential is None:
            e.error(
                e.fields["via"],
                f"via: shared_credential, but account {account.id!r} declares no shared_credential",
            )
            ok = False
        if identity_ref and account_ref:
            pair = (identity_ref, account_ref)
            if pair in self.grant_lines:
                e.error(
                    e.line,
                    f"duplicate grant of {account_ref!r} to {identity_ref!r} "
                    f"(first at line {self.grant_lines[pair]})",
                )
                return
            self.grant_lines[pair] = e.line
        if (
            identity_ref is None
            or account_ref is None
            or role is None
            or via is None
            or mfa is None
            or not ok
            # an invalid identity or account is already reported on its own line
            or identity_ref not in self.registry.identities
            or account_ref not in self.registry.accounts
        ):
            return
        # the id strings the identity and account already hold (put_grant would copy it else)
        identity_ref = self.registry.identities[identity_ref].id
        account_ref = self.registry.accounts[account_ref].id
        self.registry.put_grant(Grant(identity_ref, account_ref, role, via, mfa, expires_at))

    def agency(self, index: int, item: MappingNode) -> None:
        e = Entry(item, _label("agencies", index, item), _AGENCY_KEYS, self.problems, self.c)
        agency_id = e.ident("id")
        name = e.string("name")
        contract_ends = e.time("contract_ends", required=True)
        members: list[str] = []
        ok = True
        for member_node in e.seq("members", required=False) or ():
            member = e.item_string("members", member_node)
            if member is None:
                ok = False
            elif member not in self.identity_lines:
                e.error(member_node, f"members: unknown identity {member!r}")
                ok = False
            elif member in members:
                e.error(member_node, f"members: {member!r} listed twice")
            else:
                members.append(member)
        if agency_id is not None and agency_id in self.agency_lines:
            e.error(
                e.line,
                f"duplicate agency id {agency_id!r} (first at line {self.agency_lines[agency_id]})",
            )
            return
        if agency_id is not None:
            self.agency_lines[agency_id] = e.line
        if agency_id is None or name is None or contract_ends is None or not ok:
            return
        self.registry.put_agency(Agency(agency_id, name, contract_ends, tuple(members)))


def _read(stream: str | IO[bytes], source: str, loader: type[Any]) -> tuple[Registry, list[str]]:
    problems = _Problems(source)
    build = _Build(problems)
    parser = None
    try:
        parser = loader(stream)
        with gc_paused():
            _stream(Composer(parser), build, problems)
            registry = build.finish()
    except yaml.MarkedYAMLError as exc:
        problems = _Problems(source)  # only the syntax error: the rest would mislead
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        problems.add(line, f"YAML syntax error: {exc.problem or exc.context}")
        return Registry(), problems.render()
    except yaml.YAMLError as exc:
        problems = _Problems(source)
        problems.add(1, f"YAML error: {exc}")
        return Registry(), problems.render()
    finally:
        if parser is not None:
            parser.dispose()
    return registry, problems.render()


def _stream(composer: Composer, build: _Build, problems: _Problems) -> None:
    """Read the document: the root mapping key by key, a section's list entry by entry."""
    get = composer.get
    get()  # StreamStartEvent
    event = get()
    if type(event) is StreamEndEvent:
        problems.add(1, "empty registry: expected a mapping with " + ", ".join(_SECTIONS))
        return
    document = event  # DocumentStartEvent
    event = get()
    if type(event) is not MappingStartEvent or event.anchor is not None:
        root = composer.node(event)
        if not isinstance(root, MappingNode):
            problems.add(_line(root), "the registry must be a mapping of " + ", ".join(_SECTIONS))
        else:
            top = Entry(root, "registry", set(_SECTIONS), problems, build.c)
            for name, node in top.fields.items():
                build.section(name, node)
    else:
        _stream_root(composer, build, problems, event)
    get()  # DocumentEndEvent
    extra = get()
    mark: Any = extra.start_mark  # Any: PyYAML's stubs know the pure-Python marks only
    if type(extra) is DocumentStartEvent:
        raise ComposerError(
            "expected a single document in the stream",
            document.start_mark,
            "but found another document",
            mark,
        )


def _stream_root(composer: Composer, build: _Build, problems: _Problems, start: Any) -> None:
    get = composer.get
    pairs: list[tuple[Node, Node]] = []
    seen: set[str] = set()
    while type(event := get()) is not MappingEndEvent:
        key_node = composer.node(event)
        key = (
            key_node.value if isinstance(key_node, ScalarNode) and key_node.tag == STR_TAG else None
        )
        value_event = get()
        first = key in _SECTIONS and key not in seen
        if first and type(value_event) is SequenceStartEvent and value_event.anchor is None:
            assert key is not None
            seen.add(key)
            mark: Any = value_event.start_mark  # libyaml's or PyYAML's Mark
            pairs.append((key_node, ScalarNode(NULL_TAG, "", mark)))
            index = 0
            while type(event := get()) is not SequenceEndEvent:
                build.entry(key, index, composer.node(event))
                index += 1
            build.end(key)
            continue
        value = composer.node(value_event)
        if first:
            assert key is not None
            seen.add(key)
            build.section(key, value)
        # only the key matters from here on (unknown or repeated: reported below)
        pairs.append((key_node, ScalarNode(NULL_TAG, "", value.start_mark)))
    # the top-level key problems, worded as for any other mapping
    Entry(
        MappingNode(MAP_TAG, pairs, start.start_mark), "registry", set(_SECTIONS), problems, build.c
    )


def parse_registry(
    text: str, source: str = "<registry>", *, loader: type[Any] | None = None
) -> tuple[Registry, list[str]]:
    """Parse registry YAML text. Returns the valid part and every problem as
    ``source:line: message`` (an empty list means the registry is valid). ``loader`` picks
    the PyYAML loader whose parser is used (default :func:`loader_class`)."""
    return _read(text, source, loader or loader_class())


def _read_file(path: Path, loader: type[Any] | None) -> tuple[Registry, list[str]]:
    try:
        with path.open("rb") as fh:
            return _read(fh, str(path), loader or loader_class())
    except (OSError, UnicodeDecodeError) as exc:
        return Registry(), [f"{path}:0: cannot read the registry: {exc}"]


def check_registry(path: str | Path, *, loader: type[Any] | None = None) -> list[str]:
    """Every problem in the registry file at ``path`` as ``path:line: message`` (empty: valid)."""
    return _read_file(Path(path), loader)[1]


def load_registry(path: str | Path, *, loader: type[Any] | None = None) -> Registry:
    """Load and validate the registry file; raises RegistryError listing every problem."""
    registry, problems = _read_file(Path(path), loader)
    if problems:
        raise RegistryError(problems)
    return registry
