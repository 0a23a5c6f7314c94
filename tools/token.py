"""Prints a signed JWT for the local stack, alone on stdout (``make token``)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta

from shared.auth import Role, issue_token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", required=True, choices=[r.value for r in Role])
    parser.add_argument("--sellers", default="", help="comma-separated seller ids")
    parser.add_argument("--hours", type=int, default=12)
    args = parser.parse_args()
    secret = os.environ.get("GFG_JWT_SECRET")
    if not secret:
        print("GFG_JWT_SECRET is not set (make token sets it)", file=sys.stderr)
        return 2
    sellers = [s for s in args.sellers.split(",") if s]
    if args.role != Role.ADMIN and not sellers:
        print(f"role {args.role} needs SELLERS=id[,id...]", file=sys.stderr)
        return 2
    print(issue_token(secret, args.role, sellers, ttl=timedelta(hours=args.hours)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
