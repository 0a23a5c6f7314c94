"""Prints a signed JWT for the local stack, alone on stdout (``make token``).

Signs with the issuer's Ed25519 private key when ``GFG_JWT_PRIVATE_KEY_FILE`` is set
(EdDSA), otherwise with the platform secret ``GFG_JWT_SECRET`` (HS256). The issuer and
audience come from ``GFG_JWT_ISSUER`` / ``GFG_JWT_AUDIENCE`` like the services' settings.

``--keygen DIR`` instead writes a new issuer key pair: ``jwt-issuer.pem`` (private, kept
by the issuer only), ``jwt-issuer.pub.pem`` and ``jwt-jwks.json`` (public, for services).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.auth import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_MAX_LIFETIME_S,
    Role,
    issue_token,
    load_private_key,
    public_jwk,
)

MAX_HOURS = DEFAULT_MAX_LIFETIME_S // 3600


def _ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def keygen(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / "jwt-issuer.pem"
    if private_path.exists():
        print(f"{private_path} exists; not overwriting an issuer key", file=sys.stderr)
        return 2
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Created owner-only before a byte is written, like var/jwt-secret.
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(private_pem)
    public = key.public_key()
    (directory / "jwt-issuer.pub.pem").write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    jwks = {"keys": [public_jwk(public)]}
    (directory / "jwt-jwks.json").write_text(json.dumps(jwks, indent=2) + "\n")
    print(
        f"wrote {private_path} (issuer only), jwt-issuer.pub.pem and jwt-jwks.json", file=sys.stderr
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=[r.value for r in Role])
    parser.add_argument("--sellers", default="", help="comma-separated seller ids")
    parser.add_argument("--charities", default="", help="comma-separated charity ids")
    parser.add_argument(
        "--hours", type=int, default=1, help=f"lifetime, 1 to {MAX_HOURS} (default 1)"
    )
    parser.add_argument("--kid", default=None, help="key id header (EdDSA: the key's thumbprint)")
    parser.add_argument("--keygen", type=Path, metavar="DIR", help="write a new issuer key pair")
    args = parser.parse_args()
    if args.keygen is not None:
        return keygen(args.keygen)
    if args.role is None:
        parser.error("--role is required")

    max_lifetime_s = int(os.environ.get("GFG_JWT_MAX_LIFETIME_S", DEFAULT_MAX_LIFETIME_S))
    if not 1 <= args.hours or args.hours * 3600 > max_lifetime_s:
        print(f"HOURS must be 1 to {max_lifetime_s // 3600}", file=sys.stderr)
        return 2
    role = Role(args.role)
    sellers, charities = _ids(args.sellers), _ids(args.charities)
    if role in (Role.SELLER, Role.STOREFRONT) and not sellers:
        print(f"role {role} needs SELLERS=id[,id...]", file=sys.stderr)
        return 2
    if role is Role.CHARITY and not charities:
        print("role charity needs CHARITIES=id[,id...]", file=sys.stderr)
        return 2
    if charities and role is not Role.CHARITY:
        print("CHARITIES is for ROLE=charity only", file=sys.stderr)
        return 2

    private_key_file = os.environ.get("GFG_JWT_PRIVATE_KEY_FILE")
    secret = os.environ.get("GFG_JWT_SECRET")
    if private_key_file and secret:
        print("set GFG_JWT_PRIVATE_KEY_FILE or GFG_JWT_SECRET, not both", file=sys.stderr)
        return 2
    if private_key_file:
        key: str | Ed25519PrivateKey = load_private_key(Path(private_key_file))
    elif secret:
        key = secret
    else:
        print("neither GFG_JWT_PRIVATE_KEY_FILE nor GFG_JWT_SECRET is set", file=sys.stderr)
        return 2
    print(
        issue_token(
            key,
            role,
            sellers,
            charities=charities,
            ttl=timedelta(hours=args.hours),
            issuer=os.environ.get("GFG_JWT_ISSUER", DEFAULT_ISSUER),
            audience=os.environ.get("GFG_JWT_AUDIENCE", DEFAULT_AUDIENCE),
            key_id=args.kid,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
