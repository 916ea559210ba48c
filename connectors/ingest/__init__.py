"""The HTTP edges: HR webhook, login and leak ingest, breach-dump parsing."""
