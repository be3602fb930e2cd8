"""The metric catalog (every metric, defined once) and what is generated from it."""
