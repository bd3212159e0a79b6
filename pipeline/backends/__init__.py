"""Compressors behind one protocol (`base.Backend`): the neural one, which talks to a
model actor (`model_actor`), and gzip and tokenizer, which run in the shard tasks."""
