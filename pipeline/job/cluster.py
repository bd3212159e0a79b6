"""The job's Ray side: a cluster to run on (joined, or a local one on loopback), the
model and cache actors with the resources they reserve, and their shutdown."""

from __future__ import annotations

import logging
import math
import os
import socket
import sys

import ray
import ray._private.ray_constants as ray_constants
import ray._private.worker as ray_worker

from cache.sharded import CacheShard, ShardedCache
from coder import FORMAT_VERSION
from compressor_model.records import Counts

from ..backends.model_actor import ModelService
from ..backends.registry import make_backend
from ..config import JobConfig, content_config
from ..errors import JobError
from ..redact import redact
from ..store.parquet import BackendInfo, OutputMeta
from .metrics import JobMetrics


def actor_cpus(cfg: JobConfig, cluster_cpus: float, local: bool) -> float:
    """CPUs each model actor reserves: run.cpus_per_actor, or where that is 0, on a
    single-machine cluster every CPU the shard tasks do not reserve (shard tasks mostly
    wait on the actor, so the model gets the cores), elsewhere one."""
    r = cfg.run
    if r.cpus_per_actor:
        return r.cpus_per_actor
    if local:
        return max(0.0, cluster_cpus - r.shard_workers * r.shard_cpus) / max(1, r.model_actors)
    return 1.0


def actor_threads(cfg: JobConfig, cpus: float) -> int:
    """torch threads of a model actor: every CPU it was given (run.torch_threads overrides)."""
    return cfg.run.torch_threads or max(1, math.ceil(cpus))


class Cluster:
    """The actors of one run; `meta` is what every output shard of the run is stamped with."""

    def __init__(self, cfg: JobConfig, started_ray: bool, run_id: str = ""):
        self.cfg, self.started_ray = cfg, started_ray
        self.models, self.caches = [], []
        self._owned: list = []  # other actors of the run (the progress counter), killed with it
        self.machines: list[str] = []  # what the model actors compute on (device and kind)
        self.calibration_counts = Counts()  # model work for the thresholds (shards count their own)
        # Named, so that an operator (or a fault-injection test) can find them.
        self.run_id = run_id or os.urandom(4).hex()
        local = started_ray or cfg.run.address == "local"
        self.actor_cpus = actor_cpus(cfg, ray.cluster_resources().get("CPU", 0.0), local)
        self._check_resources()
        self.metrics = JobMetrics(self.run_id, cfg.output) if cfg.run.metrics else None
        if not cfg.model.compressor.needs_model:  # CPU-only compressors run in the shard tasks
            info = make_backend(cfg).info
        else:
            Model = ray.remote(ModelService)
            threads = actor_threads(cfg, self.actor_cpus)
            # Actors read the checkpoint themselves (any fsspec URL every node can reach), so
            # a restarted actor needs nothing from the driver.
            self.models = [
                Model.options(name=self.name(f"model-{i}"), num_cpus=self.actor_cpus, num_gpus=cfg.run.gpus_per_actor,
                              resources=cfg.run.model_resources, max_restarts=-1, max_task_retries=0,
                              max_concurrency=1)  # one call at a time: the static device buffers are shared
                .remote(cfg, threads, self.name(f"model-{i}") if cfg.run.metrics else "")
                for i in range(cfg.run.model_actors)
            ]
            if cfg.cache.enabled:
                Cache = ray.remote(CacheShard)
                self.caches = [Cache.options(name=self.name(f"cache-{i}"), num_cpus=0, resources=cfg.run.shard_resources,
                                             max_restarts=-1)
                               .remote(cfg.cache.max_bytes_per_shard) for i in range(cfg.cache.shards)]
            try:
                infos = ray.get([m.info.remote() for m in self.models])
                self.machines = sorted(set(ray.get([m.machine.remote() for m in self.models])))
            except ray.exceptions.RayError as e:
                self.shutdown()
                raise JobError(f"the model actor could not start: {_creation_error(e)}") from None
            info = infos[0]
            if len({i.namespace for i in infos}) > 1:
                self.shutdown()
                kinds = sorted({i.numerics for i in infos})
                raise JobError(f"the model actors compute with different numerics ({kinds}): their outputs must not "
                               "mix; use one kind of node for the model actors, or engine.precision=int8 (the default: "
                               "the same bits on every device)")
        self.info: BackendInfo = info
        self.meta = OutputMeta.of(info, coder_format_version=FORMAT_VERSION, config=_redacted(content_config(cfg)))

    def name(self, what: str) -> str:
        return f"proxycomp-{self.run_id}-{what}"

    def own(self, actor) -> None:
        self._owned.append(actor)

    def _check_resources(self):
        """Fail fast, not hang, when the model actors leave no CPU for a shard task."""

        r = self.cfg.run
        if not self.cfg.model.compressor.needs_model:
            return
        need = r.model_actors * self.actor_cpus + r.shard_cpus
        res = ray.cluster_resources()
        have, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
        missing = sorted({k for k, v in r.model_resources.items() if res.get(k, 0.0) < r.model_actors * v}
                         | {k for k, v in r.shard_resources.items() if res.get(k, 0.0) < v})
        if self.actor_cpus <= 0 or need > have or r.model_actors * r.gpus_per_actor > gpus or missing:
            msg = (f"this Ray cluster has {have:g} CPUs and {gpus:g} GPUs; {r.model_actors} model actor(s) x "
                   f"{self.actor_cpus:g} CPU / {r.gpus_per_actor:g} GPU plus one shard task ({r.shard_cpus:g} CPU) "
                   "do not fit: lower run.model_actors, run.cpus_per_actor or run.shard_cpus")
            if missing:
                msg = (f"no node of this Ray cluster offers enough of the custom resource(s) {missing} that "
                       "run.model_resources / run.shard_resources ask for (declare them per node type, see deploy/)")
            if self.started_ray:  # a cluster of our own will not grow
                self.shutdown()
                raise JobError(msg)
            print(f"[proxycomp] warning: {msg} (waiting in case the cluster scales up)", file=sys.stderr)

    def cache_client(self) -> ShardedCache | None:
        """The driver's handle on the segment cache (loading and keeping entries)."""
        if not self.caches:
            return None
        return ShardedCache(self.caches, self.cfg.cache, invoke=lambda m, a: m.remote(a), wait=ray.get)

    def shutdown(self):
        """Kill the actors and stop a cluster of our own; a second call does nothing (a
        Ray call after ray.shutdown() would start or join a cluster again)."""
        actors = self.models + self.caches + self._owned
        self.models, self.caches, self._owned = [], [], []
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        if self.started_ray:
            self.started_ray = False
            ray.shutdown()


def _creation_error(e: BaseException) -> str:
    """The last line of the actor's traceback: the actual error, not Ray's wrapping."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return redact(lines[-1] if lines else type(e).__name__)


def _redacted(d):
    if isinstance(d, dict):
        return {k: ("***" if k == "storage_options" and v else _redacted(v)) for k, v in d.items()}
    return redact(d) if isinstance(d, str) else d


def _quiet_auth_notice(record: logging.LogRecord) -> bool:
    """Ray turns token authentication on for a new local cluster and logs at every
    start how to turn it off, which for a loopback-only cluster of one job only invites
    doing so. Authentication stays on; that one line is dropped."""
    return "Token authentication is enabled" not in record.getMessage()


def free_loopback_port(wanted: int) -> int:
    """`wanted` if nothing listens on 127.0.0.1:wanted, else a free port the OS picks.
    (Ray fails to start a dashboard on a taken port rather than moving on: a second
    local run on one machine collided with the first.)"""
    for port in (wanted, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")


def init_local_ray(dashboard_port: int | None = None, **kwargs):
    """Start a single-machine Ray cluster whose servers all listen on 127.0.0.1: with a
    dashboard on dashboard_port (another free port if that one is taken, said on
    stderr), or with none (dashboard_port None); the metrics agent runs either way.

    On Linux Ray gives its servers the machine's external address even when asked for
    127.0.0.1, unless it runs in its single-machine mode; that mode is switched on for
    this process (the constant) and for the processes Ray starts (the environment)."""

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_quiet_auth_notice)
    if dashboard_port is None:
        return ray.init(address="local", include_dashboard=False, **kwargs)
    port = free_loopback_port(dashboard_port)
    if port != dashboard_port:
        print(f"[proxycomp] 127.0.0.1:{dashboard_port} is taken (another local run?): this run's dashboard is on "
              f"127.0.0.1:{port}", file=sys.stderr)
    return ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, **kwargs)


def endpoints() -> dict:
    """Where this cluster shows its metrics: the dashboard (if one runs) and this node's
    Prometheus endpoint."""
    node = next((n for n in ray.nodes() if n.get("Alive") and n.get("NodeID") == ray.get_runtime_context().get_node_id()), {})
    out = {}
    url = ray_worker.get_dashboard_url()
    if url:
        out["dashboard"] = url if "://" in url else f"http://{url}"
    if node.get("MetricsExportPort"):
        out["metrics"] = f"http://{node.get('NodeManagerAddress', '127.0.0.1')}:{node['MetricsExportPort']}/metrics"
    return out


def start_cluster(cfg: JobConfig, run_id: str = "") -> Cluster:
    started = False
    if not ray.is_initialized():
        address = cfg.run.address or os.environ.get("RAY_ADDRESS") or "local"
        if address == "local":
            init_local_ray(cfg.run.dashboard_port if cfg.run.metrics else None, logging_level="WARNING", log_to_driver=True)
        else:
            ray.init(address=address, logging_level="WARNING", log_to_driver=True)
        started = True
    if cfg.run.metrics:
        where = endpoints()
        print("[proxycomp] metrics: " + ", ".join(f"{k} {v}" for k, v in where.items()) if where else
              "[proxycomp] metrics: recorded, but this cluster exports none (no metrics agent)", file=sys.stderr)
    return Cluster(cfg, started, run_id)
