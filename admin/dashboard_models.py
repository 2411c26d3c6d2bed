"""The dashboard's rollup tables (migration 0002); only ``admin.dashboard`` queries them."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class DashDaily(Model):
    """One counter: ``metric`` (and its ``dim``, e.g. a category) on one Shanghai day."""

    id = fields.BigIntField(primary_key=True)
    day = fields.CharField(max_length=10)  # YYYY-MM-DD, Asia/Shanghai
    metric = fields.CharField(max_length=32)
    dim = fields.CharField(max_length=64, default="")
    n = fields.BigIntField(default=0)

    class Meta:
        table = "admin_dash_daily"
        unique_together = (("day", "metric", "dim"),)


class DashCustomerDay(Model):
    """A customer seen on a day (SHA-256 of the external_userid), for distinct counts."""

    id = fields.BigIntField(primary_key=True)
    day = fields.CharField(max_length=10)
    customer = fields.CharField(max_length=64)

    class Meta:
        table = "admin_dash_customer_day"
        unique_together = (("day", "customer"),)
