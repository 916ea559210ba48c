"""accessguard: access-revocation and security monitor for brand social-media accounts."""

__version__ = "0.1.0"
