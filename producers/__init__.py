"""What writes to Kafka: the HTTP receiver, the load generator and file import."""
