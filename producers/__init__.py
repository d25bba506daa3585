"""What writes to Kafka: the HTTP receiver and file import."""
