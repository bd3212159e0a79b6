"""Analyses of a sample (the paper's ablations, stability, collisions, segments), their
plots, and the HTML report of an output. Needs the `analysis` extra (matplotlib,
rapidfuzz); nothing of the job imports this package."""
