"""Delivery: from the journal to the sinks. ``loop`` is what every sink shares while the
daemon runs (batches, retries, dead letters, offsets); ``replay`` re-sends to one sink
on an operator's request."""
