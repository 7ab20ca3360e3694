"""Where shard data lives: local folders or object storage (S3 and S3-compatible servers).

Everything about locations for ``tsf shard`` (writing with ``litdata.optimize``) and for training
from streams (``litdata.StreamingDataset``) goes through these functions, so endpoints,
credentials, the local cache and the plain-HTTP fix are decided in one place:

- :func:`is_remote`: ``s3://``, ``gs://``, ``azure://`` URLs (only S3 is tested here).
- :func:`storage_options`: endpoint and region for litdata (boto3 client keywords), from
  ``data.storage.options`` or the usual AWS variables.
- :func:`check_remote`: one clear :class:`StorageError` before training for a missing bucket,
  rejected credentials or an unreachable endpoint, instead of retries and a traceback later.
- :func:`output_dir` / :func:`input_dir`: keyword arguments for ``litdata.optimize`` and
  ``litdata.StreamingDataset``; :func:`worker_init` for the loader's workers.
- :func:`allow_plain_http`: litdata 0.2.76 cannot talk to ``http://`` endpoints without it.

litdata and boto3 are imported inside functions: ``import lightning_tsf`` stays light, and
litdata is an optional install (the ``shards`` extra, see docs/data.md).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
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
    Local paths get ``{}``; other schemes get ``given`` as it is.
    """
    url = os.fspath(url)
    options = dict(given or {})
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
    also run :func:`worker_init` in its workers. Idempotent; ``https://`` and no endpoint change
    nothing. Remove when litdata passes ``allow_http`` for http endpoints itself.
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


@dataclass(frozen=True)
class worker_init:  # noqa: N801 - used like a function: worker_init(options)
    """``worker_init_fn`` for a ``StreamingDataLoader``: :func:`allow_plain_http` in each worker.

    Needed with spawned workers (litdata's ``optimize`` switches the process to ``spawn``), which
    re-import litdata without the fix. Picklable; ``then`` is called after it (chaining).
    """

    options: Mapping[str, Any] | None = None
    then: Callable[[int], None] | None = None

    def __call__(self, worker_id: int) -> None:
        allow_plain_http((self.options or {}).get("endpoint_url"))
        if self.then is not None:
            self.then(worker_id)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Code", "")) or str(
        (response.get("ResponseMetadata", {}) if isinstance(response, dict) else {}).get(
            "HTTPStatusCode", ""
        )
    )


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
    import boto3
    import botocore.config
    import botocore.exceptions

    options = dict(options or {})
    options.pop("data_connection_id", None)
    options.pop("config", None)
    endpoint = options.get("endpoint_url") or "AWS S3"
    bucket = bucket_of(url)
    prefix = urlparse(url).path.strip("/")
    where = f"{url} (endpoint {endpoint})"
    if not bucket:
        raise StorageError(f"{url}: no bucket in the URL; write s3://BUCKET/PREFIX")
    client = boto3.client(
        "s3",
        config=botocore.config.Config(
            retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=20
        ),
        **options,
    )
    try:
        client.head_bucket(Bucket=bucket)
        if index:
            key = f"{prefix}/index.json" if prefix else "index.json"
            try:
                client.head_object(Bucket=bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
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
            "data.storage_options.endpoint_url and that the server is up"
        ) from None
    except botocore.exceptions.ClientError as exc:
        code = _error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(
                f"{where}: bucket '{bucket}' does not exist; create it or fix the URL"
            ) from None
        if code == "403":  # HEAD replies carry no body: ask again for the reason
            try:
                client.list_objects_v2(Bucket=bucket, MaxKeys=1)
            except botocore.exceptions.ClientError as again:
                code = _error_code(again) or code
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


def input_dir(
    url: str | os.PathLike[str],
    options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    max_cache_size: int | str | None = None,
) -> dict:
    """Keyword arguments for ``litdata.StreamingDataset`` to read shards at ``url``.

    Local folder: ``{"input_dir": absolute path}`` (read in place, no cache). Remote:
    ``input_dir`` (the URL), ``cache_dir`` (``cache_dir`` or :func:`default_cache_dir`; litdata
    adds a folder per URL and index version, so a re-sharded prefix is not read stale),
    ``max_cache_size`` (bytes or ``"50GB"``; ``None``: litdata's default, 75% of free disk) and
    ``storage_options``. Plain-HTTP endpoints are allowed in this process; pass
    :func:`worker_init` to the loader for its workers.
    """
    url = os.fspath(url)
    if not is_remote(url):
        path = Path(url).expanduser().absolute()
        if not (path / "index.json").is_file():
            raise StorageError(
                f"{path}: no index.json: nothing sharded there; run `tsf shard SRC {url}` "
                "or fix the path"
            )
        return {"input_dir": str(path)}
    opts = storage_options(url, options)
    allow_plain_http(opts.get("endpoint_url"))
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    return {
        "input_dir": url,
        "cache_dir": str(cache.absolute()),
        "max_cache_size": max_cache_size,
        "storage_options": opts,
    }


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
