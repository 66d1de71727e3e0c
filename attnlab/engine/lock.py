"""One process per run folder or ablation folder: an OS-level lock (``fcntl.flock``).

Two ``attnlab ablate`` (or ``train``) on one folder would both train everything and write
over each other's records. The lock file ``.attnlab.lock`` holds the holder's pid, host,
command and start time; the OS releases the lock when the process dies, even by kill -9,
so a stale lock file never blocks anyone.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import LockError
from .checkpoint import output_error

LOCK_FILE = ".attnlab.lock"


class FolderLock:
    """``with FolderLock(folder):`` holds ``folder`` for this process (``wait`` blocks for it)."""

    def __init__(self, folder: str | Path, *, wait: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.wait = wait
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> FolderLock:
        if self._fd is not None:
            return self
        self._created = not self.folder.exists()
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if not self.wait:
                    os.close(fd)
                    raise LockError(
                        f"{self.folder} is in use by {holder}; wait for it to finish, stop it, or "
                        "pass --wait to queue behind it"
                    ) from None
                print(f"waiting for {self.folder}: in use by {holder}", file=sys.stderr)
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file as we waited: lock the new one
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv[:6]),
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def _open(self) -> int:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise output_error(err, self.path) from err

    def release(self) -> None:
        """Unlock; a folder this lock created and nothing else wrote into is removed again."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            if self._created and [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
                self.path.unlink()
                self.folder.rmdir()
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a lock is never left held by a forgotten object
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return (f"process {info.get('pid')} on {info.get('host')} ({info.get('command', '?')}, "
            f"since {info.get('started', '?')})")
