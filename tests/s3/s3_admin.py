"""What the tests ask of the S3 server, through boto3 (a client no one
here wrote): make a bucket (with Object Lock, if asked), list the objects
under a prefix with their sizes, dump every object's bytes into a
directory, put an object as someone else holding the bucket would,
print an object's retention, try to delete an object's
version as an attacker holding the bucket's credentials would."""
import os
import sys

import boto3


def client(port):
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def main():
    port, cmd, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
    s3 = client(port)
    if cmd == "mkbucket":
        s3.create_bucket(Bucket=bucket)
    elif cmd == "mkbucket-locked":
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    elif cmd == "retention":
        h = s3.head_object(Bucket=bucket, Key=sys.argv[4])
        if "ObjectLockRetainUntilDate" in h:
            print(h["ObjectLockMode"], int(h["ObjectLockRetainUntilDate"].timestamp()))
        else:
            print("none")
    elif cmd == "put":
        with open(sys.argv[5], "rb") as f:
            s3.put_object(Bucket=bucket, Key=sys.argv[4], Body=f.read())
    elif cmd == "delete":
        s3.delete_object(Bucket=bucket, Key=sys.argv[4])
    elif cmd == "delete-version":
        key = sys.argv[4]
        version = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
        try:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
            print("deleted")
        except s3.exceptions.ClientError as e:
            print("refused", e.response["Error"]["Code"])
    elif cmd == "list":
        prefix = sys.argv[4] if len(sys.argv) > 4 else ""
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                print(o["Key"], o["Size"])
    elif cmd == "dump":
        out = sys.argv[4]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                path = os.path.join(out, o["Key"].replace("/", "_"))
                with open(path, "wb") as f:
                    f.write(body)
    else:
        sys.exit(f"unknown command {cmd}")


main()
