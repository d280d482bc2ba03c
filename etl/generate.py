"""Synthetic raw logs with planted structure: the embedded default dataset (`towerssl generate`).

It writes the raw layout of docs/tables.md (schema.yaml + interactions/, items/, users/ part files, CSV or
Parquet) so the ETL reads it exactly like real logs. The data is built to make the method measurable:

Items. 16 categories (CATEGORY_AUDIENCE), Zipf-sized brands with a home category and a price tier, and the
fields category (multi: a primary plus sometimes a second one), keywords (multi), brand, price, audience
and city. Planted dependencies, exposed as PLANTED_PAIRS for the statistics tests:
  - audience <-> category: audience ~ P(audience | primary category), from CATEGORY_AUDIENCE;
  - brand <-> category: BRAND_IN_CATEGORY of items take a brand whose home is their primary category;
  - price <-> brand: the price bucket is the brand's tier, moved one bucket up or down 30% of the time;
  - keywords <-> category: KEYWORD_IN_CATEGORY of keywords come from the primary category's own pool.
City is drawn independently of everything (INDEPENDENT_FIELDS): its MI to every other field is ~0. Pairs
linked only through category (brand-audience, keywords-brand, ...) carry MI too, by transitivity.

Users. gender and age are features; a price tier (close to the age bucket) and three preferred categories
(drawn from P(category | gender, age)) are latent. Activity is log-normal, so a few users click a lot.

Clicks. A user (by activity) picks a category: one of theirs (by Dirichlet weights) or, with probability
EXPLORE, the global mix. Within it an item is drawn with weight
    zipf(popularity rank) * GENDER_FIT[gender, audience] * PRICE_FIT ** |tier - price|,
so item popularity has a long tail and the item's features say who clicks it. Part k of the interactions
covers the k-th slice of the time span, rows sorted by time, as day-partitioned logs arrive.

New items. NEW_ITEM_SHARE of the items are released late (in the last NEW_ITEM_WINDOW of the span); a click
drawn on an item before its release is drawn again (same user, same time), so a global time split before
the release window leaves the new items without a training click.

Determinism and scale. Every random stream is SeedSequence(seed, spawn_key=(stream, part)), so the output
depends only on the arguments. Only the catalogs (O(users + items * segments) numbers) stay in memory;
clicks are drawn and written one part (chunk_rows rows) at a time. schema.yaml is written last, so a crashed
run leaves no readable layout behind.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from towerssl.errors import UsageError
from towerssl.etl.raw import FieldDef

log = logging.getLogger(__name__)

# P(audience = female, male, unisex | primary category)
CATEGORY_AUDIENCE: dict[str, tuple[float, float, float]] = {
    "womens_fashion": (0.90, 0.02, 0.08),
    "beauty": (0.80, 0.04, 0.16),
    "jewelry": (0.75, 0.05, 0.20),
    "baby": (0.55, 0.05, 0.40),
    "kitchen": (0.45, 0.10, 0.45),
    "home": (0.40, 0.10, 0.50),
    "books": (0.30, 0.20, 0.50),
    "toys": (0.30, 0.30, 0.40),
    "pets": (0.25, 0.25, 0.50),
    "music": (0.20, 0.35, 0.45),
    "outdoors": (0.10, 0.60, 0.30),
    "sports": (0.10, 0.65, 0.25),
    "electronics": (0.08, 0.65, 0.27),
    "gaming": (0.05, 0.80, 0.15),
    "automotive": (0.04, 0.84, 0.12),
    "mens_fashion": (0.02, 0.90, 0.08),
}
CATEGORIES = tuple(CATEGORY_AUDIENCE)
AUDIENCES = ("female", "male", "unisex")
GENDERS = ("female", "male")  # a user's gender g matches the audience with the same index
AGES = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_SHARES = (0.18, 0.30, 0.24, 0.17, 0.11)
PRICES = ("budget", "low", "mid", "high", "luxury")
CITIES = ("berlin", "paris", "madrid", "rome", "warsaw", "vienna", "lisbon", "prague", "oslo", "dublin", "milan", "lyon")
KEYWORDS_PER_CATEGORY = 8
GENERIC_KEYWORDS = ("sale", "new", "gift", "bestseller", "eco", "premium", "bundle", "limited")
KEYWORDS = tuple(f"{c}_kw{j}" for c in CATEGORIES for j in range(KEYWORDS_PER_CATEGORY)) + GENERIC_KEYWORDS

FIELDS = (
    FieldDef("category", "item", multi=True, max_len=2),
    FieldDef("keywords", "item", multi=True, max_len=4),
    FieldDef("brand", "item"),
    FieldDef("price", "item"),
    FieldDef("audience", "item"),
    FieldDef("city", "item"),
    FieldDef("gender", "user"),
    FieldDef("age", "user"),
)
PLANTED_PAIRS = (("audience", "category"), ("brand", "category"), ("price", "brand"), ("keywords", "category"))
INDEPENDENT_FIELDS = ("city",)

SECOND_CATEGORY = 0.35  # share of items with a second category
BRAND_IN_CATEGORY = 0.9
PRICE_MOVE = (0.15, 0.70, 0.15)  # P(price = tier - 1, tier, tier + 1)
KEYWORD_IN_CATEGORY = 0.75
MAX_KEYWORDS = 4
ZIPF_EXPONENT = 1.1
PREFERRED_CATEGORIES = 3
EXPLORE = 0.15
GENDER_FIT = np.array([[1.0, 0.1, 0.6], [0.1, 1.0, 0.6]])  # [user gender, item audience]
PRICE_FIT = 0.5
NEW_ITEM_SHARE = 0.10
NEW_ITEM_WINDOW = 0.15  # new items are released in the last 15% of the span...
RELEASE_MARGIN = 0.02  # ...but not in its last 2%, so each one can still be clicked
START_TS = 1_704_067_200  # 2024-01-01 00:00:00 UTC
SPAN_S = 60 * 86_400
ID_STRIDE = 4  # ids are sparse, as in real logs: i * ID_STRIDE + a random offset below it
SEGMENTS = len(GENDERS) * len(PRICES)  # a user's (gender, price tier): what the item weights depend on
_CATALOG, _USERS, _CLICKS = range(3)  # random streams


class GroupedSampler:
    """Draws one value per row from the categorical distribution of that row's group, without a row loop.

    Group g's cumulative probabilities are stored as g + cdf in one sorted array, so a single searchsorted
    on (group + uniform) samples every row at once.
    """

    def __init__(self, groups: np.ndarray, weights: np.ndarray, values: np.ndarray, n_groups: int) -> None:
        order = np.argsort(groups, kind="stable")
        groups, weights = groups[order], weights[order].astype(np.float64)
        counts = np.bincount(groups, minlength=n_groups)
        self.ends = np.cumsum(counts)
        starts = self.ends - counts
        cumulative = np.cumsum(weights)
        before = np.where(starts > 0, cumulative[starts - 1], 0.0)
        totals = cumulative[self.ends - 1] - before
        if (counts == 0).any() or (totals <= 0).any():
            raise ValueError("every group needs at least one value with positive weight")
        within = (cumulative - np.repeat(before, counts)) / np.repeat(totals, counts)
        within[self.ends - 1] = 1.0
        self.cdf = groups + within
        self.values = values[order]

    @classmethod
    def from_matrix(cls, weights: np.ndarray, values: np.ndarray | None = None) -> GroupedSampler:
        """Row g of `weights` is group g's distribution over values[g] (default: the column indices)."""
        n_groups, width = weights.shape
        values = np.broadcast_to(np.arange(width), weights.shape) if values is None else values
        return cls(np.repeat(np.arange(n_groups), width), weights.ravel(), np.ravel(values), n_groups)

    def sample(self, groups: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        position = np.searchsorted(self.cdf, groups + uniforms, side="right")
        return self.values[np.minimum(position, self.ends[groups] - 1)]  # guards g + u rounding up to g + 1


@dataclass(frozen=True)
class ItemCatalog:
    ids: np.ndarray
    table: pa.Table  # item_id + the item fields, as written
    release_ts: np.ndarray
    is_new: np.ndarray
    sampler: GroupedSampler  # group segment * len(CATEGORIES) + category -> item index
    category_share: np.ndarray  # P(primary category): where an exploring user looks


@dataclass(frozen=True)
class UserCatalog:
    ids: np.ndarray
    segment: np.ndarray  # gender * len(PRICES) + price tier
    activity: GroupedSampler  # one group -> user index
    preferred: GroupedSampler  # group user index -> category


@dataclass(frozen=True)
class GenerateSummary:
    out_dir: Path
    users: int
    items: int
    clicks: int
    parts: dict[str, int]  # part files per input
    start_ts: int
    end_ts: int  # exclusive
    new_item_ids: np.ndarray
    new_item_release_ts: np.ndarray
    seconds: float

    @property
    def release_window_start(self) -> int:
        """A global time split at or before this leaves every new item without a training click."""
        return START_TS + int(SPAN_S * (1 - NEW_ITEM_WINDOW))


def _rng(seed: int, stream: int, part: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, part)))


def _sparse_ids(rng: np.random.Generator, first: int, count: int) -> np.ndarray:
    return (np.arange(first, first + count, dtype=np.int64) * ID_STRIDE) + rng.integers(ID_STRIDE, size=count)


def _joined(names: tuple[str, ...], codes: np.ndarray, present: np.ndarray) -> pa.Array:
    """Row i: the names of codes[i, present[i]] joined by '|' (multi-valued fields as one string)."""
    offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.asarray(names)[codes[present]]))
    return pc.binary_join(lists, "|")


def _build_items(count: int, seed: int) -> ItemCatalog:
    rng = _rng(seed, _CATALOG)
    n_cat = len(CATEGORIES)
    n_brands = max(2 * n_cat, count // 20)
    brand_home = np.arange(n_brands) % n_cat
    brand_tier = rng.integers(len(PRICES), size=n_brands)
    brand_weight = (np.arange(n_brands) // n_cat + 1.0) ** -0.8
    brand_by_category = GroupedSampler(brand_home, brand_weight, np.arange(n_brands), n_cat)
    any_brand = GroupedSampler(np.zeros(n_brands, dtype=np.int64), brand_weight, np.arange(n_brands), 1)

    category_weight = rng.dirichlet(np.full(n_cat, 3.0))
    primary = rng.choice(n_cat, size=count, p=category_weight)
    primary[:n_cat] = np.arange(n_cat)  # every category has items, and (never new) released ones
    second = (primary + 1 + rng.integers(n_cat - 1, size=count)) % n_cat
    categories = np.stack([primary, second], axis=1)
    has_categories = np.stack([np.ones(count, bool), rng.random(count) < SECOND_CATEGORY], axis=1)

    audience = GroupedSampler.from_matrix(np.array(list(CATEGORY_AUDIENCE.values()))).sample(primary, rng.random(count))
    brand = np.where(
        rng.random(count) < BRAND_IN_CATEGORY,
        brand_by_category.sample(primary, rng.random(count)),
        any_brand.sample(np.zeros(count, dtype=np.int64), rng.random(count)),
    )
    move = rng.choice(3, size=count, p=PRICE_MOVE) - 1
    price = np.clip(brand_tier[brand] + move, 0, len(PRICES) - 1)

    # Distinct keywords per item: a random order of the category pool and of the generic pool, slot by slot.
    own = np.argsort(rng.random((count, KEYWORDS_PER_CATEGORY)), axis=1)[:, :MAX_KEYWORDS]
    generic = np.argsort(rng.random((count, len(GENERIC_KEYWORDS))), axis=1)[:, :MAX_KEYWORDS]
    from_own = rng.random((count, MAX_KEYWORDS)) < KEYWORD_IN_CATEGORY
    keywords = np.where(from_own, primary[:, None] * KEYWORDS_PER_CATEGORY + own, n_cat * KEYWORDS_PER_CATEGORY + generic)
    has_keywords = np.arange(MAX_KEYWORDS) < rng.integers(1, MAX_KEYWORDS + 1, size=count)[:, None]
    city = rng.integers(len(CITIES), size=count)

    ids = _sparse_ids(rng, 0, count)
    is_new = np.zeros(count, bool)
    is_new[n_cat + rng.choice(count - n_cat, round(NEW_ITEM_SHARE * (count - n_cat)), replace=False)] = True
    window = SPAN_S * (NEW_ITEM_WINDOW - RELEASE_MARGIN)
    late = START_TS + SPAN_S * (1 - NEW_ITEM_WINDOW) + rng.random(count) * window
    release_ts = np.where(is_new, late.astype(np.int64), START_TS)

    zipf = (rng.permutation(count) + 1.0) ** -ZIPF_EXPONENT
    segment = np.arange(SEGMENTS)[:, None]
    gender, tier = segment // len(PRICES), segment % len(PRICES)
    weights = zipf * GENDER_FIT[gender, audience] * PRICE_FIT ** np.abs(tier - price)
    groups = segment * n_cat + primary
    sampler = GroupedSampler(groups.ravel(), weights.ravel(), np.tile(np.arange(count), SEGMENTS), SEGMENTS * n_cat)

    table = pa.table(
        {
            "item_id": ids,
            "category": _joined(CATEGORIES, categories, has_categories),
            "keywords": _joined(KEYWORDS, keywords, has_keywords),
            "brand": pa.array(np.char.add("brand_", np.char.zfill(brand.astype(str), 4))),
            "price": pa.array(np.asarray(PRICES)[price]),
            "audience": pa.array(np.asarray(AUDIENCES)[audience]),
            "city": pa.array(np.asarray(CITIES)[city]),
        }
    )
    return ItemCatalog(ids, table, release_ts, is_new, sampler, category_weight)


def _category_preference(seed: int) -> np.ndarray:
    """P(category | gender, age) as a (genders * ages, categories) matrix: audience fit times an age taste."""
    rng = _rng(seed, _CATALOG, 1)
    audience = np.array(list(CATEGORY_AUDIENCE.values()))
    gender_taste = audience[:, :2].T + 0.5 * audience[:, 2]  # (gender, category)
    age_taste = rng.lognormal(0.0, 0.8, size=(len(AGES), len(CATEGORIES)))
    taste = gender_taste[:, None, :] * age_taste[None, :, :]
    return (taste / taste.sum(axis=2, keepdims=True)).reshape(len(GENDERS) * len(AGES), len(CATEGORIES))


def _build_user_part(seed: int, part: int, first: int, count: int, preference: np.ndarray) -> tuple[pa.Table, dict[str, np.ndarray]]:
    rng = _rng(seed, _USERS, part)
    gender = rng.integers(len(GENDERS), size=count)
    age = rng.choice(len(AGES), size=count, p=AGE_SHARES)
    tier = np.clip(np.rint(age + rng.normal(0.0, 0.9, size=count)), 0, len(PRICES) - 1).astype(np.int64)
    # Distinct preferred categories without replacement: the top keys of log p + Gumbel noise.
    keys = np.log(preference[gender * len(AGES) + age]) + rng.gumbel(size=(count, len(CATEGORIES)))
    preferred = np.argpartition(-keys, PREFERRED_CATEGORIES - 1, axis=1)[:, :PREFERRED_CATEGORIES]
    latent = {
        "ids": _sparse_ids(rng, first, count),
        "segment": gender * len(PRICES) + tier,
        "preferred": preferred,
        "preference": rng.dirichlet(np.ones(PREFERRED_CATEGORIES), size=count),
        "activity": rng.lognormal(0.0, 1.0, size=count),
    }
    table = pa.table({"user_id": latent["ids"], "gender": np.asarray(GENDERS)[gender], "age": np.asarray(AGES)[age]})
    return table, latent


def _draw_clicks(rng: np.random.Generator, users: UserCatalog, items: ItemCatalog, count: int, t0: int, t1: int) -> pa.Table:
    """One part: `count` clicks in [t0, t1), sorted by time; clicks before an item's release are redrawn."""
    user = users.activity.sample(np.zeros(count, dtype=np.int64), rng.random(count))
    ts = rng.integers(t0, t1, size=count)
    item = np.empty(count, dtype=np.int64)
    pending = np.arange(count)
    while pending.size:  # ends: every category holds released items, each with positive weight in every segment
        who = user[pending]
        category = np.where(
            rng.random(pending.size) < EXPLORE,
            rng.choice(len(CATEGORIES), size=pending.size, p=items.category_share),
            users.preferred.sample(who, rng.random(pending.size)),
        )
        drawn = items.sampler.sample(users.segment[who] * len(CATEGORIES) + category, rng.random(pending.size))
        item[pending] = drawn
        pending = pending[ts[pending] < items.release_ts[drawn]]
    order = np.argsort(ts, kind="stable")
    return pa.table({"user_id": users.ids[user[order]], "item_id": items.ids[item[order]], "timestamp": ts[order]})


LAYOUT = ("schema.yaml", "interactions", "items", "users")  # schema first: it marks a complete layout
FORMATS = ("csv", "parquet")


def _part_sizes(total: int, chunk_rows: int) -> list[int]:
    parts = max(1, math.ceil(total / chunk_rows))
    return [total // parts + (k < total % parts) for k in range(parts)]


def _write_part(directory: Path, part: int, table: pa.Table, fmt: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"part-{part:05d}.{fmt}"
    if fmt == "csv":
        pa_csv.write_csv(table, path, pa_csv.WriteOptions(quoting_style="none"))  # values never need quotes
    else:
        pq.write_table(table, path)


def _schema(fmt: str) -> dict:
    fields = [
        {"name": f.name, "owner": f.owner} | ({"multi": True, "sep": f.sep, "max_len": f.max_len} if f.multi else {})
        for f in FIELDS
    ]
    return {"format": fmt, "interactions": "interactions", "items": "items", "users": "users", "fields": fields}


def _prepare(out_dir: Path, overwrite: bool) -> None:
    present = [out_dir / name for name in LAYOUT if (out_dir / name).exists()]
    if present and not overwrite:
        names = ", ".join(p.name for p in present)
        raise UsageError(f"{out_dir} already holds raw-layout paths ({names}); pass --overwrite to replace them")
    for path in present:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _check_sizes(users: int, items: int, clicks: int, chunk_rows: int, fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if items < 2 * len(CATEGORIES):
        raise UsageError(f"items must be at least {2 * len(CATEGORIES)} (two per category), got {items}")
    if min(users, clicks, chunk_rows) < 1:
        raise UsageError(f"users, clicks and chunk_rows must be positive, got {users}, {clicks}, {chunk_rows}")


def generate(
    out_dir: str | Path,
    users: int = 2_000,
    items: int = 1_000,
    clicks: int = 100_000,
    seed: int = 0,
    fmt: str = "csv",
    chunk_rows: int = 1_000_000,
    overwrite: bool = False,
) -> GenerateSummary:
    """Write the synthetic raw layout to out_dir; at most chunk_rows rows per part file (and in memory)."""
    _check_sizes(users, items, clicks, chunk_rows, fmt)
    started = time.perf_counter()
    out = Path(out_dir)
    _prepare(out, overwrite)

    catalog = _build_items(items, seed)
    item_parts = _part_sizes(items, chunk_rows)
    for part, offset in enumerate(np.cumsum([0] + item_parts[:-1])):
        _write_part(out / "items", part, catalog.table.slice(int(offset), item_parts[part]), fmt)

    preference = _category_preference(seed)
    user_parts = _part_sizes(users, chunk_rows)
    latent_parts = []
    for part, first in enumerate(np.cumsum([0] + user_parts[:-1])):
        table, latent = _build_user_part(seed, part, int(first), user_parts[part], preference)
        _write_part(out / "users", part, table, fmt)
        latent_parts.append(latent)
    latent = {key: np.concatenate([p[key] for p in latent_parts]) for key in latent_parts[0]}
    people = UserCatalog(
        ids=latent["ids"],
        segment=latent["segment"],
        activity=GroupedSampler.from_matrix(latent["activity"][None]),
        preferred=GroupedSampler.from_matrix(latent["preference"], values=latent["preferred"]),
    )

    click_parts = _part_sizes(clicks, chunk_rows)
    bounds = START_TS + (SPAN_S * np.arange(len(click_parts) + 1, dtype=np.int64)) // len(click_parts)
    with tqdm(total=clicks, unit="click", unit_scale=True, desc="generate", disable=None) as bar:
        for part, size in enumerate(click_parts):
            part_started = time.perf_counter()
            table = _draw_clicks(_rng(seed, _CLICKS, part), people, catalog, size, int(bounds[part]), int(bounds[part + 1]))
            _write_part(out / "interactions", part, table, fmt)
            bar.update(size)
            if len(click_parts) > 1:
                rate = size / max(time.perf_counter() - part_started, 1e-9)
                log.info("clicks part %d/%d: %s rows (%.0f clicks/s)", part + 1, len(click_parts), f"{size:,}", rate)

    (out / "schema.yaml").write_text(yaml.safe_dump(_schema(fmt), sort_keys=False))
    return GenerateSummary(
        out_dir=out,
        users=users,
        items=items,
        clicks=clicks,
        parts={"interactions": len(click_parts), "items": len(item_parts), "users": len(user_parts)},
        start_ts=START_TS,
        end_ts=START_TS + SPAN_S,
        new_item_ids=catalog.ids[catalog.is_new],
        new_item_release_ts=catalog.release_ts[catalog.is_new],
        seconds=time.perf_counter() - started,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="RAW_DIR to write (the raw layout of docs/tables.md)")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--clicks", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="csv")
    parser.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows per part file, and in memory at once")
    parser.add_argument("--overwrite", action="store_true", help="replace a raw layout already in --out")


def run(args: argparse.Namespace) -> int:
    summary = generate(args.out, args.users, args.items, args.clicks, args.seed, args.fmt, args.chunk_rows, args.overwrite)
    log.info(
        "wrote %s: %s users, %s items (%s new, released from %d), %s clicks in %.1f s (%.0f clicks/s)",
        summary.out_dir, f"{summary.users:,}", f"{summary.items:,}", f"{summary.new_item_ids.size:,}",
        summary.release_window_start, f"{summary.clicks:,}", summary.seconds, summary.clicks / summary.seconds,
    )
    return 0
