"""Benchmarks that print JSON (run from the repository root: `python -m benchmarks.NAME
--json`). Not installed with the package: the product's Ray workers never import them.

    benchmarks.coder       the Numba coder alone
    benchmarks.engine      model, segmentation, windowed coding; int8 vs bf16 vs fp32
    benchmarks.job         the Ray job, 1 and 2 model actors, vs the in-process engine
    benchmarks.load        many small shards, memory on big inputs
    benchmarks.store       driver passes over 20,000 shards on moto_server
    benchmarks.warm_cache  a warm segment cache on the next slice, cold vs warm
    benchmarks.gpu         `make bench-gpu`: the GPU figures in steps
"""
