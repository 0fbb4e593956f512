"""Shipped templates: resource packages mapped from the top-level source folders.

``carphooks.data.devd`` is ``devd/``, ``carphooks.data.hooks`` is ``hooks/`` and
``carphooks.data.templates`` is ``templates/`` (see ``[tool.setuptools.package-dir]``
in pyproject.toml); :mod:`carphooks.setup.render` reads them with importlib.resources.
"""
