"""What an `s3://` storage root needs beyond plain fsspec: settings from the environment, the pyarrow
equivalent (Ray Data / Ray Train), conditional writes, and errors that say what is wrong.

Settings: AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_REGION (or AWS_DEFAULT_REGION); fsspec's config (`fsspec.config.conf["s3"]`,
FSSPEC_S3_* variables) wins over them. Without keys, botocore's own chain applies (instance
profile, ~/.aws). Secrets are never put into a message, an artefact or a pickle made here.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import fsspec
from fsspec.asyn import sync

from forge_ray.errors import ConflictError, StorageError

PROTOCOLS = ("s3", "s3a")
# Codes an S3 server answers when a conditional write loses (412; 409 when two race on AWS).
CONFLICT_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
PYARROW_ATTEMPTS = 8
# A short leash for the up-front check: an unreachable endpoint must fail in seconds, not minutes.
CHECK_CONFIG = {"connect_timeout": 5, "read_timeout": 15, "retries": {"max_attempts": 2, "mode": "standard"}}


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def s3_options(extra: dict | None = None) -> dict:
    """s3fs arguments: the environment's settings where fsspec's config has none, made explicit.

    Explicit, so they are part of fsspec's instance-cache key: a process whose environment
    changes (another endpoint, other keys) gets a new client, not a cached one.
    """
    conf = fsspec.config.conf.get("s3", {})
    client = dict(conf.get("client_kwargs", {}))
    opts: dict = {}
    endpoint = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if endpoint and "endpoint_url" not in conf and "endpoint_url" not in client:
        opts["endpoint_url"] = endpoint
    for arg, names in (("key", ("AWS_ACCESS_KEY_ID",)), ("secret", ("AWS_SECRET_ACCESS_KEY",)),
                       ("token", ("AWS_SESSION_TOKEN",))):
        if (value := _env(*names)) and arg not in conf:
            opts[arg] = value
    region = _env("AWS_REGION", "AWS_DEFAULT_REGION")
    if region and "region_name" not in client:
        client["region_name"] = region
    if client:
        opts["client_kwargs"] = client
    # Other processes change the store: a cached listing would hide a new marker or version.
    opts["use_listings_cache"] = False
    return {**opts, **(extra or {})}


def endpoint_of(fs) -> str:
    """The endpoint URL an s3fs filesystem talks to (not a secret: fine in messages)."""
    return fs.endpoint_url or fs.client_kwargs.get("endpoint_url") or "the default AWS endpoint"


def pyarrow_s3(fs):
    """A pyarrow S3FileSystem reaching the same store as the s3fs `fs`.

    Keys are passed only when they did not come from the environment: pyarrow reads the same
    variables itself, and a filesystem built without them pickles (into Ray's object store,
    a trainer's run config) without the secret.
    """
    from pyarrow.fs import AwsStandardS3RetryStrategy, S3FileSystem

    # A server's transient 5xx (SeaweedFS answers INTERNAL_FAILURE under load; AWS throttles with
    # 503 SlowDown) retried with the SDK's exponential backoff: pyarrow's default gives up after 3.
    kwargs: dict = {"retry_strategy": AwsStandardS3RetryStrategy(max_attempts=PYARROW_ATTEMPTS)}
    endpoint = fs.endpoint_url or fs.client_kwargs.get("endpoint_url")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    region = fs.client_kwargs.get("region_name")
    if region:
        kwargs["region"] = region
    if fs.key and fs.key != os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(access_key=fs.key, secret_key=fs.secret, session_token=fs.token)
    return S3FileSystem(**kwargs)


def is_conflict(e: BaseException) -> bool:
    """Did a conditional request lose (the object changed, or exists when it must not)?"""
    for err in (e, e.__cause__):
        response = getattr(err, "response", None)
        if response and str(response.get("Error", {}).get("Code")) in CONFLICT_CODES:
            return True
    return False


def get_tagged(fs, path: str) -> tuple[bytes, str] | None:
    """(bytes, ETag) of one object read in one request, or None if it does not exist."""
    bucket, key, _ = fs.split_path(path)

    async def get():
        try:
            resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        async with resp["Body"] as body:
            return await body.read(), resp["ETag"]

    return sync(fs.loop, get)


def put_if(fs, path: str, data: bytes, tag: str | None) -> str:
    """Write only if the object still has ETag `tag` (None: only if it does not exist); new ETag."""
    bucket, key, _ = fs.split_path(path)
    cond = {"IfMatch": tag} if tag is not None else {"IfNoneMatch": "*"}
    try:
        out = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **cond)
    except OSError as e:
        if is_conflict(e) or isinstance(e, FileExistsError):
            raise ConflictError(f"{fs.unstrip_protocol(path)} was changed by another writer") from None
        raise
    fs.invalidate_cache(path)
    return out["ETag"]


def delete_if(fs, path: str, tag: str) -> bool:
    """Delete only if the object still has ETag `tag`; False if it changed or is gone."""
    bucket, key, _ = fs.split_path(path)
    try:
        fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=tag)
    except FileNotFoundError:
        return False
    except OSError as e:
        if is_conflict(e):
            return False
        raise
    fs.invalidate_cache(path)
    return True


def check_bucket(uri: str, root: str, fs) -> None:
    """Fail with a clear StorageError if the bucket is unreachable, forbidden or missing.

    Takes the filesystem, not its options: a traceback shows arguments, and those hold the secret.
    """
    import s3fs

    check = s3fs.S3FileSystem(**{**fs.storage_options, "config_kwargs": CHECK_CONFIG}, skip_instance_cache=True)
    check.retries = 1  # s3fs's own retry loop on top of botocore's: once is enough here
    bucket = root.split("/", 1)[0]
    where = f"storage root {uri!r} (endpoint {endpoint_of(fs)})"
    try:
        check.call_s3("head_bucket", Bucket=bucket)
    except FileNotFoundError:
        raise StorageError(f"{where}: bucket {bucket!r} does not exist; create it first "
                           "(forge never creates buckets)") from None
    except PermissionError:
        raise StorageError(f"{where}: access denied to bucket {bucket!r}; check AWS_ACCESS_KEY_ID / "
                           "AWS_SECRET_ACCESS_KEY (or fsspec's s3 config) and the key's permissions") from None
    except Exception as e:  # noqa: BLE001 - connection refused, DNS, TLS, timeouts: all "unreachable"
        raise StorageError(f"{where}: cannot reach the object store ({type(e).__name__}: "
                           f"{scrub(str(e), fs)})") from None


def scrub(text: str, fs) -> str:
    """`text` with any secret of `fs` blanked (defence in depth: botocore does not echo them)."""
    options = getattr(fs, "storage_options", {})
    for value in (options.get("secret"), options.get("token"), os.environ.get("AWS_SECRET_ACCESS_KEY")):
        if value:
            text = text.replace(value, "***")
    return text
