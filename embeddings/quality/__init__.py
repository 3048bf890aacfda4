"""Measured quality: sampled evaluation (`evaluate`), the KAGL text protocol (`kagl`,
`kagl_metrics`) and where models disagree (`disagreement`)."""
