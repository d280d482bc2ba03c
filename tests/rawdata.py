"""Writes small raw-layout directories (docs/tables.md) for the ETL tests."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

FIELDS = [
    {"name": "category", "owner": "item", "multi": True, "sep": "|", "max_len": 3},
    {"name": "brand", "owner": "item"},
    {"name": "gender", "owner": "user"},
]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_raw(root: Path, interactions: list[list[object]], items: list[list[object]], users: list[list[object]] | None, fields: list[dict] = FIELDS) -> Path:
    """CSV raw layout with one part file per input; returns root."""
    root.mkdir(parents=True, exist_ok=True)
    item_cols = ["item_id"] + [f["name"] for f in fields if f["owner"] == "item"]
    user_cols = ["user_id"] + [f["name"] for f in fields if f["owner"] == "user"]
    write_csv(root / "interactions" / "part-0.csv", ["user_id", "item_id", "timestamp"], interactions)
    write_csv(root / "items" / "part-0.csv", item_cols, items)
    schema = {"format": "csv", "interactions": "interactions", "items": "items", "fields": fields}
    if users is not None:
        write_csv(root / "users" / "part-0.csv", user_cols, users)
        schema["users"] = "users"
    (root / "schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    return root


def clean_dataset(n_users: int = 6, n_items: int = 8, clicks_per_user: int = 10) -> tuple[list, list, list]:
    """A small valid dataset: deterministic clicks with distinct timestamps."""
    items = [[i, "a|b" if i % 2 else "c", f"brand{i % 3}"] for i in range(100, 100 + n_items)]
    users = [[u, "F" if u % 2 else "M"] for u in range(1, n_users + 1)]
    interactions = []
    ts = 1_000
    for k in range(clicks_per_user):
        for u in range(1, n_users + 1):
            interactions.append([u, 100 + (u * 3 + k) % n_items, ts])
            ts += 7
    return interactions, items, users
