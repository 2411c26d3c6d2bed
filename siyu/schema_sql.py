"""Print the CREATE statements Tortoise derives from the current models.

A developer writing a migration diffs this against the domain's last one:
``python -m siyu.schema_sql sqlite`` / ``python -m siyu.schema_sql postgres URL``.
"""

from __future__ import annotations

import asyncio
import sys

from tortoise import Tortoise
from tortoise.utils import get_schema_sql

from core.db import tortoise_config
from siyu.app import schema_of
from siyu.domains import DOMAINS


async def schema_sql(url: str) -> str:
    await Tortoise.init(config=tortoise_config(url, schema_of(DOMAINS).model_modules))
    try:
        return get_schema_sql(Tortoise.get_connection("default"), safe=False)
    finally:
        await Tortoise.close_connections()


def main() -> None:
    dialect = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    url = "sqlite://:memory:" if dialect == "sqlite" else sys.argv[2]
    print(asyncio.run(schema_sql(url)))


if __name__ == "__main__":
    main()
