"""The WeCom edge: receiver, pipeline, outbox, WeCom client (and the sandbox, a leaf).

``DOMAIN`` is the record the composition root registers (``bot.plugin``).
"""

from bot.plugin import DOMAIN

__all__ = ["DOMAIN"]
