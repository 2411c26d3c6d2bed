"""A customer's 「退订」: the short reply that asks to hear no more (opt-out).

The edge reads it for two reasons: ``sop`` ends every journey of the customer on it
(``sop.engine.enrol``), and the pipeline must not take it for a redemption intent —
「退订」 shares its 退 with 退保 and 退出, and the intent model may read it so, which would
alert the advisor to a redemption that nobody asked for and enrol the customer in a
win-back journey the moment they asked to be left alone.
"""

from __future__ import annotations

import re

__all__ = ["is_opt_out"]

# 「退订」 and its usual forms (SMS habit: TD, T); only a short message that is the
# request itself, so 「退订的产品什么时候到账」 is not read as an opt-out.
_OPT_OUT = re.compile(r"^(退订|退訂|取消订阅|不要再发了?|td|t)[\s。.!！]*$", re.IGNORECASE)


def is_opt_out(text: str) -> bool:
    return bool(_OPT_OUT.match(text.strip()))
