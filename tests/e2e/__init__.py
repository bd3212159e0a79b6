"""End-to-end tests: Ray clusters (in-process and `ray start`), moto_server, subprocesses
under imitated CPUs, CUDA where there is one."""
