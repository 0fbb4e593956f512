"""Set-up tooling (render, install, check, devd rules); never on the hook path."""
