"""The dataset wing: exactly the code that decides shard bytes.

Sources (discovery and decoding), the seeded plan, the shard writer, the manifest and the extract stage. dvc.yaml's
extract stage depends on this whole folder, and staged shards are invalidated when any module in it
changes. It imports nothing from the other wings.
"""
