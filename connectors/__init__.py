"""Edges of accessguard: sources (HR webhook, ...) and sinks (providers, pagers, secret store)."""
