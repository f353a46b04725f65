#!/usr/bin/env python3
"""thermo's cold objects seen from outside thermo: boto3 talks to the S3 server, DuckDB reads the
Parquet files (local copies: no httpfs, no network beyond the S3 endpoint).

    duckdb_totals.py keys    --endpoint URL --bucket B              JSON array of every object key
    duckdb_totals.py dump    --endpoint URL --bucket B --dir D      download every object below D
    duckdb_totals.py restore --endpoint URL --bucket B --dir D      create the bucket if missing,
                                                                    upload every file below D
    duckdb_totals.py totals  --endpoint URL --bucket B --dir D      download, then print DuckDB totals

`totals` prints one JSON document:

    {"objects": N, "rows": N,
     "misplaced": N,   # rows whose window_start is not aligned to their resolution or lies outside
                       # the chunk named by their file (start=<chunk>.parquet)
     "mismatched": N,  # rows whose hive columns (tenant=, res=) disagree with their own columns
     "chunks": [{"tenant": T, "res": "1m", "metric": M, "start": CHUNK,
                 "sum": S, "count": C, "rows": R}, ...]}

with `sum(sum)` and `sum(count)` per tenant, resolution, metric and chunk (the hour, day or
epoch-aligned week the object covers), read with `read_parquet(..., hive_partitioning=1)`.

Exit status 3 with a message naming the pip package when boto3 or duckdb is missing.
"""

import argparse
import json
import os
import sys

try:
    import boto3
    from botocore.config import Config
except ImportError:
    sys.stderr.write("boto3 is missing: install it with pip install boto3 (it comes with moto[server])\n")
    sys.exit(3)

CHUNK_SECONDS = {"1m": 3600, "5m": 86400, "1h": 604800}
WINDOW_SECONDS = {"1m": 60, "5m": 300, "1h": 3600}


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def list_keys(s3, bucket):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def dump(s3, bucket, root):
    keys = list_keys(s3, bucket)
    for k in keys:
        path = os.path.join(root, k)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, k, path)
    return keys


def restore(s3, bucket, root):
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:
        s3.create_bucket(Bucket=bucket)
    n = 0
    for d, _, files in os.walk(root):
        for f in sorted(files):
            path = os.path.join(d, f)
            key = os.path.relpath(path, root).replace(os.sep, "/")
            s3.upload_file(path, bucket, key)
            n += 1
    return n


def totals(root, nobjects):
    try:
        import duckdb
    except ImportError:
        sys.stderr.write("duckdb is missing: install it with pip install duckdb\n")
        sys.exit(3)
    out = {"objects": nobjects, "rows": 0, "misplaced": 0, "mismatched": 0, "chunks": []}
    if nobjects == 0:
        return out
    con = duckdb.connect()
    glob = os.path.join(root, "**", "*.parquet").replace("'", "''")
    con.execute(
        f"CREATE VIEW cold AS SELECT * FROM read_parquet('{glob}', hive_partitioning=1, filename=1)"
    )
    cols = {r[0] for r in con.execute("DESCRIBE cold").fetchall()}
    need = {"res", "tenant", "metric", "window_start", "resolution", "sum", "count", "filename"}
    if not need <= cols:
        sys.stderr.write(f"unexpected columns {sorted(cols)}; need {sorted(need)}\n")
        sys.exit(2)
    chunk = (
        "CASE res WHEN '1m' THEN 3600 WHEN '5m' THEN 86400 ELSE 604800 END"
    )
    window = "CASE res WHEN '1m' THEN 60 WHEN '5m' THEN 300 ELSE 3600 END"
    file_start = (
        "CAST(regexp_extract(filename, 'start=(-?[0-9]+)\\.parquet$', 1) AS BIGINT)"
    )
    out["rows"] = con.execute("SELECT count(*) FROM cold").fetchone()[0]
    out["misplaced"] = con.execute(
        f"""SELECT count(*) FROM cold
            WHERE window_start % {window} <> 0
               OR window_start < {file_start}
               OR window_start >= {file_start} + {chunk}"""
    ).fetchone()[0]
    out["mismatched"] = con.execute(
        "SELECT count(*) FROM cold WHERE res <> resolution OR filename NOT LIKE '%tenant=' || tenant || '/%'"
    ).fetchone()[0]
    rows = con.execute(
        f"""SELECT tenant, res, metric, {file_start} AS start,
                   sum(sum) AS s, sum(count) AS c, count(*) AS n
            FROM cold GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    for tenant, res, metric, start, s, c, n in rows:
        out["chunks"].append(
            {
                "tenant": tenant,
                "res": res,
                "metric": metric,
                "start": int(start),
                "sum": None if s is None else float(s),
                "count": int(c),
                "rows": int(n),
            }
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["keys", "dump", "restore", "totals"])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--dir")
    a = ap.parse_args()
    s3 = client(a.endpoint)
    if a.command == "keys":
        print(json.dumps(list_keys(s3, a.bucket)))
        return
    if not a.dir:
        ap.error(f"{a.command} needs --dir")
    os.makedirs(a.dir, exist_ok=True)
    if a.command == "dump":
        print(len(dump(s3, a.bucket, a.dir)))
    elif a.command == "restore":
        print(restore(s3, a.bucket, a.dir))
    else:
        keys = dump(s3, a.bucket, a.dir)
        print(json.dumps(totals(a.dir, len(keys))))


if __name__ == "__main__":
    main()
