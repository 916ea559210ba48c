"""The domain model: records, the access registry, lifecycle state. Pure: no I/O."""
