"""The SOP engine: timing, enrolment, planning, scheduling, dispatch, checks, results.

What marketing builds (``sop.campaigns``) the engine carries out: it enrols customers
when a trigger fires, plans one touch per step, hands due touches to the outbox
(``bot.outbox``) within WeCom's limits, re-checks each one right before it is sent,
and reads the results back.

:func:`register` is what the domain record (``sop.plugin``) takes from here: the
pipeline hooks, the jobs, and the outbox policies for ``sop.*`` origins.
"""

from sop.engine.runtime import EngineHooks, register

__all__ = ["EngineHooks", "register"]
