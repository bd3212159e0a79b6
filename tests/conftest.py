import os
import sys

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
# Each test process (pytest-xdist worker) keeps its Ray clusters' files apart: Ray reads
# state of "the latest session" under its temp dir (/tmp/ray/session_latest, the node's
# address), so a job driver on one process's `ray start` cluster once took the address
# of the other process's newer cluster and waited 600 s for a GCS that was not there.
# Everything the tests start (ray start, job drivers, subprocess runs) inherits it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["RAY_TMPDIR"] = f"/tmp/proxycomp-tests-{os.environ['PYTEST_XDIST_WORKER']}"
    os.makedirs(os.environ["RAY_TMPDIR"], exist_ok=True)

import torch  # noqa: E402

# Tests run many small model calls; with one thread they do not wait on a thread pool
# that competes with other processes (Ray workers, servers) for the same cores.
torch.set_num_threads(1)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the test process once pytest has reported, with pytest's own exit status.
    This process hosts in-process Ray clusters; ray.shutdown() leaves Ray's gRPC threads
    running (gcs_client_io_service, event_engine, grpc timers: measured), and the C++
    static destructors that run at a normal exit race them. CI saw one SIGSEGV there
    after every test had passed. Nothing of ours is left to run at that point."""
    status = getattr(config, "_proxycomp_exitstatus", None)
    if status is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(status))


def pytest_sessionfinish(session, exitstatus):
    session.config._proxycomp_exitstatus = exitstatus
