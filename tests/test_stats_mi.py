"""feature_mi against a brute-force float64 reference written straight from the MI formula."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from towerssl.errors import UsageError
from towerssl.fields import FIELDS_SCHEMA, FieldSpec
from towerssl.lake import Snapshot, pinned_snapshot, read_table, write_table
from towerssl.stats.fields import item_fields
from towerssl.stats.mi import FeatureMI, feature_mi, readable_by_tasks, snapshot_feature_mi
from towerssl.stats.readers import load_mi_matrix

FIELDS = [  # cardinality: the largest value random_items draws + 1 (ids for up to 500 items)
    FieldSpec("item", "item", False, 1, 503),
    FieldSpec("genre", "item", True, 4, 9),
    FieldSpec("brand", "item", False, 1, 9),
    FieldSpec("tags", "item", True, 3, 7),
    FieldSpec("color", "item", False, 1, 6),
]
COLUMNS = {"item_idx": "int", "item_id": "long", "item": "int", "genre": "array<int>", "brand": "int", "tags": "array<int>", "color": "int", "clicks": "long"}
SCHEMA = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())


def random_items(rng: np.random.Generator, n: int) -> list[tuple]:
    """Items with every awkward case: new items (id 2), padding anywhere, default/unknown values,
    repeated values in a list, items with no valid value in a field, zero-click items."""
    rows = []
    for i in range(n):
        item = 2 if rng.random() < 0.2 else i + 3
        genre = rng.integers(0, 9, size=4).tolist()
        tags = rng.integers(0, 7, size=3).tolist()
        rows.append((i, 1000 + i, item, genre, int(rng.integers(2, 9)), tags, int(rng.integers(1, 6)), int(rng.integers(0, 4))))
    return rows


def valid_values(value) -> set[int]:
    values = value if isinstance(value, list) else [value]
    return {v for v in values if v >= 3}


def reference(rows: list[tuple], names: list[str], weighted: bool) -> dict[tuple[str, str], tuple[float, float]]:
    """(mi, nmi) per ordered field pair, from p(u, v) built item by item (each item's mass spread evenly over
    its value pairs), then MI = sum p(u,v) log(p(u,v) / (p(u) p(v))), H = -sum p log p."""
    records = [dict(zip(COLUMNS, row)) for row in rows]
    result = {}
    for a in names:
        for b in names:
            joint: dict[tuple[int, int], float] = defaultdict(float)
            total = 0.0
            for record in records:
                weight = float(record["clicks"]) if weighted else 1.0
                values_a, values_b = valid_values(record[a]), valid_values(record[b])
                if weight <= 0 or not values_a or not values_b:
                    continue
                total += weight
                if a == b:  # the diagonal is the entropy of the field's own distribution
                    for u in values_a:
                        joint[(u, u)] += weight / len(values_a)
                    continue
                for u in values_a:
                    for v in values_b:
                        joint[(u, v)] += weight / (len(values_a) * len(values_b))
            if total == 0:
                result[(a, b)] = (0.0, 0.0)
                continue
            cells = list(joint)
            p = np.array([joint[c] for c in cells], dtype=np.float64) / total
            p_u, p_v = defaultdict(float), defaultdict(float)
            for (u, v), mass in zip(cells, p):
                p_u[u] += mass
                p_v[v] += mass
            h_u = -sum(q * math.log(q) for q in p_u.values())
            h_v = -sum(q * math.log(q) for q in p_v.values())
            if a == b:
                mi = h_u
            else:
                mi = float(sum(q * math.log(q / (p_u[u] * p_v[v])) for (u, v), q in zip(cells, p)))
            result[(a, b)] = (mi, mi / math.sqrt(h_u * h_v) if h_u * h_v > 0 else 0.0)
    return result


@pytest.fixture(scope="module")
def random_lake(spark, tmp_path_factory):
    rows = random_items(np.random.default_rng(7), 400)
    lake = tmp_path_factory.mktemp("mi_lake")
    write_table(spark.createDataFrame(rows, SCHEMA), lake, "items", run_id="test", config={})
    return lake, rows


def check_against_reference(got: dict, expected: dict, names: list[str]) -> None:
    assert sorted(got) == sorted(expected)  # every ordered pair exactly once, diagonal included
    for pair, (mi, nmi) in expected.items():
        assert got[pair][0] == pytest.approx(mi, abs=1e-9), pair
        assert got[pair][1] == pytest.approx(nmi, abs=1e-9), pair
    for (a, b), (mi, nmi) in got.items():
        assert mi >= 0 and 0 <= nmi <= 1
        assert (mi, nmi) == got[(b, a)]
    assert all(got[(name, name)][0] > 0 for name in names)


def as_pairs(result: FeatureMI) -> dict[tuple[str, str], tuple[float, float]]:
    return {(a, b): (mi, nmi) for a, b, mi, nmi in result.rows()}


@pytest.mark.parametrize("weighted, unique", [(False, ("item",)), (False, ()), (True, ("item",))])
def test_feature_mi_equals_brute_force_reference(spark, random_lake, weighted, unique):
    lake, rows = random_lake
    names = [f.name for f in FIELDS]
    items = read_table(spark, lake, "items")
    got = {(r.field_a, r.field_b): (r.mi, r.nmi) for r in feature_mi(items, FIELDS, "clicks" if weighted else None, unique).collect()}
    check_against_reference(got, reference(rows, names, weighted), names)


@pytest.mark.parametrize("unique", [("item",), ()])
def test_mi_from_the_snapshot_files_equals_the_reference_and_reads_only_the_pinned_version(spark, tmp_path, unique):
    """The tasks read the snapshot's Parquet files themselves: the same MI as the reference, with more
    tasks than files (row groups spread over parts, some parts empty), and the files an overwrite left in
    the directory are not read."""
    names = [f.name for f in FIELDS]
    first, second = random_items(np.random.default_rng(21), 300), random_items(np.random.default_rng(22), 500)
    write_table(spark.createDataFrame(first, SCHEMA).repartition(3), tmp_path, "items", run_id="first", config={})
    write_table(spark.createDataFrame(second, SCHEMA).repartition(2), tmp_path, "items", run_id="second", config={})
    latest = pinned_snapshot(spark, tmp_path, "items")
    assert len(list((tmp_path / "items").glob("*.parquet"))) > len(latest.files)  # the old files are still there

    check_against_reference(as_pairs(snapshot_feature_mi(spark, latest, FIELDS, unique, tasks=5)), reference(second, names, False), names)
    check_against_reference(as_pairs(snapshot_feature_mi(spark, pinned_snapshot(spark, tmp_path, "items", version=0), FIELDS, unique)),
                            reference(first, names, False), names)


@pytest.mark.parametrize("files, readable", [
    (("file:/lake/items/part-0.parquet", "file:///lake/items/part-1.parquet"), True),
    (("s3a://bucket/lake/items/part-0.parquet",), False),
    (("file:/lake/items/part-0.parquet", "hdfs://nn/lake/items/part-1.parquet"), False),
    (("abfss://c@account.dfs.core.windows.net/lake/items/part-0.parquet",), False),
    ((), False),
])
def test_the_tasks_read_the_files_only_on_a_local_lake(files, readable):
    assert readable_by_tasks(Snapshot(path="lake/items", version=0, files=files)) is readable


def test_mi_of_a_single_valued_field_with_itself_is_its_entropy(spark):
    rng = np.random.default_rng(3)
    brand = rng.integers(2, 12, size=300)
    rows = [(i, int(b), int(b)) for i, b in enumerate(brand)]
    items = spark.createDataFrame(rows, "item_idx int, brand int, brand_copy int")
    fields = [FieldSpec("brand", "item", False, 1, 12), FieldSpec("brand_copy", "item", False, 1, 12)]
    got = {(r.field_a, r.field_b): (r.mi, r.nmi) for r in feature_mi(items, fields).collect()}

    counts = np.bincount(brand[brand >= 3]).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    assert got[("brand", "brand")][0] == pytest.approx(entropy, abs=1e-12)
    assert got[("brand", "brand_copy")][0] == pytest.approx(entropy, abs=1e-12)
    assert got[("brand", "brand_copy")][1] == pytest.approx(1.0, abs=1e-12)


def test_independent_fields_have_near_zero_mi_and_a_dependent_one_does_not(spark):
    rng = np.random.default_rng(11)
    n = 20_000
    colour = rng.integers(3, 8, size=n)
    size = rng.integers(3, 8, size=n)  # independent of colour
    shade = np.where(rng.random(n) < 0.8, colour, rng.integers(3, 8, size=n))  # mostly colour
    rows = list(zip(range(n), colour.tolist(), size.tolist(), shade.tolist()))
    items = spark.createDataFrame(rows, "item_idx int, colour int, size int, shade int")
    fields = [FieldSpec(name, "item", False, 1, 8) for name in ("colour", "size", "shade")]
    got = {(r.field_a, r.field_b): r.mi for r in feature_mi(items, fields).collect()}

    # The plug-in estimate of an MI that is 0 has a bias of about (5 - 1)^2 / (2 n) = 4e-4 nats.
    assert got[("colour", "size")] < 2e-3
    assert got[("colour", "shade")] > 0.5


def test_load_mi_matrix_orders_fields_as_asked(spark, random_lake, tmp_path):
    lake, rows = random_lake
    items = read_table(spark, lake, "items")
    write_table(feature_mi(items, FIELDS), tmp_path, "feature_mi", run_id="test", config={})
    order = ["color", "item", "tags", "brand", "genre"]
    expected = reference(rows, order, weighted=False)

    nmi = load_mi_matrix(spark, tmp_path, order)
    mi = load_mi_matrix(spark, tmp_path, order, normalized=False)
    assert nmi.shape == mi.shape == (5, 5)
    np.testing.assert_allclose(mi, [[expected[(a, b)][0] for b in order] for a in order], atol=1e-9)
    np.testing.assert_allclose(nmi, [[expected[(a, b)][1] for b in order] for a in order], atol=1e-9)
    with pytest.raises(UsageError, match="no complete rows for field.*size"):
        load_mi_matrix(spark, tmp_path, order + ["size"])


def test_item_fields_follow_position_and_reject_a_wrong_column_or_field_row(spark):
    fields_table = spark.createDataFrame(
        [("tags", "item", True, 3, 9, 2), ("item", "item", False, 1, 50, 0), ("age", "user", False, 1, 9, 3), ("brand", "item", False, 1, 9, 1)],
        FIELDS_SCHEMA,
    )
    items = spark.createDataFrame([(0, 3, 4, [3, 0, 0])], "item_idx int, item int, brand int, tags array<int>")
    assert item_fields(fields_table, items) == [FieldSpec("item", "item", False, 1, 50), FieldSpec("brand", "item", False, 1, 9), FieldSpec("tags", "item", True, 3, 9)]

    wrong = spark.createDataFrame([(0, 3, [4], [3, 0, 0])], "item_idx int, item int, brand array<int>, tags array<int>")
    with pytest.raises(UsageError, match="field 'brand' has type array<int>, expected int"):
        item_fields(fields_table, wrong)
    with pytest.raises(UsageError, match="no column for item field 'tags'"):
        item_fields(fields_table, items.drop("tags"))
    no_length = spark.createDataFrame([("item", "item", False, 1, 50, 0), ("tags", "item", True, 0, 9, 1)], FIELDS_SCHEMA)
    with pytest.raises(UsageError, match="table fields: field 'tags': length must be 1 for a single-valued field and >= 1 otherwise, got 0"):
        item_fields(no_length, items)
