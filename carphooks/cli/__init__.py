"""The command-line front ends: thin wrappers, no logic (the library never imports this)."""
