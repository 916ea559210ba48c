"""Decisions: HR events, leaks and logins turned into actions and alerts. Pure: no I/O."""
