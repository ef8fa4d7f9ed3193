"""The producer side: the ``fleet`` CLI that reads, validates, slices, publishes and reports."""
