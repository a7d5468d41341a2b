"""The ``speccas`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="speccas", description="speculative cascades for PyTorch")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="the main job: a demonstration run", add_help=False)
    if not argv:
        ap.print_help()
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        from . import demo

        demo.main(rest)
        return 0
    ap.parse_args(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
