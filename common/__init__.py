"""What the producer and the workers share: settings, tables, the wire format, statistics."""
