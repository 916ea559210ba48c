"""Kafka: topic names and partitioning, publisher and views, journal, broker, bootstrap."""
