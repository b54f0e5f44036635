"""API keys: created with a secret shown once, listed without it, revoked (never deleted: the change log
names keys by prefix and label)."""

from __future__ import annotations

from typing import Any

import asyncpg

from service.auth import new_key

CREATE = """
INSERT INTO api_key (municipality_id, role, label, prefix, secret_hash)
VALUES ((SELECT id FROM municipality WHERE slug = $1), $2, $3, $4, $5)
RETURNING id, created_at
"""

LIST = """
SELECT k.id, k.prefix, k.role, k.label, k.created_at, k.revoked_at, m.slug AS municipality
FROM api_key k LEFT JOIN municipality m ON m.id = k.municipality_id
WHERE ($1::text IS NULL AND k.municipality_id IS NULL) OR m.slug = $1 OR $2
ORDER BY k.id
"""

REVOKE = """
UPDATE api_key k SET revoked_at = now()
WHERE k.id = $1 AND k.revoked_at IS NULL
  AND (($2::text IS NULL AND k.municipality_id IS NULL)
       OR k.municipality_id = (SELECT id FROM municipality WHERE slug = $2))
RETURNING k.id
"""


async def create_key(conn: asyncpg.Connection, municipality: str | None, role: str, label: str) -> dict[str, Any]:
    """A new key; the returned `key` is the only time the secret is seen."""
    key, prefix, digest = new_key()
    row = await conn.fetchrow(CREATE, municipality, role, label, prefix, digest)
    return {"id": row["id"], "key": key, "prefix": prefix, "role": role, "label": label,
            "municipality": municipality, "created": row["created_at"].isoformat()}


async def list_keys(conn: asyncpg.Connection, municipality: str | None, everything: bool = False) -> list[dict]:
    rows = await conn.fetch(LIST, municipality, everything)
    return [{"id": r["id"], "prefix": r["prefix"], "role": r["role"], "label": r["label"],
             "municipality": r["municipality"], "created": r["created_at"].isoformat(),
             "revoked": r["revoked_at"].isoformat() if r["revoked_at"] else None} for r in rows]


async def revoke_key(conn: asyncpg.Connection, key_id: int, municipality: str | None) -> bool:
    return await conn.fetchval(REVOKE, key_id, municipality) is not None
