"""Progress records inside a stage's unfinished output, so that a killed run continues.

A stage that appends to files in its working directory calls `ProgressLog.save` after each unit
of work whose output it has flushed. The record (`.progress.json`, replaced atomically) holds the
sizes of those files and whatever the stage needs to continue (counts, position). A new run on
the same directory calls `resume`: when the record was made for the same input and settings
(`key`), the files are cut back to the recorded sizes (dropping output written after the last
record) and the record is returned; otherwise the files are emptied and the stage starts over.

`PREPROCESS_KILL_AFTER_RECORDS=N` makes the process SIGKILL itself right after its N-th record:
the tests use it to kill a run at a known point. `exit_with(pid)`, a pool initializer, makes a
worker exit once the main process is gone: a worker blocked on its task queue would otherwise
outlive a killed run (the queue's other end lives on in the workers themselves).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

RECORD = ".progress.json"
_KILL_AFTER = "PREPROCESS_KILL_AFTER_RECORDS"
_saved = 0  # records written by this process


class ProgressLog:
    def __init__(self, directory: str | Path, key: dict):
        self.dir = Path(directory)
        self.path = self.dir / RECORD
        self.key = json.loads(json.dumps(key))  # as it reads back from the file

    def resume(self, files: list[str]) -> dict | None:
        """The last record if it is for this key, with `files` cut back to its sizes; else None,
        with `files` emptied."""
        record = None
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        if not isinstance(record, dict) or record.get("key") != self.key:
            record = None
        for name in files:
            path = self.dir / name
            size = record["files"].get(name, 0) if record else 0
            if (path.stat().st_size if path.exists() else 0) < size:
                return self._start_over(files)  # shorter than recorded: start over
            with open(path, "ab") as f:
                f.truncate(size)
        return record

    def _start_over(self, files: list[str]) -> None:
        for name in files:
            open(self.dir / name, "wb").close()
        self.clear()
        return None

    def save(self, files: dict, **state) -> None:
        """Record the state after the output in `files` ({name: open binary file}) is flushed."""
        global _saved
        sizes = {}
        for name, f in files.items():
            f.flush()
            sizes[name] = f.tell()
        tmp = self.path.with_name(RECORD + ".tmp")
        tmp.write_text(json.dumps({"key": self.key, "files": sizes, **state}, ensure_ascii=False),
                       encoding="utf-8")
        os.replace(tmp, self.path)
        _saved += 1
        if _saved == int(os.environ.get(_KILL_AFTER, "0") or 0):
            os.kill(os.getpid(), signal.SIGKILL)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def exit_with(pid: int, interval: float = 1.0) -> None:
    """Pool initializer: end this worker soon after process `pid` ends (is gone or a zombie)."""

    def watch() -> None:
        while True:
            time.sleep(interval)
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                    if f.read().rpartition(")")[2].split()[0] == "Z":
                        os._exit(1)
            except FileNotFoundError:
                os._exit(1)
            except OSError:  # no /proc: the process can still be probed
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-main").start()
