"""One module per read-side command and the demo: verify, export, demo (stdlib input
shards). The parser and the dispatch live in `pipeline.cli`."""
