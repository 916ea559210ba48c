"""The SCIM 2.0 HTTP service (``/scim/v2``): Users, ServiceProviderConfig, ResourceTypes,
Schemas; filtering, index pagination, GET/POST/PUT/PATCH/DELETE and ``/Users/.search``.

Why it turns SCIM into HR events: an identity provider that deprovisions a user
(``active: false``, or DELETE) is saying the person left. That is a **termination**, and it
goes through the HR edge's own contract (:meth:`HrWebhook.admit`): dedup, journal with fsync,
broker acknowledgement, then the answer; 503 with Retry-After when the journal or the broker
cannot take it, so the identity provider retries. ``active: true`` after ``false`` is a
reinstatement HR event (the decision engine re-enables a suspension; an offboarded identity
stays offboarded: re-onboarding goes through the registry).

Idempotent by construction: the HR event id is ``scim.<id>.<terminated|reinstated|deleted>.<n>``
with ``n`` the number of lifecycle transitions the SCIM record has seen, so a client that
retries after a 503 (or after the event was accepted but the record was not written) sends
the same event id, which the edge answers as a duplicate; a repeated deactivation of an
inactive user changes nothing and sends nothing.

Identity facts (name, e-mails: :mod:`.resources`) change only through the registry change
topic, journal first, then the broker's acknowledgement, then the local view
(:meth:`Views.put_registry`). The SCIM record itself (``scim:<id>`` on that topic: the resource
as last written, its timestamps, transition count and deletion) is durable the same way, so
GET after POST works across a restart and on every worker. Writes are serialised by one lock:
SCIM traffic is a handful of requests per change in the identity provider.

Errors are RFC 7644 §3.12 Error bodies for every 4xx and 5xx, 401 included.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiohttp import web
from pydantic import ValidationError as PydanticError
from scim2_models import (
    Context,
    Error,
    ListResponse,
    Meta,
    PatchOp,
    SCIMException,
    ScimPolicy,
    SearchRequest,
)
from scim2_models.path.expressions import CompareOperator, Comparison

from connectors.ingest.edge import AuthGuard, bearer_ok, expect_continue, read_body
from connectors.ingest.hr_webhook import HrWebhook
from connectors.ingest.scim import resources
from connectors.ingest.scim.resources import MAX_RESULTS, User
from streams.bus.views import SCIM_KEY_PREFIX, Views
from streams.model.records import HrEvent, subject_hash
from streams.model.registry import Identity
from streams.support.errors import BrokerError, JournalError, ValidationError
from streams.support.secrets import Secret
from streams.support.times import format_time

log = structlog.get_logger(__name__)

ENDPOINT = "scim"
SCIM_JSON = "application/scim+json"
#: Entra sends ``remove`` with a value to pick the entry, and ``add``/``replace`` through a
#: filter that matches nothing yet (``emails[type eq "work"].value``): both as Entra means.
ENTRA_POLICY = ScimPolicy(
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)
#: Users built between two yields to the event loop in a filter that scans them all.
SCAN_SLICE = 200
_EVENT_REF = re.compile(r"[A-Za-z0-9._:@+\-]{1,120}")


class ScimError(Exception):
    """An RFC 7644 §3.12 error answer."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type


def scim_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type=SCIM_JSON,
        headers=headers,
    )


def error_response(status: int, detail: str, scim_type: str | None = None) -> web.Response:
    body: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": str(status),
        "detail": detail,
    }
    if scim_type:
        body["scimType"] = scim_type
    headers = None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="scim"'}
    elif status == 503:
        headers = {"Retry-After": "5"}
    return scim_response(status, body, headers)


def _validation_error(exc: PydanticError) -> web.Response:
    errors = Error.from_validation_errors(exc)
    first = errors[0] if errors else Error(status=400, detail=str(exc)[:300])
    return error_response(400, str(first.detail or "invalid request")[:500], first.scim_type)


def _now() -> str:
    return format_time(datetime.now(UTC))


class ScimService:
    """The ``/scim/v2`` sub-application over a worker's views and the HR edge."""

    def __init__(
        self,
        *,
        token: Secret | None,
        hr: HrWebhook,
        views: Views,
        registry_topic: str,
        max_body: int,
        guard: AuthGuard,
    ) -> None:
        self.token = token
        self.hr = hr
        self.views = views
        self.registry_topic = registry_topic
        self.max_body = max_body
        self.guard = guard
        self._lock = asyncio.Lock()

    # ---- the application ----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        # aiohttp's own Expect handling answers a text/plain 417, or a 500 for a value that is
        # not UTF-8, outside this middleware
        ex = expect_continue
        app.router.add_get(
            "/ServiceProviderConfig", self.service_provider_config, expect_handler=ex
        )
        app.router.add_get("/ResourceTypes", self.resource_types, expect_handler=ex)
        app.router.add_get("/ResourceTypes/{id}", self.resource_type, expect_handler=ex)
        app.router.add_get("/Schemas", self.schemas, expect_handler=ex)
        app.router.add_get("/Schemas/{id}", self.schema, expect_handler=ex)
        app.router.add_get("/Users", self.list_users, expect_handler=ex)
        app.router.add_post("/Users", self.create_user, expect_handler=ex)
        app.router.add_post("/Users/.search", self.search_users, expect_handler=ex)
        # Users are the only resource type: a search from the root searches them.
        app.router.add_post("/.search", self.search_users, expect_handler=ex)
        app.router.add_get("/Users/{id}", self.get_user, expect_handler=ex)
        app.router.add_put("/Users/{id}", self.replace_user, expect_handler=ex)
        app.router.add_patch("/Users/{id}", self.patch_user, expect_handler=ex)
        app.router.add_delete("/Users/{id}", self.delete_user, expect_handler=ex)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        try:
            return await handler(request)
        except ScimError as exc:
            if exc.status < 500:
                log.info("scim.rejected", status=exc.status, detail=exc.detail[:200])
            return error_response(exc.status, exc.detail, exc.scim_type)
        except SCIMException as exc:
            err = exc.to_error()
            return error_response(int(err.status or 400), exc.detail, err.scim_type)
        except PydanticError as exc:
            return _validation_error(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason)

    def _authenticate(self, request: web.Request) -> web.Response | None:
        blocked = self.guard.blocked(request, ENDPOINT)
        if blocked is not None:
            return error_response(429, "too many failed authentications; retry later")
        header = request.headers.get("Authorization")
        if bearer_ok(self.token, header):
            self.guard.succeeded(request)
            return None
        self.guard.failed(request, ENDPOINT, "missing" if not header else "wrong")
        return error_response(401, "missing or wrong bearer token")

    @staticmethod
    def _base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}/scim/v2"

    async def _json(self, request: web.Request) -> Any:
        raw = await read_body(request, self.max_body)
        if raw is None:
            raise ScimError(413, f"body larger than {self.max_body} bytes")
        ctype = request.headers.get("Content-Type", SCIM_JSON).split(";")[0].strip().lower()
        if ctype not in (SCIM_JSON, "application/json", ""):
            raise ScimError(415, "Content-Type must be application/scim+json or application/json")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ScimError(400, f"invalid JSON: {exc.msg}", "invalidSyntax") from None
        if not isinstance(data, dict):
            raise ScimError(400, "the body must be a JSON object", "invalidSyntax")
        return data

    # ---- discovery ----------------------------------------------------------------------

    async def service_provider_config(self, request: web.Request) -> web.Response:
        return scim_response(200, resources.service_provider_config())

    async def resource_types(self, request: web.Request) -> web.Response:
        return scim_response(200, _list(resources.resource_types(self._base(request))))

    async def resource_type(self, request: web.Request) -> web.Response:
        return _one(resources.resource_types(self._base(request)), request.match_info["id"])

    async def schemas(self, request: web.Request) -> web.Response:
        return scim_response(200, _list(resources.schemas(self._base(request))))

    async def schema(self, request: web.Request) -> web.Response:
        return _one(resources.schemas(self._base(request)), request.match_info["id"])

    # ---- reading ------------------------------------------------------------------------

    def _active(self, identity: Identity) -> bool:
        state = self.views.state.identity(identity.id)
        return state.status == "active" and identity.status == "active"

    def _record(self, scim_id: str) -> dict[str, Any] | None:
        return self.views.scim.get(scim_id)

    def _user(self, scim_id: str) -> tuple[User, dict[str, Any] | None] | None:
        """The user and its SCIM record (None before the first write through SCIM); None
        when there is no such user or it was deleted."""
        record = self._record(scim_id)
        if record is not None:
            if record.get("deleted"):
                return None
            return User.model_validate(record["resource"]), record
        identity = self.views.registry.identities.get(scim_id)
        if identity is None:
            return None
        return resources.synthesize(identity, self._active(identity)), None

    def _all_ids(self) -> list[str]:
        ids = set(self.views.registry.identities)
        ids.update(self.views.scim)
        return sorted(ids)

    def _by_user_name(self, value: str) -> list[str]:
        """Users whose userName is ``value`` (case-insensitively): a SCIM record's, or a
        registry identity's e-mail or alias (an identity provider's first look-up)."""
        wanted = value.strip().casefold()
        found = {
            sid
            for sid, rec in self.views.scim.items()
            if str(rec["resource"].get("userName", "")).casefold() == wanted
        }
        registry = self.views.registry
        ident = registry.resolve_hr(None, value) if "@" in value else None
        ident = ident or registry.resolve_alias(value)
        if ident is not None and ident.id not in self.views.scim:
            found.add(ident.id)
        return sorted(found)

    def _by_external_id(self, value: str) -> list[str]:
        """Users whose externalId is ``value``: a SCIM record's, else the registry identity
        with that employee_id, id or alias."""
        found = {
            sid
            for sid, rec in self.views.scim.items()
            if rec["resource"].get("externalId") == value
        }
        registry = self.views.registry
        ident = registry.resolve_hr(value, None) or registry.resolve_alias(value)
        if ident is not None and ident.id not in self.views.scim:
            found.add(ident.id)
        return sorted(found)

    async def _candidates(self, search: SearchRequest[Any]) -> list[tuple[User, bool]]:
        """(user, matched) pairs for a search: ``matched`` when the look-up itself decided
        (``userName``/``externalId``/``id eq``); the others are tested with the filter."""
        node = search.filter.ast if search.filter is not None else None
        if (
            isinstance(node, Comparison)
            and node.op == CompareOperator.eq
            and not node.attr_path.sub_attr
        ):
            attr = node.attr_path.attr.lower()
            value = str(node.value)
            lookups: dict[str, Callable[[str], list[str]]] = {
                "username": self._by_user_name,
                "externalid": self._by_external_id,
                "id": _itself,
            }
            lookup = lookups.get(attr)
            if lookup is not None:
                users = (self._user(sid) for sid in lookup(value))
                return [(found[0], True) for found in users if found is not None]
        out = []
        for n, sid in enumerate(self._all_ids(), 1):
            found = self._user(sid)
            if found is not None:
                out.append((found[0], False))
            if n % SCAN_SLICE == 0:
                # Any other filter builds every user (~90 us each): let the login and HR
                # edges on this loop run between slices instead of waiting seconds.
                await asyncio.sleep(0)
        return out

    async def _search(self, search: SearchRequest[Any], base: str) -> dict[str, Any]:
        start = max(1, search.start_index or 1)
        count = MAX_RESULTS if search.count is None else min(search.count, MAX_RESULTS)
        page: list[User]
        if search.filter is None:
            # An import pages through everyone (Okta: 100 at a time): build only the page,
            # not every user of a large registry on the event loop for each page.
            ids = [i for i in self._all_ids() if not self.views.scim.get(i, {}).get("deleted")]
            found = (self._user(i) for i in ids[start - 1 : start - 1 + count])
            page = [f[0] for f in found if f is not None]
            total = len(ids)
        else:
            matched = [
                user
                for user, decided in await self._candidates(search)
                if decided or search.filter.match(user)
            ]
            page, total = matched[start - 1 : start - 1 + count], len(matched)
        for user in page:
            self._meta(user, base)
        listing = ListResponse[User](
            total_results=total,
            start_index=start,
            items_per_page=len(page),
            resources=page,
        )
        out: dict[str, Any] = listing.model_dump(
            scim_ctx=Context.SEARCH_RESPONSE, response_parameters=search
        )
        return out

    def _meta(self, user: User, base: str) -> User:
        record = self._record(str(user.id))
        created = (record or {}).get("created")
        user.meta = Meta(
            resource_type="User",
            location=f"{base}/Users/{user.id}",
            created=created,
            last_modified=(record or {}).get("modified", created),
        )
        return user

    async def list_users(self, request: web.Request) -> web.Response:
        params = {k: request.query[k] for k in request.query}
        search = SearchRequest[User].model_validate(params)
        return scim_response(200, await self._search(search, self._base(request)))

    async def search_users(self, request: web.Request) -> web.Response:
        data = await self._json(request)
        search = SearchRequest[User].model_validate(data, scim_ctx=Context.SEARCH_REQUEST)
        return scim_response(200, await self._search(search, self._base(request)))

    def _found(self, request: web.Request) -> tuple[User, dict[str, Any] | None]:
        found = self._user(request.match_info["id"])
        if found is None:
            raise ScimError(404, f"no user {request.match_info['id'][:100]!r}")
        return found

    def _answer(
        self, request: web.Request, user: User, status: int = 200, ctx: Context | None = None
    ) -> web.Response:
        base = self._base(request)
        self._meta(user, base)
        params = {
            k: request.query[k] for k in ("attributes", "excludedAttributes") if k in request.query
        }
        search = SearchRequest[User].model_validate(params) if params else None
        body = user.model_dump(
            scim_ctx=ctx or Context.RESOURCE_QUERY_RESPONSE, response_parameters=search
        )
        headers = {"Location": f"{base}/Users/{user.id}"} if status == 201 else None
        return scim_response(status, body, headers)

    async def get_user(self, request: web.Request) -> web.Response:
        user, _record = self._found(request)
        return self._answer(request, user)

    # ---- writing ------------------------------------------------------------------------

    async def create_user(self, request: web.Request) -> web.Response:
        data = await self._json(request)
        user = User.model_validate(data, scim_ctx=Context.RESOURCE_CREATION_REQUEST)
        async with self._lock:
            taken = self._by_user_name(str(user.user_name or ""))
            if taken:
                raise ScimError(409, "userName already exists", "uniqueness")
            scim_id = resources.CREATED_PREFIX + uuid.uuid4().hex[:20]
            user.id = scim_id
            await self._write_identity(scim_id, user)
            now = _now()
            await self._write_record(scim_id, user, {"created": now, "transitions": 0})
        log.info("scim.created", id=scim_id, subject=subject_hash(str(user.user_name)))
        return self._answer(request, user, 201, Context.RESOURCE_CREATION_RESPONSE)

    async def replace_user(self, request: web.Request) -> web.Response:
        data = await self._json(request)
        new = User.model_validate(data, scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
        async with self._lock:
            old, record = self._found(request)
            new.id = old.id
            if new.active is None:
                new.active = old.active
            await self._update(old, new, record)
        return self._answer(request, new, 200, Context.RESOURCE_REPLACEMENT_RESPONSE)

    async def patch_user(self, request: web.Request) -> web.Response:
        data = await self._json(request)
        with ENTRA_POLICY:
            patch = PatchOp[User].model_validate(data, scim_ctx=Context.RESOURCE_PATCH_REQUEST)
        async with self._lock:
            old, record = self._found(request)
            new = old.model_copy(deep=True)
            patch.patch(new, ENTRA_POLICY)
            await self._update(old, new, record)
        return self._answer(request, new, 200, Context.RESOURCE_PATCH_RESPONSE)

    async def delete_user(self, request: web.Request) -> web.Response:
        async with self._lock:
            old, record = self._found(request)
            scim_id = str(old.id)
            fields = dict(record or {"created": _now(), "transitions": 0})
            if old.active is not False:
                fields["transitions"] = await self._transition(scim_id, old, "deleted", fields)
            fields["deleted"] = True
            await self._write_record(scim_id, old, fields)
        log.info("scim.deleted", id=scim_id)
        return web.Response(status=204)

    async def _update(self, old: User, new: User, record: dict[str, Any] | None) -> None:
        """Write ``new`` over ``old``: uniqueness, the lifecycle event if ``active`` changed,
        the identity facts, the SCIM record, in that order (the event first: a record that
        says inactive is never written for a termination that was refused)."""
        scim_id = str(old.id)
        renamed = str(new.user_name or "").casefold() != str(old.user_name or "").casefold()
        if renamed and any(o != scim_id for o in self._by_user_name(str(new.user_name))):
            raise ScimError(409, "userName already exists", "uniqueness")
        fields = dict(record or {"created": _now(), "transitions": 0})
        was, now = old.active is not False, new.active is not False
        if was != now:
            kind = "reinstated" if now else "terminated"
            fields["transitions"] = await self._transition(scim_id, new, kind, fields)
        await self._write_identity(scim_id, new)
        await self._write_record(scim_id, new, fields)

    async def _transition(self, scim_id: str, user: User, kind: str, fields: dict[str, Any]) -> int:
        """Send the HR event of a lifecycle change through the HR edge; returns the next
        transition count. Raises ScimError (503: retry) when the edge could not take it."""
        count = int(fields.get("transitions", 0))
        identity = self.views.registry.identities.get(scim_id)
        emails = list(identity.emails) if identity is not None else resources.emails_of(user)
        if not emails:
            log.warning(
                "scim.lifecycle_without_email",
                id=scim_id,
                effect="no HR event: an identity without an e-mail cannot be resolved by it",
            )
            return count
        ref = (
            scim_id
            if _EVENT_REF.fullmatch(scim_id)
            else hashlib.sha256(scim_id.encode()).hexdigest()[:24]
        )
        event_type = "terminated" if kind == "deleted" else kind
        try:
            event = HrEvent.from_dict(
                {
                    "event_id": f"scim.{ref}.{kind}.{count}",
                    "type": event_type,
                    "employee_id": identity.hr_id if identity is not None else scim_id,
                    "email": emails[0],
                    "effective_at": _now(),
                    "source": "scim",
                }
            )
        except ValidationError as exc:
            raise ScimError(
                400, f"cannot express this change as an HR event: {exc.reason}"
            ) from None
        status, body = await self.hr.admit(event, time.time())
        # 409: this transition's event id was accepted before with another effective_at (the
        # answer to that request was lost): it is the same transition, already on its way.
        if status not in (202, 409):
            raise ScimError(status, str(body.get("error", "HR edge refused the event")))
        log.info("scim.lifecycle", id=scim_id, type=event_type, event_id=event.event_id)
        return count + 1

    async def _publish(self, key: str, value: Any) -> None:
        """Journal (fsync), broker ack, local view: a registry-topic write of this service."""
        if not self.hr.publisher.reachable:
            raise ScimError(503, "broker unavailable; retry later")
        try:
            self.hr.journal.append("registry", durable=True, key=key, value=value)
        except JournalError as exc:
            raise ScimError(503, f"journal unavailable ({exc.reason}); retry later") from None
        try:
            await self.hr.publisher.send_json(self.registry_topic, key, value)
        except BrokerError:
            raise ScimError(503, "broker unavailable; retry later") from None
        self.views.put_registry(key, value)

    async def _write_identity(self, scim_id: str, user: User) -> None:
        current = self.views.registry.identities.get(scim_id)
        if current is None and not scim_id.startswith(resources.CREATED_PREFIX):
            return  # a record whose identity the registry no longer holds: nothing to update
        value = resources.identity_value(user, scim_id, current)
        if current is not None and current.to_dict() == value:
            return
        await self._publish(f"identity:{scim_id}", value)

    async def _write_record(self, scim_id: str, user: User, fields: dict[str, Any]) -> None:
        resource = user.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        resource.pop("meta", None)
        value = {**fields, "resource": resource, "modified": _now()}
        await self._publish(SCIM_KEY_PREFIX + scim_id, value)


def _itself(value: str) -> list[str]:
    return [value]


def _list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": len(items),
        "startIndex": 1,
        "itemsPerPage": len(items),
        "Resources": items,
    }


def _one(items: list[dict[str, Any]], wanted: str) -> web.Response:
    for item in items:
        if item.get("id") == wanted:
            return scim_response(200, item)
    raise ScimError(404, f"no such resource {wanted[:100]!r}")
