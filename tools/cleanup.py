"""Retire what acceptance runs left on a deployment: the orgs they created are deactivated (keys and invitations
revoked, members' access removed) and the people they made are removed, through the platform admin API.

    scripts/cleanup URL --keys-dir DIR --run-id ID        what one run (a crashed one, say) left
    scripts/cleanup URL --keys-dir DIR --older-than 2h    what every run left that is older than that

A run's id is on its first line ("run r1129...") and in every org slug, email and request id it made; with
--older-than, only names of the suite's shape (`-r<MMDDhhmmss><hex>[worker]-<scenario>`) are touched. --dry-run
lists what would be retired. Exit codes: 0 done, 1 the gateway refused something (listed), 2 bad usage or the
gateway cannot be reached.
"""
from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timedelta, timezone

from support.client.api import GatewayUnreachable
from support.domain.cleanup import CleanupRefused, Leftovers
from support.harness.config import SuiteSetupError
from support.tokens.signing_keys import KeyMaterial

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def age(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age: use e.g. 90m, 2h or 1d")
    return timedelta(seconds=float(match.group(1)) * UNITS[match.group(2)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cleanup", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("url", help="the gateway's address")
    parser.add_argument("--keys-dir", required=True, help="the deployment's keys folder (its admin secret)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id", help="the run whose leftovers to retire (with its worker's name, if any)")
    which.add_argument("--older-than", type=age, help="every run's leftovers made longer ago than this")
    parser.add_argument("--dry-run", action="store_true", help="list what would be retired, change nothing")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    before = None if args.older_than is None else datetime.now(timezone.utc) - args.older_than
    try:
        leftovers = Leftovers(args.url, KeyMaterial(args.keys_dir))
    except SuiteSetupError as problem:
        sys.stderr.write(f"cleanup: {problem}\n")
        return 2
    try:
        if args.dry_run:
            found = leftovers.found(args.run_id, before)
            for kind, names in found.items():
                print(f"{len(names)} {kind}: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
            return 0
        removed = leftovers.remove(args.run_id, before)
    except (CleanupRefused, GatewayUnreachable) as problem:
        sys.stderr.write(f"cleanup: {problem}\n")
        return 2
    finally:
        leftovers.close()
    print(f"cleanup: {removed.describe()}")
    return 1 if removed.refused else 0


if __name__ == "__main__":
    sys.exit(main())
