"""Artefacts computed from a model's index and saved beside it: 2-D maps (`maps`) and
near-duplicate pairs (`duplicates`)."""
