"""``python -m carphooks``."""

from carphooks.cli.admin import main

main()
