"""What every chapter script shares: the command line (--quick, --full, --out, --seed, and
--device in the chapters that train through the library) and where the binarized MNIST files are."""
import argparse
import os

from .argcheck import non_negative_int, writable_folder
from .backend import device_module
from .data import data_dir, dataset_file, load_binary

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
SHARED_MNIST = os.path.join(os.pardir, "shared", "data", "binarized_mnist")   # beside the checkout


def mnist_folder():
    """Where the binarized MNIST files are: $AVB_DATA if set; else ../shared/data/binarized_mnist
    seen from the working directory (the repository root, where the chapters are run from),
    then from the package's own parent folder (an editable install); else None, and
    `data.data_dir` says what to set.  The working directory comes first because a plain
    `pip install .` puts the package in site-packages, whose parent is not the checkout."""
    if os.environ.get("AVB_DATA"):
        return os.environ["AVB_DATA"]
    for base in (os.getcwd(), ROOT):
        folder = os.path.normpath(os.path.join(base, SHARED_MNIST))
        if os.path.isdir(folder):
            return folder
    return None


def load_mnist(folder=None):
    """(train, valid, folder) of binarized MNIST from `folder` (None: `mnist_folder()`);
    ValueError (what to put where) if absent."""
    folder = data_dir(folder or mnist_folder())
    return load_binary(dataset_file(folder, "train")), load_binary(dataset_file(folder, "valid")), folder


def chapter_args(description, quick_help, full_help, default_out, argv=None, data=False, device=False,
                 pretrained=False):
    """Parse a chapter's arguments.  --quick and --full exclude each other, and --out
    must be a writable folder (checked before any work starts, so a long run never
    fails at the end for want of a place to put its figure).  data=True: the chapter
    reads binarized MNIST, from --data DIR (default: `mnist_folder()`).  device=True: the
    chapter trains through the library (`train`, `bavae.train_bavae`, `vi`, the experiments),
    which runs on --device cpu|gpu; its own checks and figures run on the host.  Chapters
    whose training loops are their own run on the CPU and do not offer the flag."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--full", action="store_true", help=full_help)
    p.add_argument("--out", metavar="DIR", default=default_out, help="where the figure goes (default: runs/chapters in the checkout)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    if data:
        p.add_argument("--data", metavar="DIR", default=None,
                       help="folder with binarized MNIST's train.npz and valid.npz (default: $AVB_DATA, "
                            "else ../shared/data/binarized_mnist from the working directory or the package)")
    if device:
        p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                       help="where the library's training runs: cpu (NumPy, the default) or gpu (CuPy and the "
                            "CUDA kernels; needs cupy-cuda13x or cupy-cuda12x and an NVIDIA GPU); the chapter's "
                            "checks and figures run on the CPU")
    if pretrained:
        p.add_argument("--pretrained", metavar="DIR", default=None,
                       help="evaluate the trained Table 2 models in DIR (e.g. results/mnist) instead of training "
                            "(with --full: the full AIS protocol)")
    args = p.parse_args(argv)
    if pretrained and args.pretrained and not os.path.isdir(args.pretrained):
        p.error(f"--pretrained {args.pretrained!r}: no such folder (it should hold <model>_z8.npz files)")
    if args.quick and args.full:
        p.error("--quick and --full exclude each other")
    try:
        writable_folder(args.out, "--out")
    except ValueError as e:
        p.error(str(e))
    if device:
        try:
            device_module(args.device)          # --device gpu without cupy or a GPU: one line, now
        except ValueError as e:
            p.error(str(e))
    if data:
        args.data = args.data or mnist_folder()
    return args
