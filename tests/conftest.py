import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

import torch  # noqa: E402

# Tests run many small model calls; with one thread they do not wait on a thread pool
# that competes with other processes (Ray workers, servers) for the same cores.
torch.set_num_threads(1)
