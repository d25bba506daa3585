"""The top layer: the `eventpipe` command, `eventpipe dev` and the load generator. It composes
pipeline/ (the shared kernel), producers/ and consumers/; nothing below imports it."""
