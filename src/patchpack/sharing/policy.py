"""The policies a data owner attaches: an IAM policy for a partner who may ``dvc pull`` and nothing
more, and a bucket policy that lets anyone read a public dataset."""

from __future__ import annotations

from typing import Any


def read_only_policy(bucket: str, prefix: str = "") -> dict[str, Any]:
    """An IAM policy that lets a partner ``dvc pull`` from ``s3://bucket/prefix`` and nothing more.

    ``s3:ListBucket`` (limited to the prefix) lets DVC see which objects exist; ``s3:GetObject`` on
    the prefix lets it download them. Attach it to the partner's IAM user or role.

    Parameters
    ----------
    bucket : the bucket's name
    prefix : the remote's prefix inside the bucket (slashes around it are ignored); empty for all

    Returns
    -------
    dict
        The policy document, ready for ``json.dumps``.
    """
    prefix = prefix.strip("/")
    objects = f"arn:aws:s3:::{bucket}/{prefix}/*" if prefix else f"arn:aws:s3:::{bucket}/*"
    listing: dict[str, Any] = {
        "Sid": "ListTheDatasetPrefix",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": f"arn:aws:s3:::{bucket}",
    }
    if prefix:
        # Without the condition, ListBucket would show the keys of every other prefix too.
        listing["Condition"] = {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
    reading = {
        "Sid": "ReadTheDatasetObjects",
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": objects,
    }
    return {"Version": "2012-10-17", "Statement": [listing, reading]}


def public_read_policy(bucket: str, prefix: str = "") -> dict[str, Any]:
    """A bucket policy that lets anyone, without an AWS account, ``dvc pull`` from
    ``s3://bucket/prefix``: the statements of :func:`read_only_policy` with ``Principal: *``.

    Attach it with ``aws s3api put-bucket-policy --bucket BUCKET --policy file://policy.json``;
    on AWS the bucket's Block Public Access settings must allow public bucket policies.
    """
    policy = read_only_policy(bucket, prefix)
    for statement in policy["Statement"]:
        statement["Sid"] = f"Public{statement['Sid']}"
        statement["Principal"] = "*"
    return policy
