"""`python -m deployments [--dry-run]`: run storyloom setup and print what it did."""

from __future__ import annotations

import argparse
import sys

from deployments.setup import run_setup


def main(argv: list[str] | None = None) -> int:
    """Run setup; exit 1 when anything failed."""
    parser = argparse.ArgumentParser(prog="python -m deployments", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="report only, write nothing")
    args = parser.parse_args(argv)
    report = run_setup(dry_run=args.dry_run)
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
