"""Kafka client options, decoding records into columnar batches, and what makes a message a dead letter."""
