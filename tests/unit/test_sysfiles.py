from __future__ import annotations

import json
import stat
from pathlib import Path

from aidns.resolver.system.sysfiles import FileState, is_mount_point


def test_file_state_restores_files_links_and_absence(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"a\r\nb")
    target.chmod(0o600)
    saved = FileState.of(target)
    assert FileState.from_json(json.loads(json.dumps(saved.to_json()))) == saved
    target.unlink()
    target.symlink_to("/nowhere")
    saved.restore()
    assert not target.is_symlink() and target.read_bytes() == b"a\r\nb"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    missing = FileState.of(tmp_path / "new")
    (tmp_path / "new").write_text("x")
    missing.restore()
    assert not (tmp_path / "new").exists()


def test_mount_points_are_found_in_mountinfo(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        "31 25 0:26 /netns/x/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda1 rw\n"
        "32 25 0:26 /x /my\\040dir/hosts rw - ext4 /dev/vda1 rw\n"
    )
    assert is_mount_point(Path("/etc/resolv.conf"), mountinfo)
    assert is_mount_point(Path("/my dir/hosts"), mountinfo)
    assert not is_mount_point(Path("/etc/hosts"), mountinfo)
