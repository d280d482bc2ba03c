"""MovieLens readers: the real files give the published counts and features; bad lines come through, marked."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import shared_dataset

from towerssl.etl.movielens import AGE_BUCKETS, ML100K_GENRES, read_items, read_movielens, read_users
from towerssl.etl.raw import CORRUPT_COL, RAW_COL, SOURCE_COL
from towerssl.etl.validate import check_entities, check_interactions

TAIL = [CORRUPT_COL, RAW_COL, SOURCE_COL]
ML_ITEM = ["item_id", "genres", "year", "title"]
ML_USER = ["user_id", "gender", "age", "occupation", "zip"]


def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    return path.read_bytes().decode(encoding).splitlines()


def _by_id(df, key: str) -> dict[str, dict]:
    return {row[key]: row.asDict() for row in df.collect()}


@pytest.fixture(scope="module")
def ml100k(spark):
    path = shared_dataset("ml-100k")
    raw = read_movielens(spark, path, "movielens-100k")
    return path, raw, _by_id(raw.items, "item_id"), _by_id(raw.users, "user_id")


def test_ml100k_counts_columns_and_fields(ml100k):
    path, raw, items, users = ml100k
    clicks = raw.interactions
    assert clicks.columns == ["user_id", "item_id", "timestamp"] + TAIL
    assert raw.items.columns == ML_ITEM + TAIL and raw.users.columns == ML_USER + TAIL
    assert [f.name for f in raw.fields] == ["genres", "year", "title", "gender", "age", "occupation", "zip"]
    assert all(dict(df.dtypes)[c] == "string" for df in (clicks, raw.items, raw.users) for c in df.columns)
    stats = clicks.selectExpr("count(*)", "count(distinct user_id)", "count(distinct item_id)", f"count({CORRUPT_COL})").first()
    assert tuple(stats) == (100_000, 943, 1_682, 0)
    assert (len(items), len(users)) == (1_682, 943)
    assert all(row[CORRUPT_COL] is None for row in [*items.values(), *users.values()])
    first = clicks.first()
    assert first[RAW_COL] == _lines(path / "u.data")[0] and first[SOURCE_COL].endswith("ml-100k/u.data")
    assert [first["user_id"], first["item_id"], first["timestamp"]] == first[RAW_COL].split("\t")[:2] + first[RAW_COL].split("\t")[3:]


def test_ml100k_genres_follow_the_flags_and_latin1_titles_decode(ml100k):
    path, _, items, _ = ml100k
    assert [line.split("|")[0] for line in _lines(path / "u.genre") if line] == list(ML100K_GENRES)
    for line in _lines(path / "u.item", "latin-1"):
        parts = line.split("|")
        expected = [g for g, flag in zip(ML100K_GENRES, parts[5:]) if flag == "1" and g != "unknown"]
        assert items[parts[0]]["genres"] == ("|".join(expected) or None), parts[0]
        assert items[parts[0]][RAW_COL] == line
    assert items["543"]["title"] == "misérables" and items["543"]["year"] == "1995-1999"
    assert items["1104"]["title"] == "est|arrivé|près|chez|vous"
    assert not any("\ufffd" in row[RAW_COL] for row in items.values())
    assert items["267"]["year"] is None and items["267"]["genres"] is None  # the "unknown" movie


def test_ml100k_user_features(ml100k):
    path, _, _, users = ml100k
    for line in _lines(path / "u.user"):
        user, age, gender, occupation, zip_code = line.split("|")
        bucket = AGE_BUCKETS[max(start for start in AGE_BUCKETS if start <= max(int(age), 1))]
        assert (users[user]["age"], users[user]["gender"], users[user]["occupation"]) == (bucket, gender, occupation)
        assert users[user]["zip"] == zip_code[0].upper()
    assert users["1"]["age"] == "18-24" and users["2"]["age"] == "50-55"


def test_latest_small_counts_genres_years_and_tags(spark):
    path = shared_dataset("ml-latest-small")
    raw = read_movielens(spark, path, "movielens-latest-small")
    assert raw.users is None
    assert [f.name for f in raw.fields] == ["genres", "year", "title", "tags"] and all(f.owner == "item" for f in raw.fields)
    counts = raw.interactions.selectExpr("count(*)", f"count({CORRUPT_COL})").first()
    assert tuple(counts) == (100_836, 0) and counts[0] == len(_lines(path / "ratings.csv")) - 1
    items = _by_id(raw.items, "item_id")
    assert len(items) == 9_742 and all(row[CORRUPT_COL] is None for row in items.values())
    assert sum(row["genres"] is None for row in items.values()) == 34  # "(no genres listed)"
    assert items["1"]["genres"] == "Adventure|Animation|Children|Comedy|Fantasy"
    assert items["7789"]["year"] == "2000-2004" and items["7789"][RAW_COL] == '7789,"11\'09""01 - September 11 (2002)",Drama'
    assert items["29"]["title"].startswith("city|lost|children|cité")  # a quoted title with commas
    assert items["73"]["title"] == "misérables"
    # tags: the most applied first, from tags.csv counted here directly
    tags = Counter((line.split(",")[1], line.split(",")[2].strip().lower()) for line in _lines(path / "tags.csv")[1:] if '"' not in line)
    jumanji = sorted(((-n, tag) for (movie, tag), n in tags.items() if movie == "2"))
    assert items["2"]["tags"] == "|".join(tag for _, tag in jumanji[:8])
    assert max(len(row["tags"].split("|")) for row in items.values() if row["tags"]) == 8


def test_ml1m_reads_movies_and_users_and_names_the_missing_ratings(spark):
    path = shared_dataset("ml-1m")
    items = _by_id(read_items(spark, path, "movielens-1m"), "item_id")
    users = read_users(spark, path, "movielens-1m")
    assert len(items) == 3_883 and users.count() == 6_040
    assert users.columns == ML_USER + TAIL
    ages = {row["age"]: row["count"] for row in users.groupBy("age").count().collect()}
    assert ages == {AGE_BUCKETS[k]: n for k, n in {1: 222, 18: 1103, 25: 2096, 35: 1193, 45: 550, 50: 496, 56: 380}.items()}
    assert users.where("occupation is null or gender is null or zip is null").count() == 0
    assert items["1"]["genres"] == "Animation|Children's|Comedy" and items["1"]["title"] == "toy|story"
    accented = [row for row in items.values() if "é" in row[RAW_COL]]
    assert accented and not any("\ufffd" in row[RAW_COL] for row in items.values())
    if not (path / "ratings.dat").exists():
        with pytest.raises(FileNotFoundError, match=r"ml-1m/ratings\.dat"):
            read_movielens(spark, path, "movielens-1m")


def _write(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_bad_lines_come_through_marked_and_the_etl_rejects_them(spark, tmp_path):
    _write(tmp_path / "u.data", [b"1\t10\t4\t881250949", b"2\t10\t3", b"", b"2\t11\t5\t881250950\textra"])
    _write(
        tmp_path / "u.item",
        [
            b"10|Caf\xe9 au Lait (1993)|01-Jan-1993||url" + b"|0|1" + b"|0" * 17,  # latin-1 byte, Action
            b"11|Broken (1995)|01-Jan-1995||url" + b"|0" * 18 + b"|2",  # a flag that is not 0/1
            b"12|Short line",
        ],
    )
    _write(tmp_path / "u.user", [b"1|24|M|writer|T8H1N", b"2|abc|F|other|0", b"3|F"])
    raw = read_movielens(spark, tmp_path, "movielens-100k")
    clicks, items, users = (_by_id(df, RAW_COL) for df in (raw.interactions, raw.items, raw.users))
    assert len(clicks) == 4 and {k for k, r in clicks.items() if r[CORRUPT_COL] is not None} == {"2\t10\t3", "", "2\t11\t5\t881250950\textra"}
    assert len(items) == 3 and [r["item_id"] for r in items.values() if r[CORRUPT_COL] is None] == ["10"]
    cafe = next(r for r in items.values() if r["item_id"] == "10")
    assert (cafe["title"], cafe["genres"], cafe["year"]) == ("café|au|lait", "Action", "1990-1994")
    assert cafe[RAW_COL].startswith("10|Café au Lait")  # decoded as latin-1
    assert {r["user_id"]: (r["age"], r["zip"], r[CORRUPT_COL] is not None) for r in users.values()} == {
        "1": ("18-24", "T", False), "2": (None, "0", False), "3": (None, None, True)
    }

    checked_items = check_entities(raw.items, "items", "item_id", raw.fields_of("item"), 256)
    checked_clicks = check_interactions(raw.interactions, checked_items.valid.select("item_id"), None, partitions=2, window=(0, 2**31))
    reasons = Counter(r["reason"] for r in checked_items.rejects.unionByName(checked_clicks.rejects).collect())
    assert reasons["malformed record (wrong number of columns or bad quoting)"] == 2 + 3
    assert checked_items.valid.count() == 1 and checked_clicks.valid.count() == 1


def test_latest_small_quoting_and_title_rules(spark, tmp_path):
    _write(
        tmp_path / "movies.csv",
        [
            b"movieId,title,genres",
            b'1,"Lost Children, The (Cit\xc3\xa9 des enfants) (1995)",Fantasy|Sci-Fi',
            b"2,Babylon 5,(no genres listed)",
            "3,Death Note: Desu nôto (2006–2007),Animation".encode(),
            b"4,Land Before Time III: The Time of the Great Giving (1995) (V),Children",
            b'5,"Bad "quote" (1999)",Drama',
            b"6,Too,many,fields",
        ],
    )
    _write(tmp_path / "ratings.csv", [b"userId,movieId,rating,timestamp", b"1,1,4.0,964982703"])
    raw = read_movielens(spark, tmp_path, "movielens-latest-small")
    assert [f.name for f in raw.fields] == ["genres", "year", "title"]  # no tags.csv: no tags field
    items = _by_id(raw.items, "item_id")
    assert len(items) == 6
    assert (items["1"]["title"], items["1"]["year"], items["1"]["genres"]) == ("lost|children|cité|enfants", "1995-1999", "Fantasy|Sci-Fi")
    assert (items["2"]["year"], items["2"]["genres"], items["2"]["title"]) == (None, None, "babylon")
    assert (items["3"]["year"], items["3"]["title"]) == ("2005-2009", "death|note|desu|nôto")
    assert (items["4"]["year"], items["4"]["title"]) == ("1995-1999", "land|before|time|iii|great|giving")
    assert [k for k, r in items.items() if r[CORRUPT_COL] is not None] == ["5", "6"]


def test_unknown_variant_is_refused(spark, tmp_path):
    with pytest.raises(ValueError, match="movielens-100k"):
        read_movielens(spark, tmp_path, "movielens-20m")
