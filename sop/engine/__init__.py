"""The SOP engine: timing, enrolment, planning, scheduling, dispatch, checks, results.

What marketing builds (``sop.campaigns``) the engine carries out: it enrols customers
when a trigger fires, plans one touch per step, hands due touches to the outbox
(``bot.outbox``) within WeCom's limits, re-checks each one right before it is sent,
and reads the results back.
"""
