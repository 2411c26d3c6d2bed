"""The console and the API shell: sign-in, roles, API keys, the audit viewer.

``DOMAIN`` is the record the composition root registers (``admin.plugin``).
"""

from admin.plugin import DOMAIN

__all__ = ["DOMAIN"]
