"""Files holding secrets, uploaded so that no one else reads them on the way (docs/hardening.md).

`files.put` with `--sudo` uploads over SFTP as the login user into a temporary file under
/tmp (created 0644 by the SFTP server's umask: readable by every local user until it is
removed), then `sudo cp`s it to the destination, which `cp` creates with root's umask
(0644 again) before `chmod` tightens it. `secret_file` closes both windows:

- the destination is made first, empty, with its final owner and mode (or an existing one
  is given them), so the content lands in a file that is already private (`cp` and an SFTP
  write onto an existing file keep its owner and mode);
- the staging copy goes to STAGE_DIR, a directory on root's /run that only the login user
  may enter (0700; root itself when the login is root, which then uploads in place).

The content is compared by checksum as `files.put` does, so an unchanged secret changes
nothing (and an unchanged file with the wrong owner or mode gets only a chown and chmod).
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex

from pyinfra import host
from pyinfra.api import FileUploadCommand, operation
from pyinfra.api.util import get_file_sha1
from pyinfra.facts.files import File, Sha1File
from pyinfra.operations import files

# On root's /run (a tmpfs no other user may write to), so nobody can plant it first.
STAGE_DIR = "/run/sparkops-stage"


def stage_path(dest: str) -> str:
    return f"{STAGE_DIR}/{hashlib.sha1(dest.encode()).hexdigest()}"


def _mode(value) -> str:
    return str(value).lstrip("0") or "0"


@operation()
def secret_file(src, dest: str, user: str = "root", group: str = "root", mode: str = "600"):
    """Upload `src` (a path or file-like) to `dest`, owned by user:group with `mode`, never
    readable by anyone else on the way; nothing when content, owner and mode are as wanted."""
    remote = host.get_fact(File, path=dest)
    same_content = bool(remote) and host.get_fact(Sha1File, path=dest) == get_file_sha1(src)
    same_attrs = bool(remote) and (
        remote.get("user") == user
        and remote.get("group") == group
        and _mode(remote.get("mode")) == _mode(mode)
    )
    if same_content and same_attrs:
        host.noop(f"{dest} is as wanted")
        return
    yield from upload_commands(src, dest, user, group, mode, content=not same_content)


def upload_commands(src, dest: str, user: str, group: str, mode: str, content: bool = True):
    """The commands of `secret_file` without its comparison: the parent directory, the
    destination made private, then (`content`) the staged upload. `src` is read when the
    upload runs, so it may be a file-like filled by an earlier command of the operation."""
    # As files.put does: the parent made (owned by user:group) when missing.
    yield from files.directory._inner(
        path=posixpath.dirname(dest),
        user=user,
        group=group,
        _no_check_owner_mode=True,
        _no_fail_on_link=True,
    )
    target = shlex.quote(dest)
    yield (
        f"umask 077; [ -e {target} ] || : > {target}; "
        f"chown {shlex.quote(user)}:{shlex.quote(group)} {target}; chmod {mode} {target}"
    )
    if not content:
        return
    # Owned by the login user (sudo says who that is), entered by it alone.
    yield f'install -d -m 700 -o "${{SUDO_USER:-$(id -un)}}" {STAGE_DIR}'
    yield FileUploadCommand(src, dest, remote_temp_filename=stage_path(dest))
