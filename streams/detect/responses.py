"""Turning a fired rule into actions: the response a rule declares (``response:``) becomes
:class:`~streams.model.records.Action` records at the providers that hold the subject.

:func:`respond` serves login rules (cause ``rule:<rule id>:<event id>``), :func:`respond_leak`
leak rules (the record's cause ``leak:<breach>:<subject hash>``, exactly as the leak path always
built them, so re-imports repeat the keys); both build actions with the offboarding path's
helpers (:mod:`streams.decide.responses`). Only ``stable`` rules act: a staged or deprecated
rule's actions come back as dropped, for the alert to say what was not done. Each function
returns ``(actions, notes, dropped)``; notes say which responses could not be built and why.
"""

from __future__ import annotations

from collections.abc import Mapping

from streams.decide.policy import IDENTITY_KINDS
from streams.decide.responses import identity_actions, remove_grant, rotate_shared_credential
from streams.detect.fields import Ctx, LeakCtx
from streams.detect.model import Rule
from streams.model.records import Action, subject_hash


def respond(
    rule: Rule, ctx: Ctx, providers: Mapping[str, str]
) -> tuple[list[Action], list[str], tuple[str, ...]]:
    """A login rule's actions, notes (responses it could not build, and why) and dropped
    responses: a stable rule's actions carry the cause ``rule:<rule id>:<event id>``; a
    non-stable rule's actions are dropped."""
    wanted = rule.actions
    if not wanted:
        return [], [], ()
    if rule.status != "stable":
        return [], [], wanted
    event = ctx.event
    cause = f"rule:{rule.id}:{event.event_id}"
    ident = ctx.identity()
    subject = event.identity or f"principal:{subject_hash(event.principal)}"
    actions: list[Action] = []
    notes: list[str] = []
    for kind in wanted:
        if kind == "rotate_shared_credential":
            account = ctx.account()
            rotation = (
                rotate_shared_credential(
                    account, identity=subject, providers=providers, cause=cause
                )
                if account is not None
                else None
            )
            if rotation is None:
                notes.append(f"{kind}: the account has no shared TOTP credential")
                continue
            actions.append(rotation)
            continue
        if ident is None:
            notes.append(f"{kind}: skipped, the principal is not a registry identity")
            continue
        if kind in IDENTITY_KINDS:
            made = identity_actions(kind, ident, ctx.registry, providers, cause)
            if kind == "revoke_sessions" and not made:
                notes.append(f"{kind}: no configured provider holds a session of the identity")
            elif kind == "force_mfa_reenrolment" and not made:
                notes.append(f"{kind}: the identity has no alias at a configured IdP")
            elif not made:
                notes.append(f"{kind}: the identity has no alias at a configured IdP that can")
            actions.extend(made)
        elif kind == "remove_grant":
            grant, account = ctx.grant(), ctx.account()
            if grant is None or account is None:
                notes.append(f"{kind}: no grant on the target account to remove")
                continue
            actions.append(remove_grant(ident, account, grant, cause))
    return actions, notes, ()


def respond_leak(
    rule: Rule, ctx: LeakCtx, providers: Mapping[str, str]
) -> tuple[list[Action], list[str], tuple[str, ...]]:
    """A stable leak rule's actions, built as the leak path always built them: cause
    ``leak:<breach>:<subject hash>`` (the record's), so re-imports repeat the keys."""
    wanted = rule.actions
    if not wanted:
        return [], [], ()
    if rule.status != "stable":
        return [], [], wanted
    cause = ctx.record.cause
    ident, account = ctx.identity(), ctx.account()
    actions: list[Action] = []
    notes: list[str] = []
    for kind in wanted:
        if kind == "rotate_shared_credential":
            shared = account.shared_credential if account is not None else None
            if account is None or shared is None:
                notes.append(f"{kind}: only for a shared brand login")
                continue
            rotation = rotate_shared_credential(
                account, identity=f"shared:{account.id}", providers=providers, cause=cause
            )
            if rotation is not None:  # else no TOTP: the page asks for the password change
                actions.append(rotation)
            continue
        if ident is None:
            notes.append(f"{kind}: the subject is not a registry identity")
            continue
        made = identity_actions(kind, ident, ctx.registry, providers, cause)
        if kind == "force_mfa_reenrolment" and not made:
            notes.append("no alias at a configured IdP: re-enrol by hand")
        elif kind == "revoke_sessions" and not made:
            notes.append(f"{kind}: no configured provider holds a session: revoke by hand")
        elif not made:
            notes.append(f"{kind}: no alias at a configured IdP that can: do it by hand")
        actions.extend(made)
    return actions, notes, ()
