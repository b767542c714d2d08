"""Electric Streams: the Durable Streams log engine and its HTTP protocol."""
