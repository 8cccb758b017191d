"""The sharing wing: the DVC project and its remotes.

DVC configuration, the S3 and local-directory probes, the read-only IAM policy and `patchpack pull`.
boto3 and DVC load inside the functions that need them. It may use the dataset and audit wings.
"""
