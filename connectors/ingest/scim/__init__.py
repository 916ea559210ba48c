"""SCIM 2.0 service provider (RFC 7643/7644) at ``/scim/v2``: identity providers (Okta,
Microsoft Entra) provision and deprovision the registry's identities through it.

:mod:`.resources` maps SCIM users to registry identities and publishes the discovery
documents; :mod:`.service` is the HTTP service and the edge contract.
"""
