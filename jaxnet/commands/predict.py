"""Classify image files with a trained network: the top classes and their probabilities.

The console command jaxnet-predict is the same as python scripts/predict.py.

CHECKPOINT is a params.npz written by scripts/train.py: besides the weights it
holds the preprocessing the network was trained with (the mean training image
and, if one was used, the fitted standardization/PCA/ZCA transform), so new
images go through exactly the same steps. Each IMAGE (PNG, JPEG or anything
Pillow reads) is converted to RGB and resized to 32x32 if it is not already.

Prints one line per image:

  cat.png: cat 0.612, dog 0.201, frog 0.054

Examples:
  python scripts/predict.py runs/best/params.npz cat.png ship.jpg
  python scripts/predict.py runs/best/params.npz --top 5 photos/*.jpg
"""
import numpy as np

from jaxnet.commands.cli import Parser, positive_int, run
from jaxnet.preprocess import CLASS_NAMES, load_classifier, read_image


def format_top(path, probabilities: np.ndarray, class_names, top: int) -> str:
    """``path: name p, name p, ...`` for the ``top`` most probable classes."""
    order = np.argsort(-probabilities, kind="stable")[:top]
    return f"{path}: " + ", ".join(f"{class_names[i]} {probabilities[i]:.3f}" for i in order)


def command():
    """Print the top classes of each image."""
    parser = Parser(description=__doc__)
    parser.add_argument("checkpoint", help="params.npz written by scripts/train.py")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to classify")
    parser.add_argument("--top", type=positive_int, default=3, help="classes shown per image")
    args = parser.parse_args()

    classifier = load_classifier(args.checkpoint, CLASS_NAMES)
    images = np.stack([read_image(path) for path in args.images])   # all readable, or stop
    probabilities = classifier.probabilities(images)
    top = min(args.top, len(CLASS_NAMES))
    for path, p in zip(args.images, probabilities):
        print(format_top(path, p, classifier.class_names, top))
    return 0


def main() -> None:
    """Run the command; an error a user can cause ends it with one line and status 2."""
    run(command)
