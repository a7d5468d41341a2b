"""Artefacts derived from the rule table (``rules.py``).

    python -m speccas_kernels.tables readme [README.md]   # rewrite the README's rules table
    python -m speccas_kernels.tables c-header              # print csrc's generated enum (setup.py writes it)

Tests check that both match the table, so an edit of ``rules.py`` ends with ``generate readme``.
"""

import sys

from .rules import c_header, update_readme


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["readme"]:
        path = argv[1] if len(argv) > 1 else "README.md"
        print(f"{path}: {'updated' if update_readme(path) else 'already up to date'}")
        return 0
    if argv[:1] == ["c-header"]:
        print(c_header(), end="")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
