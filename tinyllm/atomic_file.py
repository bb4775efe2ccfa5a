"""Output files that appear whole or not at all.

Every file tinyllm writes (a quantized GGUF, an imatrix, a KL-divergence base) goes to a temp
file beside its target, named `.NAME.tinyllm-PID-XXXX.tmp`, and is renamed over the target
only once it is complete; any exception (Ctrl+C and SIGTERM included, see cli.main) removes
the temp file. A process killed outright (SIGKILL, a crash) cannot clean up: the next write
of the same target removes such files when their PID no longer runs.

    with atomic_write(path) as f:      # one block of writes
        f.write(data)

    out = TempOutput(path)             # writes spread over calls
    out.file.write(...); out.publish() # or out.discard()
"""
import contextlib
import os
import re
import tempfile
from pathlib import Path


class TempOutput:
    """A temp file beside `path` (stale ones of dead tinyllm processes removed first), opened
    for binary writing as `.file`; publish() renames it over `path`, discard() removes it.
    Raises OSError when the temp file cannot be made."""

    def __init__(self, path):
        self.path = Path(path)
        remove_stale_temp_files(self.path)
        fd, self.tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.tinyllm-{os.getpid()}-", suffix=".tmp", dir=self.path.parent
        )
        self.file = os.fdopen(fd, "wb")

    def publish(self, fsync: bool = True) -> None:
        """Flush (and fsync), give the file the permissions a plain open() would (mkstemp makes
        0600), and rename it over the target."""
        self.file.flush()
        if fsync:
            os.fsync(self.file.fileno())
        self.file.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Remove the temp file; safe to call twice, and after a failed write or publish."""
        try:
            self.file.close()  # (flushes what is buffered: on a full disk that fails too)
        except OSError:
            pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


@contextlib.contextmanager
def atomic_write(path, fsync: bool = True):
    """A binary file for `path`: the target appears when the block ends without an exception,
    and is untouched otherwise. Raises OSError when the temp file cannot be made."""
    out = TempOutput(path)
    try:
        yield out.file
        out.publish(fsync)
    except BaseException:
        out.discard()
        raise


def remove_stale_temp_files(path) -> list[Path]:
    """Remove the temp files a killed tinyllm process left beside `path` (SIGKILL, a crash):
    `.NAME.tinyllm-PID-*.tmp` of a PID that no longer runs, owned by this user.
    Returns the files removed."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tinyllm-(\d+)-[^/]*\.tmp")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for e in entries:
        m = pattern.fullmatch(e.name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            if not e.is_file(follow_symlinks=False) or e.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            os.kill(int(m.group(1)), 0)
            continue  # that process still runs: its file is in use
        except ProcessLookupError:
            pass
        except (PermissionError, OSError, OverflowError):
            continue  # someone else's process (or a pid that cannot be checked): leave it
        try:
            os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            pass
    return removed
