"""The audit wing: reads a dataset, never writes one.

verify (hashes, provenance, rebuild-and-compare), the leakage audit, info and preview. It may use the
dataset wing, never sharing or training.
"""
