"""Has a file changed? The one check the token and certificate reloaders share."""

from __future__ import annotations

import os
from typing import NamedTuple


class FileStamp(NamedTuple):
    """What os.stat says of a file (through its symlinks): a change in any part means new content. The inode
    catches a Kubernetes Secret volume's atomic symlink swap even when the new file has the old size and mtime."""

    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: str) -> FileStamp:
        """The file's stamp; raises OSError when it cannot be stat'ed."""
        st = os.stat(path)
        return cls(st.st_ino, st.st_mtime_ns, st.st_size)

    @classmethod
    def maybe(cls, path: str) -> FileStamp | None:
        """The file's stamp, or None when it cannot be stat'ed."""
        try:
            return cls.of(path)
        except OSError:
            return None
