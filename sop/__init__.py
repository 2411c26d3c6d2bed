"""SOP: content campaigns marketing builds, compliance approves and advisors carry out.

``DOMAIN`` is the record the composition root registers (``sop.plugin``).
"""

from sop.plugin import DOMAIN

__all__ = ["DOMAIN"]
