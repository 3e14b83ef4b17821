"""Pruning: NetAdapt (latency-aware, table-driven) and physical channel removal through Torch-Pruning."""
