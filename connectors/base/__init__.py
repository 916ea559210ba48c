"""What every connector shares: the HTTP client, the poller base, login normalising and
the catalogue of connector types."""
