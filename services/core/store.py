"""The object store behind runs, tapes and analysis results: a local directory or an S3/MinIO bucket.

Both backends share one contract (the ``Store`` protocol) and are chosen by URL scheme:
``file:///abs/path`` or ``s3://bucket/optional/prefix``. Keys are '/'-separated relative paths.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import hashlib
import io
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

import numpy as np

if TYPE_CHECKING:
    from netlapse.core.settings import Settings

# Temporary files of in-flight LocalStore writes carry this prefix; list() never shows them.
_TMP_PREFIX = ".tmp-"
# LocalStore writes a buffer of at least DIRECT_MIN_BYTES that starts on a DIRECT_ALIGN boundary with O_DIRECT
# (LocalStore._write_direct); the tape writer assembles its segments in buffers aligned so.
DIRECT_ALIGN = 4096
DIRECT_MIN_BYTES = 1 << 20


class StoreError(Exception):
    """Any failure of the object store (other than bad arguments, which are ValueError)."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the object changed, vanished, or (for a create) already exists."""


# Objects whose write commits other objects (readers trust what they list): on local disk they are fsynced,
# together with the objects written before them, so a crash never leaves a commit pointing at lost data.
COMMIT_NAMES = frozenset({"manifest.json", "compaction.json", "run.json"})


def is_commit_key(key: str) -> bool:
    """Whether ``key`` names a commit object (see COMMIT_NAMES), or a tape's index part (``…/index/N.json``,
    which lists the segment written before it: docs/performance.md)."""
    parts = key.rsplit("/", 2)
    if parts[-1] in COMMIT_NAMES:
        return True
    return len(parts) >= 2 and parts[-2] == "index" and parts[-1].endswith(".json")


def content_etag(data: bytes) -> str:
    """The version tag LocalStore gives an object: a digest of its bytes."""
    return hashlib.sha256(data).hexdigest()[:32]


class ObjectNotFound(StoreError, KeyError):
    """The key names no object. ``key`` holds the missing key."""

    def __init__(self, key: str, where: str = "") -> None:
        self.key = key
        msg = f"object not found: {key!r}" + (f" in {where}" if where else "")
        super().__init__(msg)
        self.message = msg

    def __str__(self) -> str:  # KeyError would repr() the message, adding quotes
        return self.message


@runtime_checkable
class Store(Protocol):
    """What every backend offers. Implementations are safe to use from several threads.

    ``put`` takes any bytes-like ``data`` (the tape writer passes views of buffers it reuses once ``put``
    has returned): a backend that keeps the data beyond the call must copy it."""

    url: str

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def get_range(self, key: str, offset: int, length: int) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def list(self, prefix: str) -> list[str]: ...
    def children(self, prefix: str) -> builtins.list[str]: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def put_json(self, key: str, obj: Any) -> None: ...
    def get_json(self, key: str) -> Any: ...
    def get_versioned(self, key: str) -> tuple[bytes, str]: ...
    def put_if(self, key: str, data: bytes, etag: str | None) -> str: ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ValueError saying why."""
    if not isinstance(key, str) or not key:
        raise ValueError("store key must be a non-empty string")
    if key.startswith("/"):
        raise ValueError(f"store key must not start with '/': {key!r}")
    if key.endswith("/"):
        raise ValueError(f"store key must not end with '/' (that is a prefix): {key!r}")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"store key must not contain backslashes or NUL: {key!r}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"store key must not contain empty, '.' or '..' segments: {key!r}")
    if any(p.startswith(_TMP_PREFIX) for p in parts):
        raise ValueError(f"store key segments must not start with {_TMP_PREFIX!r}: {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a valid listing prefix ('' means everything), else raise ValueError."""
    if not isinstance(prefix, str):
        raise ValueError("store prefix must be a string")
    if prefix == "":
        return prefix
    # A prefix may end mid-segment ('runs/ab' matches 'runs/abc/x'), so validate it as a key sans trailing '/'.
    validate_key(prefix.rstrip("/") if prefix.endswith("/") and prefix != "/" else prefix)
    if prefix.endswith("//"):
        raise ValueError(f"store prefix must not end with '//': {prefix!r}")
    return prefix


def _check_range(offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError(f"get_range needs offset >= 0 and length >= 0, got offset={offset}, length={length}")


class JsonStoreMixin:
    """JSON helpers shared by the backends (UTF-8, compact, keys in insertion order)."""

    def put(self, key: str, data: bytes) -> None:  # pragma: no cover - provided by the backend
        raise NotImplementedError

    def get(self, key: str) -> bytes:  # pragma: no cover - provided by the backend
        raise NotImplementedError

    def put_json(self, key: str, obj: Any) -> None:
        """Store ``obj`` as JSON under ``key`` (atomically, like put)."""
        self.put(key, json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8"))

    def get_json(self, key: str) -> Any:
        """Read the JSON object stored under ``key``; ObjectNotFound if absent, StoreError if not JSON."""
        data = self.get(key)
        try:
            return json.loads(data)
        except ValueError as e:
            raise StoreError(f"object {key!r} is not valid JSON: {e}") from e


def _private_dirs(path: Path) -> None:
    """``mkdir -p`` whose new directories are 0700 (``Path.mkdir(parents=True)`` gives parents the default)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made meanwhile by another writer
    if not path.is_dir():
        raise NotADirectoryError(str(path))


def aligned_empty(n: int) -> np.ndarray:
    """An uninitialized uint8 array of ``n`` bytes starting on a DIRECT_ALIGN boundary: a buffer LocalStore
    can write with O_DIRECT (the tape writer assembles its segments in these)."""
    raw = np.empty(n + DIRECT_ALIGN, dtype=np.uint8)
    off = -raw.ctypes.data % DIRECT_ALIGN
    return raw[off : off + n]


class LocalStore(JsonStoreMixin):
    """A store in a local directory. Writes go to a temporary file renamed into place, so they are atomic."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        _private_dirs(self.root)
        os.chmod(self.root, 0o700)  # tokens' hashes, run records and tapes: this account's only
        self.url = self.root.as_uri()
        self._unsynced: set[Path] = set()  # written since the last commit object, not yet fsynced
        self._unsynced_lock = threading.Lock()
        self._direct = True  # large aligned writes use O_DIRECT until the file system refuses it

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key``; a concurrent reader sees the old object or the new one, never a mix."""
        path = self._path(key)
        try:
            _private_dirs(path.parent)
        except (FileExistsError, NotADirectoryError) as e:
            raise StoreError(f"cannot put {key!r}: an object is stored where a prefix of it should be") from e
        if path.is_dir():
            raise StoreError(f"cannot put {key!r}: a prefix of that name holds other objects")
        self._write(path, data, durable=is_commit_key(key))

    def _write(self, path: Path, data: bytes, durable: bool) -> None:
        """Temp file + rename. ``durable``: fsync the objects written before, this file, and its directory."""
        tmp = path.parent / f"{_TMP_PREFIX}{path.name}.{uuid.uuid4().hex}"
        try:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                done = self._write_direct(f.fileno(), data)  # before anything passes f's own buffer
                f.write(memoryview(data)[done:] if done else data)
                if durable:
                    self._sync_pending()
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if durable:
            _fsync_dir(path.parent)
        else:
            with self._unsynced_lock:
                self._unsynced.add(path)

    def _write_direct(self, fd: int, data: bytes) -> int:
        """Write the head of a large, page-aligned buffer (a tape segment assembled by the writer) with
        O_DIRECT: the disk reads it straight from ``data``, with no copy into fresh page-cache pages — on this
        project's VM 0.4-0.6 ms of CPU per 8.8 MB segment against 2.9-3.9 ms buffered (docs/performance.md),
        CPU the capture writer would take from training. Returns the bytes written (a multiple of
        DIRECT_ALIGN; 0 when the buffer does not qualify or the file system refuses O_DIRECT, which is then
        not tried again). The caller writes the rest through ``fd``'s buffered path, and the file is fsynced
        by the next commit object like any other (O_DIRECT alone does not make it durable)."""
        n = len(data)
        if not self._direct or n < DIRECT_MIN_BYTES or not hasattr(os, "O_DIRECT"):
            return 0
        try:
            if np.frombuffer(data, dtype=np.uint8).ctypes.data % DIRECT_ALIGN:
                return 0
        except (TypeError, ValueError):  # not a contiguous byte buffer
            return 0
        head = n - n % DIRECT_ALIGN
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        done = 0
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
        except OSError:  # EINVAL: this file system has no O_DIRECT (tmpfs before Linux 6.6, some FUSE mounts)
            self._direct = False
            return 0
        view = memoryview(data)
        try:
            while done < head:
                w = os.write(fd, view[done:head])
                if w <= 0 or w % DIRECT_ALIGN:
                    done += max(w, 0)
                    break  # a short, unaligned write: the rest goes through the page cache
                done += w
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self._direct = False  # the device wants a larger alignment: buffered from here on
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        os.lseek(fd, done, os.SEEK_SET)
        return done

    def drop_cached(self, key: str) -> None:
        """Ask the kernel to drop ``key``'s file from the page cache once it is on disk (the tape writer does
        this for each segment it has committed). On VMs that return free memory to their host, every fresh
        page-cache page costs a host fault: writing new files ran at ~0.4 GB/s of CPU there, ~2.4 GB/s when
        the pages dropped here are reused for the next segment. A later read comes from the disk. Unsynced
        or missing files and systems without posix_fadvise are left alone."""
        path = self._path(key)
        with self._unsynced_lock:
            if path in self._unsynced:
                return  # dirty pages would not be dropped, only written back early
        if not hasattr(os, "posix_fadvise"):
            return
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def _sync_pending(self) -> None:
        """fsync the objects (and their directories) written since the last commit object."""
        with self._unsynced_lock:
            pending, self._unsynced = self._unsynced, set()
        for p in pending:
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue  # deleted meanwhile
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for d in {p.parent for p in pending}:
            _fsync_dir(d)

    def _key_lock(self, key: str) -> Any:
        """An exclusive cross-process lock for conditional writes of ``key`` (a lock file under the root)."""
        lock_dir = self.root / f"{_TMP_PREFIX}locks"
        _private_dirs(lock_dir)
        name = lock_dir / hashlib.sha256(key.encode()).hexdigest()[:40]
        f = os.fdopen(os.open(name, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+b")
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        return f

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object and its version tag (pass the tag to put_if to write only over this version)."""
        data = self.get(key)
        return data, content_etag(data)

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        """Write ``data`` only if the object is still at version ``etag`` (None: only if it does not exist).

        Raises PreconditionFailed otherwise (changed, deleted, or already created). Returns the new tag.
        The write is fsynced (file and directory): conditional writes are commit points."""
        path = self._path(key)
        lock = self._key_lock(key)
        try:
            try:
                current: str | None = content_etag(path.read_bytes())
            except (FileNotFoundError, NotADirectoryError):
                current = None
            if current != etag:
                what = "already exists" if etag is None else ("was deleted" if current is None else "changed")
                raise PreconditionFailed(f"conditional write of {key!r} in {self.url}: the object {what}")
            try:
                _private_dirs(path.parent)
            except (FileExistsError, NotADirectoryError) as e:
                raise StoreError(f"cannot put {key!r}: an object is stored where a prefix should be") from e
            self._write(path, data, durable=True)
        finally:
            lock.close()  # releases the flock
        return content_etag(data)

    def get(self, key: str) -> bytes:
        """The whole object under ``key``."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key, self.url) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``; shorter at the end of the object, b'' past it."""
        _check_range(offset, length)
        if length == 0:
            return b""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key, self.url) from None

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """The object's size in bytes."""
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key, self.url) from None
        if not path.is_file():
            raise ObjectNotFound(key, self.url)
        return st.st_size

    def _walk(self, prefix: str) -> Iterator[str]:
        # Start the walk at the deepest directory the prefix fully names, not at the root.
        base_parts = prefix.split("/")[:-1]
        base = self.root.joinpath(*base_parts) if base_parts else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(_TMP_PREFIX)]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    yield key

    def list(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix`` (recursive), sorted."""
        return sorted(self._walk(validate_prefix(prefix)))

    def children(self, prefix: str) -> builtins.list[str]:
        """Names of the 'folders' directly under ``prefix`` (which must end with '/'), sorted; not recursive."""
        validate_prefix(prefix)
        base = self.root.joinpath(*prefix.rstrip("/").split("/")) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith(_TMP_PREFIX))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix`` (must be non-empty); returns how many."""
        if not validate_prefix(prefix):
            raise ValueError("delete_prefix needs a non-empty prefix (refusing to empty the whole store)")
        count = 0
        dirs: set[Path] = set()
        for key in self.list(prefix):
            path = self._path(key)
            try:
                path.unlink()
                count += 1
            except FileNotFoundError:
                continue
            dirs.add(path.parent)
        # Remove directories left empty, deepest first, never the root.
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            while d != self.root and d.is_relative_to(self.root):
                try:
                    d.rmdir()
                except OSError:
                    break
                d = d.parent
        return count


class S3Store(JsonStoreMixin):
    """A store in an S3-compatible bucket (MinIO, AWS, moto) through the ``minio`` client."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint: str,
        access_key: str = "",
        secret_key: str = "",
        secure: bool = False,
        region: str = "us-east-1",
        create_bucket: bool = True,
    ) -> None:
        from minio import Minio  # imported lazily: a local-only deployment does not need it loaded

        if not bucket:
            raise ValueError("S3Store needs a bucket name")
        if not endpoint:
            raise ValueError("S3Store needs an endpoint (host:port of the S3/MinIO server)")
        endpoint, secure = _split_endpoint(endpoint, secure)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.endpoint = endpoint
        self.url = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.client = Minio(
            endpoint,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            region=region or None,
        )
        if create_bucket:
            self._ensure_bucket(region)

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint!r})"

    def _ensure_bucket(self, region: str) -> None:
        from minio.error import S3Error

        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket, location=region or None)
        except S3Error as e:
            # Another process may have created it between our check and our create.
            if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StoreError(f"cannot create bucket {self.bucket!r} at {self.endpoint}: {e}") from e

    def _name(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _wrap(self, e: Exception, key: str, what: str) -> StoreError:
        from minio.error import S3Error

        if isinstance(e, S3Error) and e.code in ("NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"):
            return ObjectNotFound(key, self.url)
        return StoreError(f"{what} {key!r} in {self.url} failed: {e}")

    def put(self, key: str, data: bytes) -> None:
        """Upload ``data`` under ``key`` (a single PUT for objects this project writes, so it is atomic)."""
        name = self._name(key)
        try:
            self.client.put_object(self.bucket, name, io.BytesIO(data), len(data))
        except Exception as e:
            raise self._wrap(e, key, "put") from e

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object and its ETag (pass it to put_if to write only over this version)."""
        name = self._name(key)
        resp = None
        try:
            resp = self.client.get_object(self.bucket, name)
            return resp.read(), str(resp.headers.get("etag", "")).strip('"')
        except Exception as e:
            raise self._wrap(e, key, "get") from e
        finally:
            if resp is not None:
                resp.close()
                resp.release_conn()

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        """A conditional PUT: ``If-Match: etag`` (or ``If-None-Match: *`` for a create). Raises
        PreconditionFailed when the object changed, was deleted or already exists. Returns the new ETag.

        S3, MinIO and moto honour both headers; a server that ignored them would make this a plain put."""
        from minio.error import S3Error

        name = self._name(key)
        headers: dict[str, str | list[str] | tuple[str]] = {"Content-Type": "application/octet-stream"}
        if etag is None:
            headers["If-None-Match"] = "*"
        else:
            headers["If-Match"] = f'"{etag}"'
        try:
            res = self.client._put_object(self.bucket, name, data, headers=headers)
        except S3Error as e:
            if e.code in ("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict"):
                raise PreconditionFailed(f"conditional write of {key!r} in {self.url}: {e.code}") from e
            raise self._wrap(e, key, "put") from e
        except Exception as e:
            raise self._wrap(e, key, "put") from e
        return str(res.etag).strip('"')

    def _read(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        name = self._name(key)
        resp = None
        try:
            resp = self.client.get_object(self.bucket, name, offset=offset, length=length)
            return resp.read()
        except Exception as e:
            from minio.error import S3Error

            if isinstance(e, S3Error) and e.code == "InvalidRange":
                return b""  # offset at or past the end: same answer as a file read there
            raise self._wrap(e, key, "get") from e
        finally:
            if resp is not None:
                resp.close()
                resp.release_conn()

    def get(self, key: str) -> bytes:
        """The whole object under ``key``."""
        return self._read(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``; shorter at the end of the object, b'' past it."""
        _check_range(offset, length)
        if length == 0:
            return b""  # minio treats length=0 as "to the end"
        return self._read(key, offset, length)

    def _stat(self, key: str) -> Any:
        name = self._name(key)
        try:
            return self.client.stat_object(self.bucket, name)
        except Exception as e:
            raise self._wrap(e, key, "stat") from e

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        try:
            self._stat(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        """The object's size in bytes."""
        return int(self._stat(key).size)

    def list(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix`` (recursive), sorted."""
        validate_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            names = [
                o.object_name
                for o in self.client.list_objects(self.bucket, prefix=base + prefix, recursive=True)
                if o.object_name and not o.is_dir
            ]
        except Exception as e:
            raise self._wrap(e, prefix, "list") from e
        return sorted(n[len(base) :] for n in names)

    def children(self, prefix: str) -> builtins.list[str]:
        """Names of the 'folders' directly under ``prefix`` (which must end with '/'), sorted; not recursive."""
        validate_prefix(prefix)
        base = (f"{self.prefix}/" if self.prefix else "") + prefix
        try:
            objs = self.client.list_objects(self.bucket, prefix=base, recursive=False)
            names = [o.object_name[len(base) :].rstrip("/") for o in objs if o.object_name and o.is_dir]
        except Exception as e:
            raise self._wrap(e, prefix, "list") from e
        return sorted(n for n in names if n)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix`` (must be non-empty); returns how many."""
        from minio.deleteobjects import DeleteObject

        if not validate_prefix(prefix):
            raise ValueError("delete_prefix needs a non-empty prefix (refusing to empty the whole store)")
        keys = self.list(prefix)
        if not keys:
            return 0
        try:
            errors = list(
                self.client.remove_objects(self.bucket, (DeleteObject(self._name(k)) for k in keys))
            )
        except Exception as e:
            raise self._wrap(e, prefix, "delete_prefix") from e
        if errors:
            raise StoreError(
                f"delete_prefix {prefix!r} in {self.url}: {len(errors)} deletes failed: {errors[0]}"
            )
        return len(keys)


def _fsync_dir(d: Path) -> None:
    """Make a rename or unlink in directory ``d`` durable."""
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """Accept 'host:port' or 'http(s)://host:port'; the scheme, when given, decides ``secure``."""
    if "://" in endpoint:
        u = urlparse(endpoint)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError(f"S3 endpoint must be host:port or http(s)://host:port, got {endpoint!r}")
        return u.netloc, u.scheme == "https"
    return endpoint.rstrip("/"), secure


def open_store(
    url: str,
    *,
    endpoint: str = "",
    access_key: str = "",
    secret_key: str = "",
    secure: bool = False,
    region: str = "us-east-1",
) -> Store:
    """Open the store a URL names: ``file:///abs/path`` (LocalStore) or ``s3://bucket/prefix`` (S3Store)."""
    u = urlparse(url)
    if u.scheme == "file":
        if u.netloc not in ("", "localhost"):
            raise ValueError(f"file store URL must be file:///absolute/path, got {url!r}")
        path = unquote(u.path)
        if not path.startswith("/"):
            raise ValueError(f"file store URL must name an absolute path, got {url!r}")
        return LocalStore(path)
    if u.scheme == "s3":
        if not u.netloc:
            raise ValueError(f"S3 store URL must be s3://bucket[/prefix], got {url!r}")
        if not endpoint:
            raise ValueError(f"store URL {url!r} needs an S3 endpoint (host:port); set NETLAPSE_S3_ENDPOINT")
        return S3Store(
            u.netloc,
            prefix=unquote(u.path).strip("/"),
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
        )
    raise ValueError(f"unknown store URL scheme in {url!r}: use file:///abs/path or s3://bucket/prefix")


def store_from_settings(settings: Settings) -> Store:
    """The store the settings describe (``settings.resolved_store_url()`` plus the ``s3_*`` fields)."""
    return open_store(
        settings.resolved_store_url(),
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
    )
