"""One run, one folder: a lock on ``trainer.default_root_dir`` while a run writes there.

Two runs in one folder mix silently: the later one's ``config.yaml`` sits beside the other's
checkpoints and ``--ckpt_path latest`` resumes the wrong weights. So the launching process of
``tsf fit/validate/test/predict`` takes ``<root>/.tsf-run.lock`` first; a second run there
refuses in one line naming the folder and the live run (process id, host, command, start).

Why a lock and not a version folder per run: the run folder is the unit operators work with
(``--ckpt_path latest`` after a crash or a SLURM requeue resumes *this* folder's run; scripts
and the docs point at ``<root>/checkpoints``), and a version folder per start would scatter one
run over several folders and make "latest" ambiguous again.

Stale locks cannot stick: the lock is an ``flock`` the kernel drops when the holder dies (kill
-9, crash, node reboot), so nothing is left to clean up. Where a file system refuses ``flock``
the file's content decides: a holder on this host whose process is gone is stale and taken over;
one on another host (its process cannot be checked from here) counts as live for
``STALE_AFTER_S`` after its start.
Only global rank zero locks (other DDP ranks and SLURM tasks of the same run share the folder).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".tsf-run.lock"
STALE_AFTER_S = 7 * 24 * 3600  # no-flock fallback only: a holder on another host, unverifiable
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "GROUP_RANK")


class RunLockError(RuntimeError):
    """Another live run holds the folder; the message names it and what to do."""


def is_launching_process() -> bool:
    """Whether this process is the run's global rank zero (not a DDP child or another SLURM
    task of the same run), from the variables launchers set."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The lock of one run folder; :meth:`acquire` then :meth:`release` (or process exit)."""

    def __init__(self, root: str | os.PathLike[str], what: str = "tsf") -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def _refuse(self, holder: dict) -> RunLockError:
        since = holder.get("started")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
        return RunLockError(
            f"{self.root.absolute()}: another run is live in this folder (pid "
            f"{holder.get('pid', '?')} on {holder.get('host', '?')}: {holder.get('what', '?')}, "
            f"since {when}); wait for it or stop it, or give this run its own "
            "trainer.default_root_dir"
        )

    def acquire(self) -> None:
        """Take the folder or raise :class:`RunLockError` naming the run that has it."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._refuse(self._holder()) from None
        except OSError as err:  # no flock here (some network file systems): the file decides
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            holder = self._holder()
            if holder and not self._stale(holder):
                os.close(fd)
                raise self._refuse(holder) from None
        self._fd = fd
        record = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                  "started": time.time()}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)

    def _stale(self, holder: dict) -> bool:
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            return True
        if holder.get("host") == socket.gethostname():
            return not _alive(int(holder.get("pid", 0) or 0))
        return time.time() - float(holder.get("started") or 0) > STALE_AFTER_S

    def release(self) -> None:
        """Give the folder back (emptying the record; the file stays, harmless)."""
        if self._fd is None:
            return
        import fcntl

        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None
