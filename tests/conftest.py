import os
import sys

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

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
