"""Latency lookup tables: enumerate a model's layer configurations, build micro-models, measure them on
a device, and predict a (pruned) model's latency from the table."""
