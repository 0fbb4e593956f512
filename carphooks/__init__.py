"""carphooks: move floating IP addresses between hosts when CARP elects a new master."""

__version__ = "0.1.0"
