"""Shared brand logins: the TOTP seed rotation provider and its secret store."""
