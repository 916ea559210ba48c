"""Okta: the provider (actions), the System Log poller and the login normaliser."""
