"""Tagging: the tag library, customer tags, two-way WeCom corp-tag sync, audiences.

``DOMAIN`` is the record the composition root registers (``tagging.plugin``).
"""

from tagging.plugin import DOMAIN

__all__ = ["DOMAIN"]
