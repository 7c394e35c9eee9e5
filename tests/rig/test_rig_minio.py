"""The rig's MinIO: S3 through boto3, and data that outlives a restart."""

from __future__ import annotations

import pytest

from tidemark_rig.minio import MinioInfo, MinioServer

pytestmark = [pytest.mark.rig, pytest.mark.backup]


def test_put_list_get(minio: MinioInfo) -> None:
    s3 = minio.client()
    for i in range(3):
        s3.put_object(Bucket=minio.bucket, Key=f"wal/{i:04d}", Body=f"record {i}".encode())
    listed = s3.list_objects_v2(Bucket=minio.bucket, Prefix="wal/")
    assert [o["Key"] for o in listed["Contents"]] == ["wal/0000", "wal/0001", "wal/0002"]
    assert s3.get_object(Bucket=minio.bucket, Key="wal/0001")["Body"].read() == b"record 1"


def test_objects_survive_restart(minio: MinioInfo, rig_minio_server: MinioServer) -> None:
    s3 = minio.client()
    payload = bytes(range(256)) * 4096  # 1 MiB, binary
    s3.put_object(Bucket=minio.bucket, Key="snap/base", Body=payload)
    rig_minio_server.restart()
    s3 = minio.client()
    assert s3.get_object(Bucket=minio.bucket, Key="snap/base")["Body"].read() == payload
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=minio.bucket)["Contents"]] == ["snap/base"]
