"""Where shard data lives: local folders or object storage (S3 and S3-compatible servers).

Everything about a location for ``tsf shard`` (writing with ``litdata.optimize``) and for the
shard reader is decided here, in one place: endpoints, credentials, timeouts, the local cache
folder and the plain-HTTP fix. Reading a split as a stream (its checks before training and
LitData's keyword arguments) is :mod:`.stream_input`; faults while streaming (retries, the
checked chunk downloader) are :mod:`.storage_faults`. Both build on this module, never the
other way round.

- :func:`is_remote`: ``s3://``, ``gs://``, ``azure://`` URLs (only S3 is tested here).
- :func:`storage_options`: endpoint and region for litdata (boto3 client keywords), from
  ``data.storage.options`` or the usual AWS variables.
- :func:`check_remote`: one clear :class:`StorageError` before any work for a missing bucket,
  rejected credentials or an unreachable endpoint, instead of retries and a traceback later.
- :func:`s3_client`: the one boto3 client factory (checks, the shard writer's reads and uploads).
- :func:`output_dir`: keyword arguments for ``litdata.optimize``; :func:`keep_start_method`.
- :func:`allow_plain_http`: litdata 0.2.76 cannot talk to ``http://`` endpoints without it.
- :func:`redact` / :func:`secret_values`: credentials never written (config, checkpoints, W&B).

litdata and boto3 are imported inside functions: ``import lightning_tsf`` stays light, and
litdata is an optional install (the ``shards`` extra, see docs/data.md).
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REMOTE_SCHEMES = ("s3", "gs", "azure")

# boto3 ``client("s3", ...)`` keywords litdata passes through (plus its own data_connection_id).
S3_OPTION_KEYS = frozenset(
    {
        "endpoint_url",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "region_name",
        "verify",
        "config",
        "data_connection_id",
    }
)


class StorageError(ValueError):
    """A data location that cannot be used; the message says which and what to fix."""


REDACTED = "***"
# Keys whose values are credentials: written nowhere (config.yaml, checkpoints, W&B, logs).
SECRET_KEY = re.compile(
    r"secret|token|passw|credential|private_?key|api_?key|access_?key",
    re.IGNORECASE,
)


NOT_SECRET = frozenset({"tokens"})  # model.net.init_args.tokens: token switches, no credential


def is_secret_key(name: object) -> bool:
    """Whether a config key names a credential (``aws_secret_access_key``, ``*_token``, ...)."""
    return isinstance(name, str) and name not in NOT_SECRET and bool(SECRET_KEY.search(name))


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, namespaces) with every value under a secret-named key
    replaced by ``***``: what may be written to files and loggers."""
    items = getattr(obj, "items", None)
    if callable(items) and not isinstance(obj, str):
        out = {k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact(v))
               for k, v in items()}  # fmt: skip
        try:
            return type(obj)(out)
        except Exception:
            return out
    if isinstance(obj, list | tuple):
        return type(obj)(redact(v) for v in obj)
    return obj


def secret_values(obj: Any) -> set[str]:
    """The string values under secret-named keys anywhere in ``obj`` (to scrub them from text
    such as the process's own command line)."""
    found: set[str] = set()
    items = getattr(obj, "items", None)
    if callable(items) and not isinstance(obj, str):
        for k, v in items():
            if is_secret_key(k) and isinstance(v, str) and v and v != REDACTED:
                found.add(v)
            else:
                found |= secret_values(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            found |= secret_values(v)
    return found


def scrub(text: str, secrets: set[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``***``."""
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def _seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        raise StorageError(f"{name}={os.environ[name]!r}: expected seconds (a number)") from None


def request_timeout() -> float:
    """Seconds a storage request may wait to connect or for its next bytes before it counts as
    failed (``LIGHTNING_TSF_STORAGE_TIMEOUT``, default 30)."""
    return _seconds("LIGHTNING_TSF_STORAGE_TIMEOUT", 30.0)


def retry_window() -> float:
    """Seconds an outage is retried (backoff 0.5 s doubling to 15 s) before it stops training
    (``LIGHTNING_TSF_STORAGE_RETRY``, default 300)."""
    return _seconds("LIGHTNING_TSF_STORAGE_RETRY", 300.0)


def is_remote(url: str | os.PathLike[str]) -> bool:
    """Whether ``url`` is an object-storage URL (``s3://``, ``gs://``, ``azure://``)."""
    return urlparse(os.fspath(url)).scheme in REMOTE_SCHEMES


def _scheme(url: str) -> str:
    return urlparse(url).scheme


def bucket_of(url: str) -> str:
    """The bucket (``s3://BUCKET/prefix``) of a remote URL."""
    return urlparse(url).netloc


def storage_options(url: str | os.PathLike[str], given: Mapping[str, Any] | None = None) -> dict:
    """Connection options for litdata (``storage_options=``) for data at ``url``.

    For ``s3://``: ``given`` (the config's ``data.storage.options``) wins; otherwise the endpoint
    comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` and the region from ``AWS_REGION`` or
    ``AWS_DEFAULT_REGION``. Keys are boto3's ``client("s3", ...)`` keywords (``endpoint_url``,
    ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``, ``region_name``),
    which is what litdata hands to boto3. Credentials not given are left to boto3's own chain
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, an instance role), so secrets
    from the environment are never copied into a dict that might be logged or saved.
    Local paths get ``{}``; other schemes get ``given`` as it is. Values ``***`` (a
    redacted config written by a run) are dropped.
    """
    url = os.fspath(url)
    # a value redacted in a saved config (``***``) is no credential: boto3's chain finds it
    options = {k: v for k, v in dict(given or {}).items() if v != REDACTED}
    if not is_remote(url):
        return {}
    if _scheme(url) != "s3":
        return options
    unknown = sorted(set(options) - S3_OPTION_KEYS)
    if unknown:
        raise StorageError(
            f"data.storage.options for {url}: unknown key(s) {', '.join(unknown)}; "
            f"use boto3's names: {', '.join(sorted(S3_OPTION_KEYS - {'config', 'verify'}))}"
        )
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and not options.get("endpoint_url"):
        options["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region and not options.get("region_name"):
        options["region_name"] = region
    return options


def allow_plain_http(endpoint: str | None) -> bool:
    """Let litdata's obstore client use a plain ``http://`` endpoint; True when it was needed.

    Why: litdata 0.2.76 downloads and uploads chunks with obstore, whose ``S3Store`` refuses
    ``http://`` URLs unless its client option ``allow_http`` is set ("HTTP error: builder
    error"), and litdata builds every store from the module dict
    ``litdata.streaming.downloader._OBSTORE_CLIENT_OPTIONS`` without it. So a loopback test
    server or an on-prem MinIO/Ceph endpoint on plain HTTP fails while boto3 (index.json) works.
    Setting ``AWS_ALLOW_HTTP`` does not help: litdata's explicit client options win over it.
    The dict is per process: a spawned DataLoader worker re-imports litdata, so the loader must
    also run :func:`.stream_input.worker_init` in its workers. Idempotent; ``https://`` and no
    endpoint change nothing. Remove when litdata passes ``allow_http`` for http endpoints itself.
    """
    if not endpoint or urlparse(endpoint).scheme != "http":
        return False
    from litdata.streaming import downloader

    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if not isinstance(options, dict):
        raise StorageError(
            f"cannot allow plain HTTP for {endpoint}: this litdata version has no "
            "litdata.streaming.downloader._OBSTORE_CLIENT_OPTIONS dict (written for 0.2.76); "
            "use an https:// endpoint or pip install --no-deps litdata==0.2.76"
        )
    options["allow_http"] = "true"
    return True


def error_code(exc: Exception) -> str:
    """The S3 error code (``NoSuchKey``, ``AccessDenied``) or HTTP status of a boto3 error."""
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Code", "")) or str(
        (response.get("ResponseMetadata", {}) if isinstance(response, dict) else {}).get(
            "HTTPStatusCode", ""
        )
    )


def s3_client(
    url: str, options: Mapping[str, Any] | None = None, *, resolved: bool = False
) -> tuple[Any, str, str]:
    """The one boto3 S3 client factory: ``(client, bucket, key)`` for ``url``.

    ``options``: the config's ``data.storage.options`` (``resolved``: already
    :func:`storage_options`' result). Bounded waits (:func:`request_timeout` to connect and per
    read, two attempts), so a dead endpoint is an error in seconds, not a hang."""
    import boto3
    import botocore.config

    opts = dict(options or {}) if resolved else storage_options(url, options)
    opts.pop("data_connection_id", None)
    given = opts.pop("config", None)
    timeout = request_timeout()
    config = botocore.config.Config(
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=timeout,
        read_timeout=timeout,
    )
    parsed = urlparse(url)
    client = boto3.client("s3", config=config.merge(given) if given else config, **opts)
    return client, parsed.netloc, parsed.path.lstrip("/")


def check_remote(
    url: str | os.PathLike[str], options: Mapping[str, Any] | None = None, *, index: bool = False
) -> None:
    """Before any work, make sure the bucket of ``url`` is there and the credentials are accepted.

    Raises one-line :class:`StorageError`\\ s naming the URL, the endpoint and what to fix: a
    missing bucket, rejected or missing credentials, an unreachable endpoint, and with
    ``index=True`` (reading) a prefix without litdata's ``index.json`` (nothing sharded there).
    Local paths and non-S3 schemes are not checked here (litdata reports those itself).
    ``options`` are :func:`storage_options`' result.
    """
    url = os.fspath(url)
    if not is_remote(url) or _scheme(url) != "s3":
        return
    import botocore.exceptions

    endpoint = dict(options or {}).get("endpoint_url") or "AWS S3"
    bucket = bucket_of(url)
    prefix = urlparse(url).path.strip("/")
    where = f"{url} (endpoint {endpoint})"
    if not bucket:
        raise StorageError(f"{url}: no bucket in the URL; write s3://BUCKET/PREFIX")
    client, _, _ = s3_client(url, options, resolved=True)
    try:
        client.head_bucket(Bucket=bucket)
        if index:
            key = f"{prefix}/index.json" if prefix else "index.json"
            try:
                client.head_object(Bucket=bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    raise StorageError(
                        f"{where}: no index.json under this prefix: nothing sharded there; "
                        "run `tsf shard SRC OUT` with this URL as OUT, or fix the URL"
                    ) from None
                raise
    except botocore.exceptions.NoCredentialsError:
        raise StorageError(
            f"{where}: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or an AWS profile), or data.storage.options"
        ) from None
    except botocore.exceptions.EndpointConnectionError:
        raise StorageError(
            f"{where}: cannot connect to the endpoint; check AWS_ENDPOINT_URL or "
            "data.storage.options.endpoint_url and that the server is up"
        ) from None
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(
                f"{where}: bucket '{bucket}' does not exist; create it or fix the URL"
            ) from None
        if code == "403":  # HEAD replies carry no body: ask again for the reason
            try:
                client.list_objects_v2(Bucket=bucket, MaxKeys=1)
            except botocore.exceptions.ClientError as again:
                code = error_code(again) or code
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise StorageError(
                f"{where}: access to bucket '{bucket}' denied ({code}); check "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or data.storage.options and the "
                "bucket's permissions"
            ) from None
        raise StorageError(f"{where}: {code or type(exc).__name__}: {exc}") from None


def default_cache_dir() -> Path:
    """Root of the local chunk cache for remote streams.

    ``$LIGHTNING_TSF_CACHE/streams``, else ``~/.cache/lightning_tsf/streams``. litdata keeps
    one sub-folder per URL (and per version of its index.json) below it.
    """
    root = os.environ.get("LIGHTNING_TSF_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "lightning_tsf"
    return base / "streams"


def output_dir(url: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> dict:
    """Keyword arguments for ``litdata.optimize`` to write shards to ``url``.

    ``{"output_dir": ..., "storage_options": ...}``: an absolute folder for a local path, the URL
    and :func:`storage_options` for a remote one (plain-HTTP endpoints allowed on the way).
    """
    url = os.fspath(url)
    if not is_remote(url):
        return {"output_dir": str(Path(url).expanduser().absolute()), "storage_options": {}}
    opts = storage_options(url, options)
    allow_plain_http(opts.get("endpoint_url"))
    return {"output_dir": url, "storage_options": opts}


@contextmanager
def keep_start_method() -> Iterator[None]:
    """Undo ``litdata.optimize``'s process-wide ``multiprocessing.set_start_method("spawn")``.

    optimize forces the start method for the whole process; wrap it in this so later
    DataLoaders (and other code) keep the start method they had.
    """
    before = multiprocessing.get_start_method(allow_none=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(before, force=True)
