"""Tests of what is built around the library: benchmarks, notebooks, docs, README, examples, packaging."""
