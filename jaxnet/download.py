"""Getting CIFAR-10 onto disk: download with a checksum, safe extraction.

Files are untrusted (DESIGN.md, decision 5): the archive is checked against an
md5 before use, written under a temporary name and renamed; its members are
extracted only inside the target folder. A failed download, checksum or archive
raises ``DownloadError``, whose message names the URL (decision 4). Reading the
extracted batches is ``jaxnet.data``'s job.

Nothing here prints: ``download_cifar10`` reports through a ``progress``
callback that the caller passes (``jaxnet/commands/get_cifar10.py`` draws a bar).
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

from .data import (FOLDER_NAME, REQUIRED_FILES, TEST_FILES, TRAIN_FILES, _read_batch,
                   default_data_dir)

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download, its checksum or its archive failed; the message names the URL."""


def cifar10_present(root: str | os.PathLike, thorough: bool = False) -> bool:
    """True when ``root/cifar-10-batches-py`` holds all seven files of the dataset;
    with ``thorough``, only when every batch is also readable (a second or so)."""
    return _complete(_download_root(root) / FOLDER_NAME, thorough)


def _download_root(root: str | os.PathLike) -> Path:
    """The folder to download into; given the batch folder itself, its parent (as the loader)."""
    root = Path(root).expanduser()
    return root.parent if root.name == FOLDER_NAME else root


def download_cifar10(root: str | os.PathLike | None = None, url: str | None = None,
                     md5: str | None = None,
                     progress: Callable[[int, int | None], object] | None = None,
                     timeout: float = 60.0) -> Path:
    """Download, verify and extract CIFAR-10 into ``root``; return ``root/cifar-10-batches-py``.

    ``root`` defaults to ``default_data_dir()``; naming the batch folder itself works too.
    ``url``/``md5`` default to ``$JAXNET_CIFAR10_URL``/``$JAXNET_CIFAR10_MD5`` when
    that URL is set, else to the official archive; a mirror needs its own md5.
    ``progress(bytes_done, bytes_total_or_None)`` is called after each chunk.
    A complete folder is left alone (an incomplete one is replaced); a verified
    ``cifar-10-python.tar.gz`` already in ``root`` is extracted without
    downloading. On any failure (network, truncated transfer, checksum, unsafe
    or incomplete archive) it raises ``DownloadError`` and leaves no partial
    archive or folder behind.
    """
    url, md5 = _resolve_source(url, md5)
    root = _download_root(root if root is not None else default_data_dir())
    folder = root / FOLDER_NAME
    for path in (root, folder):
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is a file, not a folder; give another folder for CIFAR-10")
    if _complete(folder, thorough=True):   # a truncated batch is replaced, not trusted
        return folder
    # The topmost folder this call creates, removed again if the download fails.
    created = next((p for p in reversed([root, *root.parents]) if not p.exists()), None)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / ARCHIVE_NAME
    # Everything partial lives in one temporary folder inside root (so that the
    # renames stay on one file system), and one rmtree removes it whatever happens.
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".cifar-10-download."))
    try:
        source = archive
        if not (archive.is_file() and _md5_of_file(archive) == md5):
            source = tmp / (ARCHIVE_NAME + ".part")
            _fetch(url, md5, source, progress, timeout)
        _extract(source, tmp / "extracted", url)
        if source != archive:
            os.replace(source, archive)
        _move_into_place(tmp / "extracted" / FOLDER_NAME, folder, trash=tmp / "replaced")
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _resolve_source(url: str | None, md5: str | None) -> tuple[str, str]:
    """Pick the URL and its md5: arguments, then the environment, then the official pair."""
    if url is None:
        url = os.environ.get("JAXNET_CIFAR10_URL") or OFFICIAL_URL
        if url != OFFICIAL_URL:
            md5 = md5 or os.environ.get("JAXNET_CIFAR10_MD5")
    if md5 is None and url == OFFICIAL_URL:
        md5 = OFFICIAL_MD5
    if md5 is None:
        raise ValueError(f"no md5 checksum given for {url}: a mirror needs its own "
                         "(md5= argument, --md5 flag or JAXNET_CIFAR10_MD5)")
    if not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise ValueError(f"md5 must be 32 hexadecimal digits; got {md5!r}")
    return url, md5.lower()


def _complete(folder: Path, thorough: bool = False) -> bool:
    """All files present; with ``thorough``, every batch readable too."""
    if not all((folder / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        for name in (TRAIN_FILES + TEST_FILES) if thorough else ():
            _read_batch(folder / name)
    except ValueError:
        return False
    return True


def _md5_of_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, md5: str, dest: Path, progress, timeout: float) -> None:
    """Stream ``url`` into ``dest`` and check its length and md5; raise ``DownloadError``."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:   # URLError is an OSError
        raise DownloadError(f"could not download {url}: {getattr(exc, 'reason', exc)} (offline? "
                            "give a mirror or a file:// copy: --url/--md5 or "
                            "JAXNET_CIFAR10_URL/JAXNET_CIFAR10_MD5)") from None
    digest, done = hashlib.md5(), 0
    with response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"download of {url} was interrupted after {done} bytes: "
                                    f"{type(exc).__name__}: {exc}") from None
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    # http.client returns a short body without raising when the server closes early.
    if total is not None and done < total:
        raise DownloadError(f"download of {url} was cut short: got {done} of {total} bytes")
    if digest.hexdigest() != md5:
        raise DownloadError(
            f"checksum mismatch for {url}: expected md5 {md5}, got {digest.hexdigest()} "
            f"({done} bytes); the file is corrupt or incomplete, or the md5 does not belong "
            "to this URL")


def _extract(archive: Path, dest: Path, url: str) -> None:
    """Extract ``archive`` into ``dest`` after checking every member; raise ``DownloadError``.

    Files are written by hand rather than with ``extractall`` so that nothing but
    plain files and folders, with default permissions, can appear, whatever the
    Python version's tarfile filters do.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            paths = [_member_path(member, url) for member in members]   # all, before writing
            for member, path in zip(members, paths):
                target = dest.joinpath(*path.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # tarfile lists every compression it tried, one per line: keep one line.
        raise DownloadError(f"{url} is not a readable .tar.gz archive: "
                            f"{' '.join(str(exc).split())}") from None
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise DownloadError(f"refusing the archive from {url}: member {member.name!r} clashes "
                            f"with another member (one name used for a file and a folder)") \
            from None
    if not _complete(dest / FOLDER_NAME):
        missing = [n for n in REQUIRED_FILES if not (dest / FOLDER_NAME / n).is_file()]
        raise DownloadError(f"the archive from {url} is not CIFAR-10: {FOLDER_NAME}/ lacks "
                            f"{', '.join(missing)}")


def _member_path(member: tarfile.TarInfo, url: str) -> PurePosixPath:
    """The member's relative path; refuse anything that could write outside the folder."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        problem = "its path leads outside the target folder"
    elif member.issym() or member.islnk():
        problem = "links are not allowed"
    elif not (member.isfile() or member.isdir()):
        problem = "only plain files and folders are allowed (devices, FIFOs and others are not)"
    elif member.isfile() and not path.parts:
        problem = "a file member needs a name"
    else:
        return path
    raise DownloadError(f"refusing to extract the archive from {url}: member "
                        f"{member.name!r}: {problem}")


def _move_into_place(src: Path, dst: Path, trash: Path) -> None:
    """Rename the extracted folder to ``dst``; an incomplete ``dst`` is moved to ``trash``."""
    if dst.exists() or dst.is_symlink():
        if _complete(dst, thorough=True):   # another process finished first
            return
        dst.rename(trash)
    src.rename(dst)
