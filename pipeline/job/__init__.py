"""The Ray job: the driver (`driver.run_job`, one straight line), what it plans from
listings, the cluster and its actors, the scheduler that keeps shard tasks in flight,
the shard task itself and its stages, calibration, and the warm segment cache."""
