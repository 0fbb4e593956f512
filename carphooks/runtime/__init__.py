"""The hook runtime: what carp-event and the tinc hooks run, as root, on every event."""
