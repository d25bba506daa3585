"""`eventpipe status`: what an operator needs at a glance — broker, topics, the consumer group and its
lag, rows in the sink, recent dead letters. Collected (I/O) in `collect`, shown (pure) by `render`."""
