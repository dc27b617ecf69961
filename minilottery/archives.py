"""Safe extraction of a student's archive (.zip, .tar, .tar.gz, .tgz).

Every member is checked before anything is written: a path must be relative and stay
inside the target (no absolute path, no ``..``, no drive letter or backslash trick);
only regular files and directories are accepted (no symbolic or hard links, devices,
FIFOs); the member count and the total uncompressed size have limits, and the bytes
actually written are counted again while extracting (a zip's sizes are declared by
the archive itself). Files are written with mode 0644, directories 0755, whatever
the archive says. Any violation raises ArchiveError naming the archive and member,
and leaves the target empty.
"""

import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

MAX_MEMBERS = 5000
MAX_BYTES = 200 * 2**20
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


class ArchiveError(ValueError):
    pass


def is_archive(path):
    return Path(path).is_file() and Path(path).name.endswith(ARCHIVE_SUFFIXES)


def _safe_name(archive, name):
    """The member's path relative to the target, or ArchiveError."""
    if "\\" in name or "\0" in name:
        raise ArchiveError(f"{archive}: member {name!r} has a backslash or NUL in its name")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise ArchiveError(f"{archive}: member {name!r} is an absolute path")
    if ".." in path.parts:
        raise ArchiveError(f"{archive}: member {name!r} leaves the folder (..)")
    if path.parts and ":" in path.parts[0]:
        raise ArchiveError(f"{archive}: member {name!r} names a drive")
    return PurePosixPath(*[part for part in path.parts if part != "."])


def _members(archive):
    """[(relative path, is_dir, declared size, opener)] of an archive, all checked."""
    name = Path(archive).name
    members = []
    if name.endswith(".zip"):
        try:
            handle = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as error:
            raise ArchiveError(f"{name} is not a readable zip archive: {error}") from None
        try:
            for info in handle.infolist():
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                    raise ArchiveError(f"{name}: member {info.filename!r} is a link or a special "
                                       f"file; only files and folders are accepted")
                members.append((_safe_name(name, info.filename), info.is_dir(), info.file_size,
                                lambda info=info: handle.open(info)))
        except ArchiveError:
            handle.close()
            raise
        return handle, members
    try:
        handle = tarfile.open(archive)
    except (tarfile.TarError, OSError) as error:
        raise ArchiveError(f"{name} is not a readable tar archive: {error}") from None
    try:
        declared = 0
        for info in handle:     # member by member: stop at the first over a limit
            if not (info.isfile() or info.isdir()):
                raise ArchiveError(f"{name}: member {info.name!r} is a link or a special file; "
                                   f"only files and folders are accepted")
            declared += info.size
            if len(members) == MAX_MEMBERS:
                raise ArchiveError(f"{name} has more than {MAX_MEMBERS} members")
            if declared > MAX_BYTES:
                raise ArchiveError(f"{name} unpacks to more than {MAX_BYTES} bytes")
            members.append((_safe_name(name, info.name), info.isdir(), info.size,
                            lambda info=info: handle.extractfile(info)))
    except (tarfile.TarError, OSError, EOFError) as error:
        handle.close()
        raise ArchiveError(f"{name} is not a readable tar archive: {error}") from None
    except ArchiveError:
        handle.close()
        raise
    return handle, members


def extract(archive, target):
    """Extract ``archive`` into the new folder ``target``; return ``target``."""
    archive, target = Path(archive), Path(target)
    handle, members = _members(archive)
    try:
        if len(members) > MAX_MEMBERS:
            raise ArchiveError(f"{archive.name} has {len(members)} members, more than "
                               f"{MAX_MEMBERS}")
        declared = sum(size for _, _, size, _ in members)
        if declared > MAX_BYTES:
            raise ArchiveError(f"{archive.name} unpacks to {declared} bytes, more than "
                               f"{MAX_BYTES}")
        target.mkdir(parents=True)
        target.chmod(0o755)
        written = 0
        for relative, is_dir, _, opener in members:
            path = target.joinpath(*relative.parts) if relative.parts else target
            if is_dir:
                path.mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if path.exists():
                raise ArchiveError(f"{archive.name}: member {str(relative)!r} appears twice")
            with opener() as source, open(path, "wb") as sink:
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > MAX_BYTES:
                        raise ArchiveError(f"{archive.name} unpacks to more than {MAX_BYTES} "
                                           f"bytes")
                    sink.write(chunk)
            path.chmod(0o644)
    except ArchiveError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as error:
        shutil.rmtree(target, ignore_errors=True)
        raise ArchiveError(f"{archive.name} could not be extracted: {error}") from None
    finally:
        handle.close()
    return target
