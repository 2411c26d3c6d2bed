"""The console's customer list and customer 360 page, and their API (``/api/v1/customers``).

Customers are the edge's rows (``bot.customers`` reads them); this package decides who
sees which customer and how much of them: an advisor the customers they follow, a team
lead their advisors' customers, marketing everyone with personal data masked,
compliance everyone and — with a stated reason, audited — the numbers in clear.  Other
domains add boxes to the page through ``core.domain.CustomerPanel``.
"""
