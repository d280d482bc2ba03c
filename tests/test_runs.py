"""The run record as the lake's commit point: a job killed between two table commits leaves a lake that every
later stage reads as the last complete run, or refuses; a clean re-run repairs it; re-runs stay idempotent.

The crashes are real: TOWERSSL_FAIL_AFTER_COMMITS=N (the documented fault-injection knob) makes a job stop
right after its N-th table commit, leaving the tables it committed in the lake."""

from __future__ import annotations

import json
import shutil

import pytest
from deltalake import DeltaTable

from rawdata import clean_dataset, write_raw
from towerssl.etl.job import EtlConfig, run_etl
from towerssl.lake import rs_table_path, table_path, write_table
from towerssl.runs import FAIL_AFTER_COMMITS, InjectedFault, LakeStateError, RunRecorder, committed_versions, latest_record
from towerssl.stats.job import StatsConfig, run_stats
from towerssl.trainer.inputs import Manifest

ETL_TABLES = ("train_clicks", "valid_clicks", "test_clicks", "vocab", "items", "users", "fields", "rejects")
SPLITS = ("train_clicks", "valid_clicks", "test_clicks")


def latest_run_ids(lake) -> dict[str, str]:
    """The run id of each ETL table's latest commit, whatever the run record says."""
    return {t: json.loads(DeltaTable(table_path(lake, t)).history(1)[0]["userMetadata"])["run_id"] for t in ETL_TABLES}


def committed_rows(lake) -> dict[str, list[tuple]]:
    """Every ETL table's rows at the version the run record pins (read without Spark)."""
    versions = committed_versions(lake, stats=False).versions
    return {t: sorted(tuple(r.values()) for r in DeltaTable(table_path(lake, t), version=versions[t]).to_pyarrow_table().to_pylist())
            for t in ETL_TABLES if t != "rejects"}


def split_counts(manifest: Manifest) -> dict[str, int]:
    return {t: manifest.read(t, ["user_idx"]).num_rows for t in SPLITS}


@pytest.fixture(scope="module")
def lake_state(spark, tmp_path_factory):
    """A lake with one complete ETL + stats run ("first", test_fraction 0.1), and the config of the killed
    re-runs, which splits differently (test_fraction 0.3): tables of the two runs cannot agree by chance."""
    root = tmp_path_factory.mktemp("runs")
    raw = write_raw(root / "raw", *clean_dataset(n_users=12, n_items=20))
    first = EtlConfig(input=str(raw), lake=str(root / "lake"), test_fraction=0.1)
    run_etl(spark, first, run_id="first")
    run_stats(spark, first.lake, StatsConfig(), run_id="stats-first")
    expected = split_counts(Manifest.resolve(first.lake))
    assert expected["test_clicks"] == 12  # 10% of 120 clicks; the re-runs' config gives 36
    return spark, first, EtlConfig(**{**first.__dict__, "test_fraction": 0.3}), expected, committed_rows(first.lake)


@pytest.mark.parametrize("commits", [1, 4, 8], ids=["after-first-commit", "after-middle-commit", "after-last-commit"])
def test_a_killed_etl_rerun_leaves_the_last_complete_run_readable(lake_state, monkeypatch, commits):
    spark, first, rerun, expected, _ = lake_state
    monkeypatch.setenv(FAIL_AFTER_COMMITS, str(commits))
    with pytest.raises(InjectedFault, match="stops after committing"):
        run_etl(spark, rerun, run_id=f"killed-{commits}")
    monkeypatch.delenv(FAIL_AFTER_COMMITS)
    assert sum(run == f"killed-{commits}" for run in latest_run_ids(first.lake).values()) >= commits  # the latest versions mix two runs

    committed = committed_versions(first.lake)
    assert (committed.run_id, committed.stats_run_id) == ("first", "stats-first")
    manifest = Manifest.resolve(first.lake)  # the trainer's inputs: the first run's tables, not the newest
    assert manifest.versions() == {t: committed.versions[t] for t in manifest.tables}
    assert split_counts(manifest) == expected


def test_a_killed_stats_run_reads_the_last_complete_etl_run_and_records_nothing(lake_state, monkeypatch):
    spark, first, _, expected, _ = lake_state
    before = committed_versions(first.lake)
    monkeypatch.setenv(FAIL_AFTER_COMMITS, "2")  # item_stats and feature_mi committed, the run record not written
    with pytest.raises(InjectedFault):
        run_stats(spark, first.lake, StatsConfig(), run_id="stats-killed")
    monkeypatch.delenv(FAIL_AFTER_COMMITS)
    written = DeltaTable(table_path(first.lake, "item_stats")).to_pyarrow_table(columns=["clicks"])
    assert sum(written.column("clicks").to_pylist()) == expected["train_clicks"]  # computed from the first run's train_clicks
    assert committed_versions(first.lake) == before
    manifest = Manifest.resolve(first.lake)
    assert manifest.versions() == {t: before.versions[t] for t in manifest.tables}


def test_a_clean_rerun_repairs_the_lake_idempotently_and_stale_statistics_are_refused(lake_state):
    spark, first, _, expected, first_rows = lake_state
    run_etl(spark, first, run_id="second")
    assert set(latest_run_ids(first.lake).values()) == {"second"}
    assert committed_versions(first.lake, stats=False).run_id == "second"
    assert committed_rows(first.lake) == first_rows  # the same input and config give the same tables
    with pytest.raises(LakeStateError, match=r"the statistics come from ETL run first, but the last complete ETL run is second: re-run `towerssl stats"):
        Manifest.resolve(first.lake)
    run_stats(spark, first.lake, StatsConfig(), run_id="stats-second")
    assert latest_record(first.lake, "stats").source_run_id == "second"
    manifest = Manifest.resolve(first.lake)
    assert split_counts(manifest) == expected


def test_the_empty_rejects_table_records_the_latest_run(lake_state):
    _, first, _, _, _ = lake_state
    committed = committed_versions(first.lake)
    delta = DeltaTable(table_path(first.lake, "rejects"))
    assert delta.version() == committed.versions["rejects"] and delta.to_pyarrow_table().num_rows == 0
    assert json.loads(delta.history(1)[0]["userMetadata"])["run_id"] == committed.run_id


def test_a_lake_without_a_complete_etl_run_is_refused(spark, tmp_path):
    lake = tmp_path / "lake"
    for table in ("items", "train_clicks", "fields"):  # tables committed by a run that never wrote its record
        write_table(spark.range(3), lake, table, "killed", {})
    message = rf"lake {lake} holds no complete ETL run \(no `etl` record in its runs table\): re-run `towerssl etl"
    with pytest.raises(LakeStateError, match=message):
        run_stats(spark, lake, StatsConfig())
    with pytest.raises(LakeStateError, match=message):
        Manifest.resolve(lake)
    assert not (lake / "item_stats").exists()


def test_a_table_changed_behind_the_record_is_refused(spark, tmp_path):
    lake = tmp_path / "lake"
    recorder = RunRecorder(lake, "etl", "complete")
    for table in ("items", "fields"):
        write_table(spark.range(3), lake, table, "complete", {})
        recorder.committed(table)
    recorder.finish()
    assert committed_versions(lake, stats=False).versions == {"items": 0, "fields": 0}
    with pytest.raises(LakeStateError, match=rf"lake {lake} has no statistics for its ETL run complete: run `towerssl stats"):
        committed_versions(lake)
    shutil.rmtree(lake / "items")  # replaced by hand: version 0 is now another run's commit
    write_table(spark.range(5), lake, "items", "other", {})
    with pytest.raises(LakeStateError, match=r"table items version 0 was not written by etl run complete \(the lake changed after that run\): re-run `towerssl etl"):
        committed_versions(lake, stats=False)


@pytest.mark.parametrize("lake", ["s3a://bucket/lake", "s3n://bucket/lake/", "s3://bucket/lake"])
def test_hadoop_s3_lakes_name_the_same_objects_to_delta_rs_as_s3(lake):
    """The Spark jobs need s3a://; delta-rs and pyarrow know only s3://: the run record and the trainer map it."""
    assert rs_table_path(lake, "runs") == "s3://bucket/lake/runs"
    assert rs_table_path("/data/lake", "runs") == table_path("/data/lake", "runs")
