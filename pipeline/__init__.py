"""What the receiver and the consumers share: vendor formats, the canonical event, the Kafka record,
settings, logging and metrics. It imports neither side: the command line is eventpipe/, above both."""
