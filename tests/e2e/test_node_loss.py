"""A node lost mid-job, the way Ray tests itself: a two-node cluster on this machine
(ray.cluster_utils.Cluster), the node that runs the shard tasks removed while they
run and a replacement added (a preempted spot node and the autoscaler's new one)."""

from __future__ import annotations

import threading
import time

import pytest
import ray
import ray._private.ray_constants as ray_constants
from ray.cluster_utils import Cluster as RayCluster

from pipeline.job.driver import run_job
from tests.pipeline_fixtures import job_config, make_input, sha256, tiny_checkpoint

pytestmark = pytest.mark.slow
# The model actor on the head node, the shard tasks (and cache actors) on the other one.
PLACED = ('run.model_resources={"model_node": 1}', 'run.shard_resources={"shard_node": 0.01}', "run.cpus_per_actor=1",
          "run.batch_bytes=1000", "run.retry_backoff_s=0.2", "cache.shards=2", "run.small_shard_bytes=0")


def hashes(out) -> dict:
    return {p.name: sha256(p) for p in sorted((out / "shards").glob("*.parquet"))}


def test_a_lost_node_is_a_system_failure_and_the_output_is_the_same(tmp_path, monkeypatch):
    # Every node on 127.0.0.1: nodes of a cluster (not the single-machine mode an
    # earlier in-process test may have left in the environment), and this process
    # connecting on loopback (Ray would swap 127.0.0.1 for the machine's address).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    make_input(tmp_path / "in", n_shards=4, max_bytes=16_000)
    nodes = RayCluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"model_node": 1},
                                                             "node_ip_address": "127.0.0.1", "include_dashboard": False,
                                                             # a lost node is noticed in ~2 s, not Ray's ~30 s
                                                             "_system_config": {"health_check_period_ms": 500,
                                                                                "health_check_failure_threshold": 3}})
    shard_node = nodes.add_node(num_cpus=1, resources={"shard_node": 1}, node_ip_address="127.0.0.1")
    ray.init(address=nodes.address, logging_level="ERROR")
    try:
        ref = run_job(job_config(str(tmp_path / "in"), str(tmp_path / "ref"), ckpt, *PLACED), log=lambda m: None)
        assert ref.shards_done == 4
        # No retries of a shard's own: a lost node must not spend them.
        cfg = job_config(str(tmp_path / "in"), str(tmp_path / "out"), ckpt, *PLACED, "run.max_retries=0")
        box: dict = {}
        t = threading.Thread(target=lambda: box.update(summary=run_job(cfg, log=lambda m: None)))
        t.start()
        deadline = time.time() + 120
        while time.time() < deadline and not list((tmp_path / "out" / "_tmp").glob("*")):
            time.sleep(0.05)  # a shard task is writing on the shard node
        assert t.is_alive(), "the job finished before the node could be removed"
        nodes.remove_node(shard_node, allow_graceful=False)
        nodes.add_node(num_cpus=1, resources={"shard_node": 1}, node_ip_address="127.0.0.1")
        t.join(timeout=300)
        assert not t.is_alive()
    finally:
        ray.shutdown()
        nodes.shutdown()
    s = box["summary"]
    assert s.shards_done == 4 and s.shards_failed == 0, s.failed
    assert s.retries.get("system", 0) >= 1 and "task" not in s.retries, s.retries
    assert hashes(tmp_path / "out") == hashes(tmp_path / "ref")
