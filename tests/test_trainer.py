"""The trainer end to end on the synthetic lake: every SSL variant trains, evaluation, export, resume after
SIGKILL, and 2-process DDP (real Spark, Delta, Petastorm and torch)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from towerssl.model.config import AUGMENTATIONS
from towerssl.trainer import checkpoint
from towerssl.trainer.config import TrainConfig
from towerssl.trainer.evaluate_run import evaluate_run
from towerssl.trainer.export import export_run
from towerssl.trainer.train import train

VARIANTS = AUGMENTATIONS
SMALL_MODEL = {"embedding_dim": 16, "hidden_dims": [32], "output_dim": 16, "ssl_batch_size": 64, "temperature": 0.1}


def small_config(augmentation: str = "cfm", **overrides) -> TrainConfig:
    model = {**SMALL_MODEL, "augmentation": augmentation, "alpha": 0.0 if augmentation == "none" else 0.5}
    settings = {"batch_size": 64, "max_steps": 240, "warmup_steps": 10, "eval_every": 80, "checkpoint_every": 80, "workers": 1, "shuffle_buffer": 2048, "lr": 3e-3, "tensorboard": False, "patience": 0}
    return TrainConfig(**{**settings, **overrides, "model": {**model, **overrides.pop("model", {})}})


@pytest.fixture(scope="module")
def runs(synthetic_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {v: (root / v, train(str(synthetic_lake), root / v, small_config(v, tensorboard=v == "cfm"))) for v in VARIANTS}


def logged(run_dir: Path, key: str) -> np.ndarray:
    history = json.loads((run_dir / "train_summary.json").read_text())["history"]
    return np.array([h[key] for h in history if key in h])


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_learns(runs, variant):
    run_dir, summary = runs[variant]
    assert summary["steps"] == 240
    main_loss, accuracy = logged(run_dir, "loss/main"), logged(run_dir, "accuracy/in_batch")
    assert main_loss[-5:].mean() < 0.9 * main_loss[:3].mean()
    assert accuracy[-5:].mean() > 5 / 64  # chance is 1/64
    ssl = logged(run_dir, "loss/ssl")
    assert (ssl == 0).all() if variant == "none" else ssl[-5:].mean() < ssl[:3].mean()
    assert (run_dir / checkpoint.BEST).is_file() and summary["best_valid_recall"] > 0
    versions = json.loads((run_dir / "manifest.json").read_text())["tables"]
    assert set(summary["table_versions"]) == set(versions) and all(v["files"] for v in versions.values())


def test_tensorboard_scalars_are_written(runs):
    assert list((runs["cfm"][0] / "tensorboard").glob("events.out.tfevents.*"))


def test_evaluate_writes_metrics_by_slice_with_baseline(runs):
    run_dir = runs["cfm"][0]
    metrics = evaluate_run(run_dir)
    saved = json.loads((run_dir / "metrics.json").read_text())
    for k in (10, 50, 100):
        for name in (f"recall@{k}", f"ndcg@{k}"):
            assert set(saved[name]) >= {"overall", "head", "torso", "tail", "new"}
            assert set(saved["baseline"][name]) >= {"overall", "head", "torso", "tail", "new"}
    assert saved["counts"]["overall"]["users"] > 0 and set(saved) == {f"{m}@{k}" for m in ("recall", "ndcg") for k in (10, 50, 100)} | {"baseline", "counts"}
    info = json.loads((run_dir / "evaluation_info.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())["tables"]
    assert info["split"] == "test" and info["table_versions"] == {name: t["version"] for name, t in manifest.items()}  # the run's pinned tables
    assert 0 <= metrics["recall@50"]["overall"] <= 1 and metrics["recall@10"]["overall"] <= metrics["recall@100"]["overall"]
    assert (run_dir / "recall_by_decile.png").stat().st_size > 0


def test_export_index_matches_exact_search_and_user_tower_reproduces(runs):
    import faiss

    from towerssl.trainer.faiss_index import read_item_embeddings
    from towerssl.trainer.inputs import feature_tensors
    from towerssl.trainer.run_model import TrainedRun

    run_dir = runs["cfm"][0]
    card = export_run(run_dir)
    out = run_dir / "export"
    item_idx, _, vectors = read_item_embeddings(out, "item_embeddings")
    assert card["embedding"]["items"] == len(item_idx) == vectors.shape[0]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    index = faiss.read_index(str(out / "items.faiss"))
    queries = vectors[:50]
    _, found = index.search(queries, 10)
    exact = np.argsort(-(queries.astype(np.float64) @ vectors.T.astype(np.float64)), axis=1, kind="stable")[:, :10]
    assert (found == exact).mean() > 0.99  # equal up to float ties
    run = TrainedRun.load(run_dir)
    users = feature_tensors(run.manifest, "users", run.towers.spec.user_fields, "user_idx")
    sample = {k: v[20:60] for k, v in users.items()}
    scripted = torch.jit.load(str(out / "user_tower.pt"))
    torch.testing.assert_close(scripted(sample), run.towers.user_tower(sample), rtol=1e-5, atol=1e-6)
    assert card["table_versions"]["items"] >= 0 and card["metrics"]["recall@50"]


def cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "towerssl.cli", *args], env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def write_yaml(path: Path, config: TrainConfig) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"train": config.to_dict()}))
    return path


def kill_after_checkpoint(process: subprocess.Popen, last: Path, step: int, kill) -> None:
    """Wait (up to 10 minutes) until `last` holds a checkpoint at `step` or later, then kill the run mid-way."""
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if last.is_file() and checkpoint.load(last)["progress"]["step"] >= step:
            break
        time.sleep(0.2)
    assert process.poll() is None, process.stdout.read()[-3000:]
    kill()
    process.wait()


def test_resume_after_sigkill_ends_with_the_same_parameters(synthetic_lake, tmp_path):
    config = small_config("cfm", max_steps=120, checkpoint_every=20, eval_every=40, deterministic=True)
    yaml_path = write_yaml(tmp_path / "config.yaml", config)
    whole = train(str(synthetic_lake), tmp_path / "whole", config)
    assert whole["steps"] == 120

    killed = cli("train", "--lake", str(synthetic_lake), "--run", str(tmp_path / "killed"), "--config", str(yaml_path))
    last = tmp_path / "killed" / checkpoint.LAST
    kill_after_checkpoint(killed, last, 40, lambda: killed.send_signal(signal.SIGKILL))
    step_at_kill = checkpoint.load(last)["progress"]["step"]
    assert 40 <= step_at_kill < 120
    resumed = cli("train", "--run", str(tmp_path / "killed"), "--resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    final = checkpoint.load(last)
    assert final["progress"]["step"] == 120
    expected = checkpoint.load(tmp_path / "whole" / checkpoint.LAST)["model"]
    for name, value in expected.items():
        torch.testing.assert_close(final["model"][name], value, rtol=0, atol=0, msg=name)


def torchrun(run_dir: Path, *args: str) -> subprocess.Popen:
    """`towerssl train` in two CPU processes (gloo), in its own process group so that a kill takes both ranks."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "towerssl.cli",
               "--", "train", "--run", str(run_dir), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_two_process_ddp_resumes_each_ranks_own_random_draws(synthetic_lake, tmp_path):
    config = small_config("cfm", max_steps=60, eval_every=0, checkpoint_every=10, deterministic=True, device="cpu")
    yaml_path = write_yaml(tmp_path / "config.yaml", config)
    whole = torchrun(tmp_path / "whole", "--lake", str(synthetic_lake), "--config", str(yaml_path))
    output, _ = whole.communicate(timeout=600)
    assert whole.returncode == 0, output[-3000:]
    assert json.loads((tmp_path / "whole" / "train_summary.json").read_text())["steps"] == 60

    killed = torchrun(tmp_path / "killed", "--lake", str(synthetic_lake), "--config", str(yaml_path))
    last = tmp_path / "killed" / checkpoint.LAST
    kill_after_checkpoint(killed, last, 20, lambda: os.killpg(killed.pid, signal.SIGKILL))
    assert 20 <= checkpoint.load(last)["progress"]["step"] < 60
    resumed = torchrun(tmp_path / "killed", "--resume")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]

    final = checkpoint.load(last)
    assert final["progress"]["step"] == 60
    rank_states = final["random"]
    assert len(rank_states) == 2 and not torch.equal(rank_states[0]["generator"], rank_states[1]["generator"])  # own SSL draws
    expected = checkpoint.load(tmp_path / "whole" / checkpoint.LAST)["model"]
    for name, value in expected.items():  # each rank resumed its own random state: the same run as uninterrupted
        torch.testing.assert_close(final["model"][name], value, rtol=0, atol=0, msg=name)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(synthetic_lake, tmp_path):
    from towerssl.trainer.train import NonFiniteLoss

    config = small_config("none", max_steps=50, checkpoint_every=1, eval_every=0, lr=1e30, grad_clip=0.0, warmup_steps=1)
    with pytest.raises(NonFiniteLoss, match=r"at step \d+; the last good checkpoint") as caught:
        train(str(synthetic_lake), tmp_path / "diverged", config)
    failed_step = int(str(caught.value).split("at step ")[1].split(";")[0])
    kept = checkpoint.load(tmp_path / "diverged" / checkpoint.LAST)
    assert kept["progress"]["step"] == failed_step - 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_cli_errors_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "towerssl.cli", "train", "--lake", str(tmp_path / "nolake"), "--run", str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"towerssl train: error: lake {tmp_path / 'nolake'} holds no complete ETL run")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_sise: 3\n")
    result = subprocess.run([sys.executable, "-m", "towerssl.cli", "train", "--lake", "x", "--run", str(tmp_path / "r"), "--config", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown key(s) batch_sise" in result.stderr


@pytest.mark.parametrize(("table", "step"), [("items", "etl"), ("item_stats", "stats")])
def test_a_truncated_data_file_is_one_line_naming_the_file_the_table_and_the_step(synthetic_lake, tmp_path, table, step):
    import shutil

    from deltalake import DeltaTable

    lake = tmp_path / "lake"
    shutil.copytree(synthetic_lake, lake)
    victim = sorted(DeltaTable(str(lake / table)).file_uris())[0]
    Path(victim).write_bytes(Path(victim).read_bytes()[:-200])  # cut off the footer, as an interrupted copy would
    result = subprocess.run([sys.executable, "-m", "towerssl.cli", "train", "--lake", str(lake), "--run", str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"towerssl train: error: table {table} (version ")
    assert Path(victim).as_uri() in message and f"re-run `towerssl {step}`" in message


def test_a_lake_without_validation_trains_every_step_and_scores_the_test_window(spark, tmp_path):
    """The refit lake (etl validation: false): valid_clicks is empty, so training neither validates nor stops
    early, keeps its last model, and test_clicks are the same as with validation."""
    from towerssl.etl.generate import generate
    from towerssl.etl.job import EtlConfig, run_etl
    from towerssl.stats.job import StatsConfig, run_stats

    generate(tmp_path / "raw", users=120, items=80, clicks=3000, seed=3)
    lake = tmp_path / "lake"
    written = run_etl(spark, EtlConfig(input=str(tmp_path / "raw"), lake=str(lake), split="per-user", multi_length=4, validation=False))["rows_written"]
    assert written["valid_clicks"] == 0 and written["test_clicks"] > 0  # test_clicks as with validation: tests/test_etl_split.py
    run_stats(spark, lake, StatsConfig())
    summary = train(str(lake), tmp_path / "run", small_config("none", max_steps=40, eval_every=10, patience=1))
    assert summary["steps"] == 40 and summary["best_step"] == 0  # never validated, never stopped early
    last, best = (checkpoint.load(tmp_path / "run" / name)["model"] for name in (checkpoint.LAST, checkpoint.BEST))
    assert all(torch.equal(last[key], best[key]) for key in last)  # the kept model is the last one
    metrics = evaluate_run(tmp_path / "run")
    assert metrics["recall@50"]["overall"] is not None and metrics["recall@50"]["overall"] > 0
