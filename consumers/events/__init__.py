"""`eventpipe events`: the newest rows of the sink, as a table or JSON lines, optionally followed."""
