"""Support code every layer may use: errors, secrets, logging, metrics, YAML checks."""
