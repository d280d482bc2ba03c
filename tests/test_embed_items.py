"""`towerssl embed-items`: new items embedded from their raw rows by an exported run, with the training
vocabulary, in processes where pyspark cannot be imported (real ETL lake, real training, real TorchScript,
Delta and FAISS)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from deltalake import DeltaTable

from towerssl.indices import FIRST_VALUE, UNTRAINED_ID
from towerssl.trainer.faiss_index import load_index, read_item_embeddings
from towerssl.trainer.inputs import feature_tensors
from towerssl.trainer.run_model import TrainedRun
from towerssl.trainer.train import train

from test_no_jvm import jvm_free_env
from test_trainer import small_config


def towerssl(env: dict[str, str], *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "towerssl.cli", *map(str, args)], env=env, capture_output=True, text=True, timeout=540)


@pytest.fixture(scope="module")
def exported(synthetic_lake, tmp_path_factory):
    """A small trained run of the synthetic lake, exported in a process without pyspark; (run dir, env)."""
    root = tmp_path_factory.mktemp("embed_items")
    run_dir = root / "run"
    train(str(synthetic_lake), run_dir, small_config("cfm", max_steps=60, eval_every=0, checkpoint_every=60))
    env = jvm_free_env(root)
    probe = subprocess.run([sys.executable, "-c", "import pyspark"], env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode != 0 and "pyspark is blocked" in probe.stderr
    result = towerssl(env, "export", "--run", run_dir)
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir, env


def raw_items(lake: Path) -> list[dict[str, str]]:
    """The synthetic dataset's raw item rows, as text (the ETL read the same files)."""
    return [row for part in sorted((lake.parent / "raw" / "items").iterdir()) for row in csv.DictReader(part.read_text().splitlines())]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


def embedded(run_dir: Path, name: str) -> dict[int, np.ndarray]:
    _, ids, vectors = read_item_embeddings(run_dir / "export", f"{name}_embeddings")
    return dict(zip(ids.tolist(), vectors))


def test_training_items_embedded_from_their_raw_rows_equal_their_exported_vectors(exported, synthetic_lake):
    run_dir, env = exported
    result = towerssl(env, "embed-items", "--run", run_dir, "--input", synthetic_lake.parent / "raw" / "items", "--name", "corpus")
    assert result.returncode == 0, result.stderr[-4000:]
    got, expected = embedded(run_dir, "corpus"), embedded(run_dir, "item")
    assert set(expected) <= set(got) and len(expected) > 200
    ids = sorted(expected)
    np.testing.assert_allclose(np.stack([got[i] for i in ids]), np.stack([expected[i] for i in ids]), rtol=0, atol=1e-5)
    index = load_index(run_dir / "export" / "corpus.faiss")
    assert index.ntotal == len(got)
    item_idx, item_ids, vectors = read_item_embeddings(run_dir / "export", "corpus_embeddings")
    _, found = index.search(vectors[:5], 1)
    assert found[:, 0].tolist() == item_idx[:5].tolist()  # row of the index = item_idx, in item_id order
    assert item_ids.tolist() == sorted(item_ids.tolist())


def test_new_items_get_unit_vectors_and_equal_a_clicked_item_with_its_id_masked(exported, synthetic_lake, tmp_path):
    run_dir, env = exported
    rows = raw_items(synthetic_lake)
    header = list(rows[0])
    lake_items = DeltaTable(str(synthetic_lake / "items")).to_pyarrow_table(columns=["item_id", "item"]).to_pydict()
    clicked = next(i for i, index in zip(lake_items["item_id"], lake_items["item"]) if index >= FIRST_VALUE)
    twin = {**next(r for r in rows if int(r["item_id"]) == clicked), "item_id": "990001"}  # the clicked item's features, a new id
    unseen = {name: "never-seen-value" for name in header} | {"item_id": "990002"}
    path = write_csv(tmp_path / "new.csv", header, [[r[c] for c in header] for r in (twin, unseen)])
    result = towerssl(env, "embed-items", "--run", run_dir, "--input", path)
    assert result.returncode == 0, result.stderr[-4000:]
    got = embedded(run_dir, "new_items")
    assert sorted(got) == [990001, 990002]
    assert np.isfinite(got[990002]).all() and abs(np.linalg.norm(got[990002]) - 1) < 1e-5

    run = TrainedRun.load(run_dir)
    features = feature_tensors(run.manifest, "items", run.towers.spec.item_fields, "item_idx")
    row = DeltaTable(str(synthetic_lake / "items")).to_pyarrow_table(columns=["item_id", "item_idx"]).to_pydict()
    position = row["item_idx"][row["item_id"].index(clicked)]
    masked = {name: values[position : position + 1].clone() for name, values in features.items()}
    masked["item"][:] = UNTRAINED_ID
    with torch.no_grad():
        expected = run.towers.item_tower(masked)[0].numpy()
    np.testing.assert_allclose(got[990001], expected, rtol=0, atol=1e-5)
    assert not np.allclose(got[990001], embedded(run_dir, "item")[clicked], atol=1e-3)  # the trained id does matter


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory, synthetic_lake):
    rows = raw_items(synthetic_lake)
    header = list(rows[0])
    good = rows[0]

    def line(**changes: str) -> str:
        return ",".join({**good, **changes}[c] for c in header)

    lines = [
        ",".join(header),
        line(item_id="990010"),
        line(item_id="990011"),
        line(item_id="990011", brand="zzz-brand"),  # duplicate id: the copy whose text sorts first is kept (not this one)
        line(item_id="abc"),  # non-integer id
        line(item_id=""),  # missing id
        line(item_id="990012", category="|".join(f"c{k}" for k in range(300))),  # over the hard limit of 256
        line(item_id="990013") + ",extra",  # wrong number of columns
        line(item_id="9223372036854775807"),  # 19 digits that fit a long: an id like any other
        line(item_id="990014", brand="br\ufffdand"),  # U+FFFD written in valid UTF-8: an ordinary character
    ]
    path = tmp_path_factory.mktemp("bad") / "items.csv"
    not_utf8 = line(item_id="990015", brand="BRAND").encode().replace(b"BRAND", b"br\xffand")
    path.write_bytes(("\n".join(lines) + "\n").encode() + not_utf8 + b"\n")
    return path


def test_bad_rows_are_rejected_with_their_reason_and_counted(exported, bad_input):
    run_dir, env = exported
    result = towerssl(env, "embed-items", "--run", run_dir, "--input", bad_input, "--name", "bad")
    assert result.returncode == 0, result.stderr[-4000:]
    assert sorted(embedded(run_dir, "bad")) == [990010, 990011, 990014, 9223372036854775807]
    rejects = DeltaTable(str(run_dir / "export" / "bad_rejects")).to_pyarrow_table().to_pydict()
    assert Counter(zip(rejects["field"], rejects["reason"])) == {
        ("item_id", "duplicate item_id"): 1,
        ("item_id", "item_id is not a non-negative integer"): 1,
        ("item_id", "missing item_id"): 1,
        ("category", "category has 300 values, over the hard limit of 256"): 1,
        (None, "malformed record (wrong number of columns)"): 1,
        (None, "invalid UTF-8"): 1,
    }
    assert "zzz-brand" in rejects["raw"][rejects["reason"].index("duplicate item_id")]
    summary = [l for l in result.stderr.splitlines() if "embed-items:" in l]
    assert len(summary) == 1 and "10 rows in, 4 embedded (0 with a trained id, 4 without), 6 rejected" in summary[0], result.stderr[-2000:]


def test_a_rerun_gives_the_same_tables_and_index(exported, bad_input):
    run_dir, env = exported
    outputs = []
    for _ in range(2):
        result = towerssl(env, "embed-items", "--run", run_dir, "--input", bad_input, "--name", "again")
        assert result.returncode == 0, result.stderr[-4000:]
        tables = [DeltaTable(str(run_dir / "export" / f"again_{t}")).to_pyarrow_table() for t in ("embeddings", "rejects")]
        outputs.append((tables, faiss.serialize_index(load_index(run_dir / "export" / "again.faiss")).tobytes()))
    (first_tables, first_index), (second_tables, second_index) = outputs
    assert first_tables[0].num_rows == 4 and first_tables[1].num_rows == 6
    assert all(a.equals(b) for a, b in zip(first_tables, second_tables)) and first_index == second_index


def test_unusable_input_stops_with_one_line(exported, tmp_path):
    run_dir, env = exported
    path = write_csv(tmp_path / "items.csv", ["item_id", "brand"], [["1", "b"]])
    result = towerssl(env, "embed-items", "--run", run_dir, "--input", path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"towerssl embed-items: error: {path}: missing required column(s) category")


def test_amazon_items_embedded_from_their_json_equal_their_exported_vectors(spark, tmp_path):
    """--format amazon-s3rec: a run trained on a small S3-Rec-shaped pair embeds the json's items, parsed by
    the ETL's brand/category rule, to their exported vectors."""
    from towerssl.etl.job import EtlConfig, run_etl
    from towerssl.stats.job import StatsConfig, run_stats

    rng = np.random.default_rng(3)
    items = range(100, 140)  # brands 500..504 (only ever first), categories 1..3 and 10..13; item 139 has no category
    attributes = {str(i): [500 + i % 5] + ([1 + i % 3, 10 + i % 4] if i != 139 else []) for i in items}
    log = [" ".join(map(str, [user, *rng.choice(list(items), size=8, replace=False)])) for user in range(1, 81)]
    (tmp_path / "Tiny.txt").write_text("\n".join(log) + "\n")
    (tmp_path / "Tiny_item2attributes.json").write_text(json.dumps(attributes))
    lake = tmp_path / "lake"
    run_etl(spark, EtlConfig(input=str(tmp_path / "Tiny.txt"), lake=str(lake), format="amazon-s3rec", split="leave-last-out"))
    run_stats(spark, lake, StatsConfig())
    run_dir = tmp_path / "run"
    train(str(lake), run_dir, small_config("cfm", max_steps=20, batch_size=32, eval_every=0, checkpoint_every=20))
    env = jvm_free_env(tmp_path)
    for args in (("export", "--run", run_dir), ("embed-items", "--run", run_dir, "--format", "amazon-s3rec", "--input", tmp_path / "Tiny_item2attributes.json")):
        result = towerssl(env, *args)
        assert result.returncode == 0, result.stderr[-4000:]
    got, expected = embedded(run_dir, "new_items"), embedded(run_dir, "item")
    assert sorted(got) == sorted(expected) == list(items)
    np.testing.assert_allclose(np.stack([got[i] for i in items]), np.stack([expected[i] for i in items]), rtol=0, atol=1e-5)
