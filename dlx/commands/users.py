"""`dlx users add NAME | list | revoke KEY_ID`: the API keys of `dlx serve`.

    dlx users add alice            # prints a key id and its secret, once
    dlx users add ops --admin      # a key that sees every key's jobs
    dlx users list
    dlx users revoke dlx_0123456789abcdef
"""

from __future__ import annotations

import argparse
import sys

from dlx.config import ServeSettings


def main(argv: list[str]) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=ServeSettings.state_dir, help="the server's state directory (serve.state_dir)")
    parser = argparse.ArgumentParser(prog="dlx users", description="API keys for dlx serve")
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="a new key for a user", parents=[common])
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="the key sees every key's jobs")
    sub.add_parser("list", help="keys and their users", parents=[common])
    sub.add_parser("revoke", help="refuse a key from now on", parents=[common]).add_argument("key_id")
    args = parser.parse_args(argv)

    from dlx.serve.auth import KeyStore

    store = KeyStore(args.state_dir)
    if args.action == "add":
        try:
            key_id, secret = store.add(args.name, admin=args.admin)
        except ValueError as exc:
            print(f"dlx users: error: {exc}", file=sys.stderr)
            return 2
        print(f"user:    {args.name}{' (admin)' if args.admin else ''}\nkey id:  {key_id}\nsecret:  {secret}\n"
              "(the secret is not stored and is shown only now)")
    elif args.action == "list":
        for key_id, name, revoked in store.users():
            print(f"{key_id}  {name}{'  (revoked)' if revoked else ''}")
    elif not store.revoke(args.key_id):
        print(f"dlx users: error: no key {args.key_id}", file=sys.stderr)
        return 2
    return 0
