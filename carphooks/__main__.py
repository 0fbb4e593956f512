"""``python -m carphooks``."""

from carphooks.cli import main

main()
