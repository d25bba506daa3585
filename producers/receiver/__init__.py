"""The HTTP receiver: the four vendor APIs, drop-in, onto Kafka."""
