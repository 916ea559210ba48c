"""SCIM users and the registry identities they are, and the discovery documents.

Every model and schema is scim2-models' (validated against RFC 7643's), none is written here.

What a SCIM ``User`` attribute is in accessguard (identity facts change only through the
registry change topic, :class:`connectors.ingest.scim.service.ScimService`):

========================  ==================================================================
SCIM attribute            registry fact
========================  ==================================================================
``id``                    the registry identity id (``scim-<hex>`` for a user created here)
``userName``              matched case-insensitively against the identity's e-mails and
                          aliases; when it is an e-mail address it is the first of ``emails``
``emails[].value``        the identity's ``emails``
``displayName``, else     the identity's ``name``
``name.formatted``, else
``givenName familyName``
``externalId``            matched against the identity's ``employee_id``, id and aliases;
                          kept in the SCIM record only
``active``                the identity's lifecycle: ``false`` (or DELETE) is a termination HR
                          event, ``true`` again a reinstatement HR event
anything else             kept in the SCIM record as sent (``password`` is never kept)
========================  ==================================================================

An identity the registry declares (a YAML file, ``accessguard registry import``) is a SCIM
user before any SCIM request names it (:func:`synthesize`), so an identity provider's first
``GET /Users?filter=userName eq ...`` finds it. The SCIM record (``scim:<id>`` on the registry
topic) exists from the first write through SCIM.
"""

from __future__ import annotations

from typing import Any

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    Email,
    ETag,
    Filter,
    Meta,
    Name,
    Patch,
    ResourceType,
    Sort,
)
from scim2_models import ServiceProviderConfig as SPC
from scim2_models import User as ScimUser

from streams.bus.views import SCIM_IDENTITY_PREFIX
from streams.model.registry import Identity, normalise_email

#: The largest page a list answers (``filter.maxResults``), and the default ``count``.
MAX_RESULTS = 200
#: The kind of an identity a SCIM client creates (the registry's identity kinds).
CREATED_KIND = "employee"
#: Prefix of the registry id of an identity created through SCIM.
CREATED_PREFIX = SCIM_IDENTITY_PREFIX

User = ScimUser[Any]


def is_email(value: str) -> bool:
    local, at, domain = value.partition("@")
    return bool(at and local and "." in domain and " " not in value)


def service_provider_config() -> dict[str, Any]:
    """What this service declares: PATCH and filtering yes; bulk, sort, ETags and password
    changes no (a password is never stored here); bearer-token authentication."""
    spc = SPC(
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_RESULTS),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=False),
        authentication_schemes=[
            AuthenticationScheme(
                type=AuthenticationScheme.Type.oauthbearertoken,
                name="Bearer token",
                description="Authorization: Bearer <scim.token>",
                primary=True,
            )
        ],
    )
    return spc.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)


def resource_types(base: str) -> list[dict[str, Any]]:
    rtype = ResourceType.from_resource(ScimUser)
    rtype.meta = Meta(resource_type="ResourceType", location=f"{base}/ResourceTypes/User")
    return [rtype.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)]


def schemas(base: str) -> list[dict[str, Any]]:
    schema = ScimUser.to_schema()
    schema.meta = Meta(resource_type="Schema", location=f"{base}/Schemas/{schema.id}")
    return [schema.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)]


def synthesize(identity: Identity, active: bool) -> User:
    """The SCIM user of a registry identity no SCIM request has written yet."""
    return ScimUser(
        id=identity.id,
        user_name=identity.emails[0] if identity.emails else identity.id,
        external_id=identity.hr_id,
        display_name=identity.name,
        emails=[Email(value=e, primary=i == 0) for i, e in enumerate(identity.emails)] or None,
        active=active,
    )


def display_name(user: User) -> str:
    if user.display_name:
        return str(user.display_name)
    name: Name | None = user.name
    if name is not None:
        if name.formatted:
            return str(name.formatted)
        parts = [p for p in (name.given_name, name.family_name) if p]
        if parts:
            return " ".join(str(p) for p in parts)
    return str(user.user_name or "")


def emails_of(user: User) -> list[str]:
    """The registry e-mails a SCIM user states: its userName first when it is an address."""
    found: list[str] = []
    candidates = [str(user.user_name or "")]
    candidates += [str(e.value) for e in user.emails or () if e.value]
    for value in candidates:
        if is_email(value):
            norm = normalise_email(value)
            if norm not in found:
                found.append(norm)
    return found


def identity_value(user: User, identity_id: str, current: Identity | None) -> dict[str, Any]:
    """The registry identity record after ``user`` was written: name and e-mails from the
    SCIM user (e-mails kept as they were when it states none), the rest as it was."""
    emails = emails_of(user)
    if current is None:
        return Identity(
            id=identity_id,
            name=display_name(user) or identity_id,
            kind=CREATED_KIND,
            emails=tuple(emails),
        ).to_dict()
    value = current.to_dict()
    value["name"] = display_name(user) or current.name
    if emails:
        value["emails"] = emails
    return value
