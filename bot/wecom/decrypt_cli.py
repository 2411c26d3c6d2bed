"""``siyu wecom decrypt``: decrypt one callback by hand to debug a WeCom configuration.

Operators paste what their proxy logged (msg_signature, timestamp, nonce and
either the GET's echostr or the POST body) and get the plaintext, or the precise
step that fails: signature (wrong Token), padding (wrong EncodingAESKey),
receive id (wrong CorpID). The token and key are never printed; the expected
signature is, since it is a one-way hash of values the operator already has.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bot.wecom.crypto import CallbackCrypto, CallbackError, extract_encrypt

EXIT_OK = 0
EXIT_FAILED = 2


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``wecom decrypt`` to the ``siyu`` CLI's sub-commands."""
    wecom = subparsers.add_parser("wecom", help="WeCom tooling")
    wecom_sub = wecom.add_subparsers(dest="wecom_command", required=True)
    decrypt = wecom_sub.add_parser(
        "decrypt",
        help="verify and decrypt a callback (URL verification echostr or POST body)",
        description=(
            "Verify msg_signature and decrypt a WeCom callback exactly as the receiver "
            "would. Prints the plaintext; on failure prints the failing step to stderr "
            "and exits 2."
        ),
    )
    decrypt.add_argument("--token", required=True, help="the callback Token")
    decrypt.add_argument("--aes-key", required=True, help="the 43-character EncodingAESKey")
    decrypt.add_argument(
        "--corp-id", required=True, help="the receive id: the CorpID for a self-built app"
    )
    decrypt.add_argument("--signature", required=True, help="the msg_signature query parameter")
    decrypt.add_argument("--timestamp", required=True, help="the timestamp query parameter")
    decrypt.add_argument("--nonce", required=True, help="the nonce query parameter")
    source = decrypt.add_mutually_exclusive_group(required=True)
    source.add_argument("--echostr", help="the URL-decoded echostr of a GET verification")
    source.add_argument(
        "--body", type=Path, metavar="FILE", help="file holding a POST body ('-' for stdin)"
    )
    decrypt.set_defaults(func=run_decrypt)


def run_decrypt(args: argparse.Namespace) -> int:
    try:
        crypto = CallbackCrypto(
            token=args.token, encoding_aes_key=args.aes_key, receive_id=args.corp_id
        )
    except ValueError as exc:  # messages never include the key itself
        return _fail(f"invalid configuration: {exc}")

    try:
        if args.echostr is not None:
            encrypt = args.echostr
        else:
            encrypt = extract_encrypt(_read_body(args.body))
        _check_signature(crypto, args=args, encrypt=encrypt)
        plaintext = crypto.decrypt(encrypt)
    except OSError as exc:
        return _fail(f"cannot read body: {exc}")
    except CallbackError as exc:
        return _fail(f"{exc.reason} (HTTP {exc.status}): {exc}")

    sys.stdout.write(plaintext)
    if not plaintext.endswith("\n"):
        sys.stdout.write("\n")
    return EXIT_OK


def _check_signature(crypto: CallbackCrypto, *, args: argparse.Namespace, encrypt: str) -> None:
    try:
        crypto.check_signature(
            msg_signature=args.signature,
            timestamp=args.timestamp,
            nonce=args.nonce,
            encrypt=encrypt,
        )
    except CallbackError as exc:
        expected = crypto.signature(timestamp=args.timestamp, nonce=args.nonce, encrypt=encrypt)
        hint = ""
        if " " in encrypt:
            hint = " (the ciphertext contains spaces: was a '+' URL-decoded to ' '?)"
        raise CallbackError(
            exc.status,
            exc.reason,
            "signature mismatch: expected sha1(sorted(token,timestamp,nonce,encrypt))="
            f"{expected} got {args.signature}; check the Token and that timestamp/nonce "
            f"are copied exactly{hint}",
        ) from exc


def _read_body(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    return path.read_bytes()


def _fail(message: str) -> int:
    print(f"siyu wecom decrypt: {message}", file=sys.stderr)
    return EXIT_FAILED
