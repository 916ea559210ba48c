"""Any HTTP/JSON provider described in configuration, and the generic login normaliser."""
