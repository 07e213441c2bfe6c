"""``d2ov`` command line (also ``python -m d2ov_core``): one module per command, each with its
options next to its handler (``register(subparsers)`` + ``run(args)``).

Every :class:`~d2ov_core.errors.D2ovError` becomes one line on stderr and exit code 2; argparse
usage errors are exit code 2 too. ``verify`` exits 1 when the backends disagree past tolerance.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import D2ovError, DownloadError
from ..runtime.ir import check_device
from . import bench, catalog, convert, evaluate, export, hub, predict, serve, space, verify

__all__ = ["main", "build_parser"]

#: in the order `d2ov --help` lists them
COMMANDS = [catalog, convert, predict, verify, evaluate, bench, hub, export, space, serve]


class _Parser(argparse.ArgumentParser):
    """argparse with d2ov's error shape: one line on stderr (no usage block), exit code 2. Its
    sub-command parsers are of this class too."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="d2ov",
        description="Detectron2 models on OpenVINO: convert, predict, verify, evaluate, benchmark, publish, serve.",
    )
    parser.add_argument("--version", action="version", version=f"d2ov {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; a command whose last positional takes several values (``predict``'s images,
    ``verify``'s) also takes them after options (``d2ov predict my.yaml --weights w.pth --classes a,b
    photo.jpg``), which argparse alone refuses."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    trailing = getattr(args, "trailing_positionals", None)
    if extra and trailing and not any(e.startswith("-") for e in extra):
        setattr(args, trailing, list(getattr(args, trailing)) + extra)
    elif extra:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="[d2ov] %(message)s")
    # httpx (huggingface_hub's client) logs every request at INFO; d2ov's INFO lines are d2ov's own
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if getattr(args, "device", None) and getattr(args, "backend", "openvino") == "openvino":
            check_device(args.device)  # before any model is loaded
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `d2ov list | head`
        return 0
    except D2ovError as e:
        hint = " (or pass a local file with --weights PATH)" if isinstance(e, DownloadError) else ""
        print(f"d2ov: error: {e}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("d2ov: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
