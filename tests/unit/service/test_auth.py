"""Bearer-token files: re-read when they change, including a Kubernetes Secret's atomic symlink swap."""

from __future__ import annotations

import os
from pathlib import Path

from exporter.service.auth import TokenFile


def secret_volume(root: Path, token: str, version: str) -> Path:
    """A Secret volume as the kubelet writes one: `token -> ..data/token`, `..data -> ..<version>`."""
    data = root / f"..{version}"
    data.mkdir()
    (data / "token").write_text(token)
    link = root / "..data"
    if not link.exists():
        link.symlink_to(data.name)
        (root / "token").symlink_to("..data/token")
    return root / "token"


def swap(root: Path, version: str) -> None:
    """Point ..data at another version atomically (rename over the old link), as the kubelet does."""
    tmp = root / "..data_tmp"
    tmp.symlink_to(f"..{version}")
    os.replace(tmp, root / "..data")


def test_a_rotated_secret_is_seen_even_with_the_old_size_and_mtime(tmp_path: Path) -> None:
    path = secret_volume(tmp_path, "old-token-1", "v1")
    token = TokenFile(str(path))
    assert token.allows("Bearer old-token-1")
    new = tmp_path / "..v2"
    new.mkdir()
    (new / "token").write_text("new-token-2")  # the same length
    before = os.stat(tmp_path / "..v1" / "token")
    os.utime(new / "token", ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
    swap(tmp_path, "v2")
    assert token.allows("Bearer new-token-2")
    assert not token.allows("Bearer old-token-1")
