"""`eventpipe loadgen`: realistic mixed traffic for the four vendor APIs, paced open-loop, with a
summary of what the consumers should therefore count."""
