"""The composition root: the only package that knows every domain.

``siyu.domains`` lists the domains in order, ``siyu.app.create_app`` builds the
aiohttp application for a set of roles, ``siyu.cli.main`` is the ``siyu``
command, ``siyu.demo`` runs everything against the WeCom sandbox.
"""
