"""An independent S3 client for the end-to-end tests (boto3, not the
engine's object_store), against the server at ENDPOINT.

    s3_client.py ENDPOINT bucket NAME          creates bucket NAME
    s3_client.py ENDPOINT objects NAME PREFIX  every object under PREFIX, one
                                               JSON line each: {"key", "body"};
                                               a `.parquet` object's body is its
                                               rows as JSON lines (read by pyarrow)
"""

import json
import sys

import boto3


def parquet_rows(data):
    import io

    import pyarrow.parquet

    table = pyarrow.parquet.read_table(io.BytesIO(data))
    lines = []
    for row in table.to_pylist():
        stamp = row["timestamp"]
        row["timestamp"] = int(stamp.timestamp() * 1000) if stamp is not None else None
        lines.append(json.dumps(row) + "\n")
    return "".join(lines)


def main():
    endpoint, command, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    if command == "bucket":
        s3.create_bucket(Bucket=bucket)
    elif command == "objects":
        prefix = sys.argv[4] if len(sys.argv) > 4 else ""
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                if item["Key"].endswith(".parquet"):
                    body = parquet_rows(body)
                else:
                    body = body.decode()
                print(json.dumps({"key": item["Key"], "body": body}))
    else:
        raise SystemExit(f"unknown command {command}")


main()
