"""Download CIFAR-10 (python version), check its md5 and extract it safely.

The console command jaxnet-get-cifar10 is the same as python scripts/get_cifar10.py.

Writes ROOT/cifar-10-batches-py (data_batch_1..5, test_batch, batches.meta)
and keeps the verified ROOT/cifar-10-python.tar.gz. Does nothing if the folder
is already complete; extracts a verified archive already in ROOT without
downloading it again. On any failure nothing partial is left in ROOT.

The official archive is used unless a mirror is given, with its own md5:
--url/--md5, or the environment variables JAXNET_CIFAR10_URL and
JAXNET_CIFAR10_MD5. file:// URLs work too, for a copy on a local disk.
JAXNET_DATA_DIR changes the default ROOT.
"""
from pathlib import Path

from jaxnet.commands.cli import Parser, ProgressBar, run
from jaxnet.data import default_data_dir, find_cifar10_dir
from jaxnet.download import DownloadError, cifar10_present, download_cifar10


def command() -> None:
    """Download, verify and extract CIFAR-10 unless it is already present."""
    parser = Parser(description=__doc__)
    parser.add_argument("--root", type=Path, default=default_data_dir(),
                        help="folder to put cifar-10-batches-py in")
    parser.add_argument("--url", help="mirror URL of cifar-10-python.tar.gz; None means "
                        "$JAXNET_CIFAR10_URL if set, else the official archive")
    parser.add_argument("--md5", help="md5 of the archive at --url; None means "
                        "$JAXNET_CIFAR10_MD5 for $JAXNET_CIFAR10_URL, or the official md5")
    args = parser.parse_args()

    if cifar10_present(args.root, thorough=True):   # a truncated batch is replaced
        print(f"CIFAR-10 already present in {find_cifar10_dir(args.root)}")
        return
    bar = ProgressBar("downloading")

    def progress(done, total):
        bar.update(done, total, f"{done / 1e6:.1f}" + (f"/{total / 1e6:.1f} MB" if total else " MB"))

    try:
        folder = download_cifar10(args.root, url=args.url, md5=args.md5, progress=progress)
    finally:
        bar.finish()
    print(f"CIFAR-10 downloaded, verified and extracted to {folder}")


def main() -> None:
    """Run the command; an error a user can cause ends it with one line and status 2."""
    run(command, extra_errors=(DownloadError, OSError))
