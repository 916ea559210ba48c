"""Shared Signals (OpenID SSF): Security Event Tokens received (push, RFC 8935; poll,
RFC 8936) and transmitted."""
