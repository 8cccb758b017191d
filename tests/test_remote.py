"""patchpack.sharing.remote against real S3-protocol servers on loopback: moto in server mode (with its IAM
enforcement for denied access and rejected keys) and a scripted server for real S3's region errors.

Each failure mode must produce its own kind and its own one-line message that says how to fix it.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from patchpack import cli
from patchpack.errors import RemoteError
from patchpack.sharing.dvcconfig import load_remote
from patchpack.sharing.local import check_local
from patchpack.sharing.policy import read_only_policy
from patchpack.sharing.remote import check, setup_local, setup_s3
from patchpack.sharing.s3 import check_s3
from patchpack.sharing.spec import RemoteCheckFailed, RemoteSpec, mask_credentials, parse_s3_url
from support.s3server import ScriptedS3, free_port, isolate_aws, moto_server


@pytest.fixture(scope="session")
def server():
    return moto_server()


@pytest.fixture
def aws(monkeypatch, tmp_path):
    """Dummy keys in the environment, empty AWS config files, HOME in tmp."""
    return isolate_aws(monkeypatch, tmp_path / "home")


@pytest.fixture
def bucket(server):
    name = f"pp-{uuid.uuid4().hex[:12]}"
    server.create_bucket(name)
    return name


@pytest.fixture
def project(tmp_path, aws):
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(
        [sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True, env=aws
    )
    return root


def spec_for(server, bucket, **kwargs):
    return RemoteSpec("storage", f"s3://{bucket}/datasets", endpoint_url=server.endpoint, **kwargs)


def failure(report):
    assert not report.ok, report.render()
    return report.failures[0]


# --- urls ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://my-bucket/some/prefix", ("my-bucket", "some/prefix")),
        ("s3://my-bucket/some/prefix/", ("my-bucket", "some/prefix")),
        ("s3://my-bucket", ("my-bucket", "")),
    ],
)
def test_parse_s3_url(url, expected):
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("gs://bucket/x", "not an S3 url"),
        ("s3://Bad_Bucket/x", "not a valid bucket name"),
        ("s3://ab/x", "not a valid bucket name"),
    ],
)
def test_parse_s3_url_rejects(url, match):
    with pytest.raises(RemoteError, match=match):
        parse_s3_url(url)


SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY"  # AWS secret keys may hold '/' and '+'


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"s3://AKIAKEY:{SECRET}@my-bucket/ds", "s3://***@my-bucket/ds"),
        (f"http://AKIAKEY:{SECRET}@127.0.0.1:9000", "http://***@127.0.0.1:9000"),
        ("https://user:pw@minio.example.org/", "https://***@minio.example.org/"),
        ("ssh://user@example.org/srv/dvc", "ssh://***@example.org/srv/dvc"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("s3://my-bucket/odd@prefix", "s3://my-bucket/odd@prefix"),
    ],
)
def test_mask_credentials(url, masked):
    assert mask_credentials(url) == masked


def test_a_user_name_alone_is_no_secret_outside_s3(project):
    """DVC names an SSH remote's user in its url; a password there is refused."""
    from patchpack.sharing.dvcconfig import run_dvc

    run_dvc(["remote", "add", "--default", "box", "ssh://deploy@example.org/srv/dvc"], project)
    assert load_remote(project).url == "ssh://deploy@example.org/srv/dvc"
    run_dvc(["remote", "modify", "box", "url", "ssh://deploy:hunter2@example.org/srv"], project)
    with pytest.raises(
        RemoteError, match=r"remote 'box' url ssh://\*\*\*@example.org/srv carries credentials"
    ) as caught:
        load_remote(project)
    assert "hunter2" not in str(caught.value)


def test_parse_s3_url_refuses_credentials_without_echoing_them():
    with pytest.raises(
        RemoteError, match=r"^remote url s3://\*\*\*@my-bucket/ds carries credentials"
    ) as caught:
        parse_s3_url(f"s3://AKIAKEY:{SECRET}@my-bucket/ds")
    assert "AKIAKEY" not in str(caught.value) and "SECRETKEY" not in str(caught.value)


# --- what works -----------------------------------------------------------------------------------


def test_check_all_ok_leaves_no_probe(server, bucket, aws):
    report = check_s3(spec_for(server, bucket))
    assert report.ok, report.render()
    assert [c.status for c in report.checks] == ["ok"] * 7
    assert report.region == "us-east-1"
    assert "push and pull" in report.render()
    assert server.objects(bucket) == {}


def test_read_only_policy_allows_pull_not_push(server, bucket, aws):
    """The policy the README gives a partner: list and read work, write is refused."""
    server.client().put_object(Bucket=bucket, Key="datasets/files/md5/ab/cdef", Body=b"x")
    key, secret = server.create_user(f"reader-{bucket}", read_only_policy(bucket, "datasets"))
    spec = spec_for(server, bucket, secrets={"access_key_id": key, "secret_access_key": secret})
    with server.iam_enforced():
        relaxed = check_s3(spec, read_only=True)
        strict = check_s3(spec)
    assert relaxed.ok, relaxed.render()
    assert {c.name: c.status for c in relaxed.checks} | {} == {
        "credentials": "ok",
        "endpoint": "ok",
        "bucket": "ok",
        "region": "skip",
        "list": "ok",
        "read": "ok",
        "write": "no",
    }
    assert "pull only" in relaxed.render()
    assert failure(strict).kind == "access-denied"
    assert failure(strict).name == "write"
    assert "s3:PutObject" in failure(strict).detail


# --- each failure mode, one message each ----------------------------------------------------------


def test_no_credentials(server, bucket, aws, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    problem = failure(check_s3(spec_for(server, bucket)))
    assert problem.kind == "no-credentials"
    assert problem.detail.startswith(f"no AWS credentials found for s3://{bucket}/datasets")
    assert "AWS_ACCESS_KEY_ID" in problem.detail and "aws configure" in problem.detail


def test_missing_profile(server, bucket, aws):
    problem = failure(check_s3(spec_for(server, bucket, profile="partner")))
    assert problem.kind == "no-profile"
    assert "aws configure --profile partner" in problem.detail


def test_no_such_bucket(server, aws):
    problem = failure(check_s3(spec_for(server, "pp-does-not-exist")))
    assert problem.kind == "no-bucket"
    assert problem.detail.startswith(f"no bucket 'pp-does-not-exist' at {server.endpoint}")
    assert "--create-bucket" in problem.detail


def test_endpoint_unreachable(bucket, aws):
    dead = f"http://127.0.0.1:{free_port()}"
    report = check_s3(RemoteSpec("storage", f"s3://{bucket}/x", endpoint_url=dead))
    problem = failure(report)
    assert problem.kind == "unreachable"
    assert problem.detail.startswith(f"cannot reach the S3 endpoint {dead}")
    assert "dvc remote modify storage endpointurl" in problem.detail
    assert [c.status for c in report.checks if c.name in ("list", "read", "write")] == ["skip"] * 3


def test_access_denied(server, bucket, aws):
    key, secret = server.create_user(f"nobody-{bucket}", policy=None)
    spec = spec_for(server, bucket, secrets={"access_key_id": key, "secret_access_key": secret})
    with server.iam_enforced():
        problem = failure(check_s3(spec))
    assert problem.kind == "access-denied"
    assert problem.detail.startswith(f"access denied: ListObjectsV2 on s3://{bucket}/datasets")
    assert "s3:ListBucket and s3:GetObject" in problem.detail


def test_rejected_credentials(server, bucket, aws):
    with server.iam_enforced():
        problem = failure(check_s3(spec_for(server, bucket)))  # the dummy key is no IAM user
    assert problem.kind == "bad-credentials"
    assert "rejected the credentials (InvalidAccessKeyId)" in problem.detail


def test_wrong_region_from_bucket_header(server, aws):
    name = f"pp-eu-{uuid.uuid4().hex[:10]}"
    server.create_bucket(name, region="eu-west-1")
    problem = failure(check_s3(spec_for(server, name, region="us-east-1")))
    assert problem.kind == "wrong-region"
    assert problem.detail == (
        f"bucket '{name}' is in region eu-west-1, but remote 'storage' uses us-east-1: "
        f"run `dvc remote modify storage region eu-west-1`"
    )


@pytest.mark.parametrize(
    ("status", "code", "headers"),
    [
        (301, "PermanentRedirect", {"x-amz-bucket-region": "ap-south-1"}),
        (400, "AuthorizationHeaderMalformed", {"x-amz-bucket-region": "ap-south-1"}),
        (400, "IllegalLocationConstraintException", {}),
    ],
)
def test_wrong_region_from_s3_errors(aws, status, code, headers):
    """Real S3 answers a request signed for the wrong region with these; moto does not send them."""
    with ScriptedS3(status, code, "wrong region", headers) as fake:
        problem = failure(
            check_s3(RemoteSpec("storage", "s3://pp-bucket/x", endpoint_url=fake.endpoint))
        )
    assert problem.kind == "wrong-region"
    assert "dvc remote modify storage region" in problem.detail
    if headers:
        assert "is in region ap-south-1" in problem.detail


def test_failure_messages_are_distinct_one_liners(server, bucket, aws, monkeypatch):
    messages = {
        "no-bucket": failure(check_s3(spec_for(server, "pp-none-here"))).detail,
        "unreachable": failure(
            check_s3(RemoteSpec("s", "s3://pp-b/x", endpoint_url=f"http://127.0.0.1:{free_port()}"))
        ).detail,
    }
    with server.iam_enforced():
        messages["bad-credentials"] = failure(check_s3(spec_for(server, bucket))).detail
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    messages["no-credentials"] = failure(check_s3(spec_for(server, bucket))).detail
    assert len(set(messages.values())) == len(messages)
    assert all("\n" not in text for text in messages.values())


# --- configuring DVC ------------------------------------------------------------------------------


def test_setup_s3_configures_dvc_without_secrets(server, project, aws):
    home = Path(aws["HOME"])
    (home / "aws-credentials").write_text(
        "[partner]\naws_access_key_id = AKIAPARTNERKEY000001\naws_secret_access_key = partner-secret\n"
    )
    name = f"pp-new-{uuid.uuid4().hex[:10]}"
    report = setup_s3(
        project,
        f"s3://{name}/ds",
        endpoint_url=server.endpoint,
        profile="partner",
        create_bucket=True,
    )
    assert report.ok and "created bucket" in report.render()
    committed = (project / ".dvc" / "config").read_text()
    local = (project / ".dvc" / "config.local").read_text()
    assert f"url = s3://{name}/ds" in committed
    assert f"endpointurl = {server.endpoint}" in committed
    assert "region = us-east-1" in committed
    assert "remote = storage" in committed
    assert "profile" not in committed and "profile = partner" in local
    for secret in ("AKIAPARTNERKEY000001", "partner-secret", "testing-secret"):
        assert secret not in committed and secret not in local
    spec = load_remote(project)
    assert (spec.url, spec.endpoint_url, spec.profile) == (
        f"s3://{name}/ds",
        server.endpoint,
        "partner",
    )
    assert check(project).ok


def test_setup_s3_failure_configures_nothing(server, project, aws):
    with pytest.raises(RemoteCheckFailed, match="no bucket 'pp-absent-bucket'") as caught:
        setup_s3(project, "s3://pp-absent-bucket/ds", endpoint_url=server.endpoint)
    assert caught.value.kind == "no-bucket"
    assert "storage" not in (project / ".dvc" / "config").read_text()


def test_check_flags_committed_credentials(server, bucket, project, aws):
    setup_s3(project, f"s3://{bucket}/ds", endpoint_url=server.endpoint)
    config = project / ".dvc" / "config"
    config.write_text(config.read_text() + "    access_key_id = AKIALEAKEDKEY0000001\n")
    report = check(project)
    assert failure(report).kind == "committed-secrets"
    assert "remote.storage.access_key_id" in failure(report).detail
    assert "AKIALEAKEDKEY0000001" not in report.render()


@pytest.mark.parametrize(
    ("url", "endpoint", "match"),
    [
        (
            "s3://pp-creds/ds",
            f"http://AKIAKEY:{SECRET}@127.0.0.1:9000",
            r"^--endpoint-url http://\*\*\*@127.0.0.1:9000 carries credentials",
        ),
        (
            f"s3://AKIAKEY:{SECRET}@pp-creds/ds",
            "http://127.0.0.1:9000",
            r"^remote url s3://\*\*\*@pp-creds/ds carries credentials",
        ),
    ],
)
def test_setup_s3_refuses_credentials_in_urls(project, url, endpoint, match):
    before = (project / ".dvc" / "config").read_text()
    with pytest.raises(RemoteError, match=match) as caught:
        setup_s3(project, url, endpoint_url=endpoint)
    assert "AKIAKEY" not in str(caught.value) and "SECRETKEY" not in str(caught.value)
    assert (project / ".dvc" / "config").read_text() == before


def test_cli_refuses_an_endpoint_with_credentials(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    endpoint = f"http://AKIAKEY:{SECRET}@127.0.0.1:{free_port()}"
    assert cli.main(["remote", "s3", "s3://pp-cli-creds/ds", "--endpoint-url", endpoint]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("patchpack remote: error: --endpoint-url http://***@127.0.0.1:")
    for text in (captured.out, captured.err, (project / ".dvc" / "config").read_text()):
        assert "AKIAKEY" not in text and "SECRETKEY" not in text


def test_check_refuses_a_configured_url_with_credentials(server, bucket, project, aws):
    setup_s3(project, f"s3://{bucket}/ds", endpoint_url=server.endpoint)
    config = project / ".dvc" / "config"
    host = server.endpoint.split("://", 1)[1]
    config.write_text(
        config.read_text().replace(server.endpoint, f"http://AKIAKEY:{SECRET}@{host}")
    )
    with pytest.raises(
        RemoteError, match=r"remote 'storage' endpointurl http://\*\*\*@127.0.0.1:\d+ carries"
    ) as caught:
        check(project)
    assert "SECRETKEY" not in str(caught.value)


def test_check_flags_a_committed_secret_key_alone(server, bucket, project, aws):
    """Half a key pair in .dvc/config used to crash signing with a TypeError."""
    setup_s3(project, f"s3://{bucket}/ds", endpoint_url=server.endpoint)
    config = project / ".dvc" / "config"
    config.write_text(config.read_text() + "    secret_access_key = LEAKEDSECRETVALUE0001\n")
    report = check(project)
    assert failure(report).kind == "committed-secrets"
    assert "remote.storage.secret_access_key" in failure(report).detail
    assert "dvc remote modify --local" in failure(report).detail
    assert report.status("credentials") == "fail"
    assert "gives no access_key_id" in report.render()
    assert "LEAKEDSECRETVALUE0001" not in report.render()


def test_half_a_key_pair_in_the_environment(server, bucket, aws, monkeypatch):
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    problem = failure(check_s3(spec_for(server, bucket)))
    assert problem.kind == "half-credentials"
    assert problem.detail.startswith(
        f"incomplete AWS credentials for s3://{bucket}/datasets: env gives no AWS_SECRET_ACCESS_KEY"
    )


def test_local_remote(tmp_path, project):
    report = setup_local(project, tmp_path / "shared" / "dvc-store")
    assert report.ok
    spec = load_remote(project)
    assert spec.url == str(tmp_path / "shared" / "dvc-store")
    assert [c.status for c in check_local(spec).checks] == ["ok", "ok", "ok"]


def test_local_remote_missing_directory(tmp_path):
    problem = failure(check_local(RemoteSpec("storage", str(tmp_path / "gone"))))
    assert "no such directory" in problem.detail


# --- the command line -----------------------------------------------------------------------------


def test_cli_check_exit_code_and_one_line(server, project, aws, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert cli.main(["remote", "check"]) == 2
    assert "no default DVC remote" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "remote",
                "s3",
                "s3://pp-cli-bucket/ds",
                "--endpoint-url",
                server.endpoint,
                "--create-bucket",
            ]
        )
        == 0
    )
    assert "configured DVC remote 'storage'" in capsys.readouterr().out
    assert cli.main(["remote", "check"]) == 0
    out = capsys.readouterr().out
    for name in ("list", "read", "write"):
        assert f"ok   {name}" in out
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert cli.main(["remote", "check"]) == 2
    captured = capsys.readouterr()
    assert "FAIL credentials" in captured.out
    err = captured.err.strip()
    assert err.startswith("patchpack remote: error: no AWS credentials found") and "\n" not in err
