"""siyu's Redis clients pack commands with hiredis: the same bytes redis-py writes."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError

from core import redis as core_redis

COMMANDS = [
    ("EVALSHA", "a" * 40, 3, b"siyu:inbound", "siyu:nonce:n1", "siyu:dedup:k1", 1200, 259200),
    ("XACK", "siyu:inbound", "siyu-workers", *(f"1796585099915-{i}" for i in range(130))),
    ("SET", "siyu:k", "中文", "EX", 600, "NX"),
    ("ZADD", "siyu:retry", 1.5, "x"),
    ("CONFIG GET", "maxmemory-policy"),
    ("XADD", "s", "*", "p", memoryview(b"v1.k1.abc")),
]


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "unix:///tmp/siyu-test.sock"])
def test_clients_pack_in_c_the_bytes_redis_py_packs(url: str) -> None:
    pytest.importorskip("hiredis")
    client = core_redis.client_for(url)
    ours = client.connection_pool.make_connection()
    theirs = (UnixDomainSocketConnection if url.startswith("unix") else Connection)()
    assert type(ours) is not type(theirs) and isinstance(ours, type(theirs))
    for command in COMMANDS:
        assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command))
    with pytest.raises(DataError):
        ours.pack_command("SET", "k", None)
