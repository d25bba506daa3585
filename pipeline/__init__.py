"""What the receiver and the consumers share: vendor formats, the canonical event, the Kafka record,
settings, logging, metrics and the command line."""
