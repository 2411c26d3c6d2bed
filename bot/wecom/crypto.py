"""WeCom callback crypto (加解密方案说明), behind a small typed adapter.

The scheme, as WeCom documents it and its official WXBizMsgCrypt samples use it:

* ``msg_signature = sha1("".join(sorted([token, timestamp, nonce, encrypt])))``;
* ``AESKey = base64_decode(EncodingAESKey + "=")`` (32 bytes), AES-256-CBC with
  ``IV = AESKey[:16]``;
* plaintext = ``random(16) + len(msg) as 4 bytes big-endian + msg + ReceiveId``,
  PKCS#7-padded to a multiple of **32** bytes (not AES's 16: a stock 16-byte
  unpadder rejects every message whose pad byte is above 16, e.g. WeCom's own
  sample POST has 30 bytes of padding);
* ReceiveId is the CorpID for a self-built app's callbacks.

wechatpy (2.0.0a26) implements this, but not the way a bank needs it:
its signature comparison is ``!=`` (not constant-time), and its decoder takes the
last byte as the pad length without checking it (a bad pad silently yields a
wrong or empty message), so length and receive id are read from garbage. We
therefore do the signature check, the padding check, the framing and the receive
id check ourselves, and use wechatpy only for the AES-CBC primitive.

Freshness (timestamp window) and nonce replay are the receiver's job: WeCom
documents no timestamp window, and dedup is the real replay defence.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import string
import struct
from typing import Literal
from xml.sax.saxutils import escape

from wechatpy.crypto.base import WeChatCipher

from bot.wecom.xmlsafe import XmlError, parse_root

#: WeCom pads to 32-byte blocks (加解密方案说明: "PKCS#7填充至32字节的倍数").
WECOM_BLOCK_SIZE = 32
_AES_BLOCK_SIZE = 16
_RANDOM_PREFIX_LEN = 16
_LENGTH_FIELD_LEN = 4
_RANDOM_ALPHABET = string.ascii_letters + string.digits

CallbackErrorReason = Literal[
    "bad_signature",  # 403: msg_signature does not match (WXBizMsgCrypt -40001)
    "bad_receive_id",  # 403: decrypted ReceiveId is not our CorpID (-40005)
    "missing_encrypt",  # 400: no <Encrypt> in the POST body (-40002)
    "malformed_xml",  # 400: the body is not XML (-40002)
    "xml_entities",  # 400: DOCTYPE/ENTITY declarations refused
    "bad_base64",  # 400: Encrypt/echostr is not base64 (-40010)
    "bad_ciphertext",  # 400: not a whole number of AES blocks (-40007)
    "bad_padding",  # 400: not PKCS#7 to 32-byte blocks (-40007)
    "bad_length",  # 400: the 4-byte length field does not fit the plaintext (-40008)
    "bad_encoding",  # 400: the message is not UTF-8
    "bad_callback",  # 400: the decrypted callback is missing fields or has bad values
    # Checks of the receiver around the crypto (query parameters, freshness):
    "missing_params",  # 400: msg_signature/timestamp/nonce (or echostr) missing
    "bad_timestamp",  # 400: timestamp is not an integer
    "stale_timestamp",  # 403: timestamp outside SIYU_WECOM__CALLBACK_MAX_SKEW_S
]


class CallbackError(Exception):
    """A callback we must refuse, with the HTTP status to answer.

    ``status`` is 403 when the sender is not who they claim to be (signature,
    receive id) and 400 when the bytes are malformed. ``reason`` is a short stable
    code for metrics and logs; ``str(exc)`` is a precise human message that never
    contains the token, the key or the message body.
    """

    def __init__(self, status: Literal[400, 403], reason: CallbackErrorReason, message: str):
        super().__init__(message)
        self.status: Literal[400, 403] = status
        self.reason: CallbackErrorReason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, reason={self.reason!r}, {str(self)!r})"


def compute_signature(*, token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """WeCom's msg_signature: sha1 over the four strings sorted and concatenated."""
    joined = "".join(sorted([token, timestamp, nonce, encrypt]))
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()  # noqa: S324 - WeCom's protocol


def decode_encoding_aes_key(encoding_aes_key: str) -> bytes:
    """Turn the 43-character EncodingAESKey into the 32-byte AES key.

    Raises ``ValueError`` (a configuration error, not a callback error) with a
    message that never echoes the key.
    """
    if len(encoding_aes_key) != 43:
        raise ValueError(
            f"EncodingAESKey must be exactly 43 characters, got {len(encoding_aes_key)}"
        )
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error as exc:
        raise ValueError("EncodingAESKey is not valid base64 (expected a-z, A-Z, 0-9)") from exc
    if len(key) != 32:  # pragma: no cover - 43 base64 chars + "=" always give 32 bytes
        raise ValueError("EncodingAESKey does not decode to a 32-byte AES key")
    return key


class CallbackCrypto:
    """Verify, decrypt and (for the sandbox and tests) encrypt WeCom callbacks.

    One instance per (token, EncodingAESKey, receive id); it holds no per-request
    state, so it is safe to share between requests and tasks.
    """

    def __init__(self, *, token: str, encoding_aes_key: str, receive_id: str) -> None:
        if not token:
            raise ValueError("WeCom callback token must not be empty")
        self._token = token
        self._key = decode_encoding_aes_key(encoding_aes_key)
        self._receive_id = receive_id.encode("utf-8")
        # wechatpy's cipher is a correct AES-256-CBC with IV = key[:16]; each call
        # makes a fresh encryptor/decryptor context, so sharing it is safe.
        self._cipher = WeChatCipher(self._key)

    @property
    def receive_id(self) -> str:
        return self._receive_id.decode("utf-8")

    # -- signature ---------------------------------------------------------

    def signature(self, *, timestamp: str, nonce: str, encrypt: str) -> str:
        """The msg_signature WeCom would send for these values."""
        return compute_signature(
            token=self._token, timestamp=timestamp, nonce=nonce, encrypt=encrypt
        )

    def check_signature(
        self, *, msg_signature: str, timestamp: str, nonce: str, encrypt: str
    ) -> None:
        """Raise 403 ``bad_signature`` unless ``msg_signature`` matches, in constant time.

        wechatpy compares with ``!=``, which leaks how many leading characters
        matched; ``hmac.compare_digest`` does not. Both sides are compared as
        bytes so a non-ASCII query parameter is a mismatch, not a TypeError.
        """
        expected = self.signature(timestamp=timestamp, nonce=nonce, encrypt=encrypt)
        if not hmac.compare_digest(expected.encode("ascii"), msg_signature.encode("utf-8")):
            raise CallbackError(
                403,
                "bad_signature",
                "msg_signature does not match sha1(sorted(token, timestamp, nonce, encrypt)): "
                "wrong Token, or the request was not sent by WeCom",
            )

    # -- inbound -------------------------------------------------------------

    def verify_url(self, *, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """Answer WeCom's URL verification (GET): check, decrypt, return the echostr plaintext.

        ``echostr`` must already be URL-decoded (WeCom sends it percent-encoded;
        a ``+`` turned into a space by a proxy breaks the signature, as it should).
        """
        self.check_signature(
            msg_signature=msg_signature, timestamp=timestamp, nonce=nonce, encrypt=echostr
        )
        return self.decrypt(echostr)

    def decrypt_body(self, *, msg_signature: str, timestamp: str, nonce: str, body: bytes) -> str:
        """Verify and decrypt a callback POST body; return the inner XML as text.

        The order matters: the envelope is parsed safely first (we need Encrypt to
        check the signature), the signature is checked before any decryption, and
        the receive id is checked last, on a plaintext whose framing we validated.
        """
        encrypt = extract_encrypt(body)
        self.check_signature(
            msg_signature=msg_signature, timestamp=timestamp, nonce=nonce, encrypt=encrypt
        )
        return self.decrypt(encrypt)

    def decrypt(self, encrypt: str) -> str:
        """Decrypt one ``Encrypt``/``echostr`` value whose signature was already checked."""
        try:
            ciphertext = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CallbackError(400, "bad_base64", f"Encrypt is not valid base64: {exc}") from exc
        if not ciphertext or len(ciphertext) % _AES_BLOCK_SIZE:
            raise CallbackError(
                400,
                "bad_ciphertext",
                f"ciphertext is {len(ciphertext)} bytes, not a whole number of 16-byte AES blocks",
            )
        if len(ciphertext) % WECOM_BLOCK_SIZE:
            # WeCom pads to 32-byte blocks, so its ciphertexts are multiples of 32.
            # An odd number of 16-byte blocks means a sender padded to 16 bytes.
            raise CallbackError(
                400,
                "bad_padding",
                f"ciphertext is {len(ciphertext)} bytes: padded to 16-byte blocks, "
                "but WeCom pads to 32-byte blocks",
            )
        padded: bytes = self._cipher.decrypt(ciphertext)  # untyped wechatpy: pin the type
        plaintext = _unpad(padded)
        return self._unframe(plaintext)

    def _unframe(self, plaintext: bytes) -> str:
        header = _RANDOM_PREFIX_LEN + _LENGTH_FIELD_LEN
        if len(plaintext) < header:
            raise CallbackError(
                400,
                "bad_length",
                f"decrypted plaintext is {len(plaintext)} bytes, shorter than the "
                f"{header}-byte random+length header",
            )
        (msg_len,) = struct.unpack(">I", plaintext[_RANDOM_PREFIX_LEN:header])
        if msg_len > len(plaintext) - header:
            raise CallbackError(
                400,
                "bad_length",
                f"length field says {msg_len} bytes but only {len(plaintext) - header} follow",
            )
        message = plaintext[header : header + msg_len]
        receive_id = plaintext[header + msg_len :]
        # Exact byte comparison: no stripping, no case folding. A message for
        # another corp (or another suite) must never be accepted as ours.
        if receive_id != self._receive_id:
            raise CallbackError(
                403,
                "bad_receive_id",
                f"message is for receive id {_printable(receive_id)!r}, "
                f"expected {self.receive_id!r}",
            )
        try:
            return message.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CallbackError(
                400, "bad_encoding", f"decrypted message is not UTF-8: {exc.reason}"
            ) from exc

    # -- outbound (sandbox simulator, tests) -----------------------------------

    def encrypt(
        self,
        plaintext: str,
        *,
        nonce: str,
        timestamp: str,
        random_prefix: bytes | None = None,
    ) -> tuple[str, str]:
        """Encrypt like WeCom does; return ``(encrypt_b64, msg_signature)``.

        ``random_prefix`` (16 bytes) is for reproducible test vectors only; by
        default it is 16 random alphanumerics, as WeCom's own libraries use, so
        decoders that treat the plaintext as text do not choke on it.
        """
        if random_prefix is None:
            random_prefix = "".join(
                secrets.choice(_RANDOM_ALPHABET) for _ in range(_RANDOM_PREFIX_LEN)
            ).encode("ascii")
        if len(random_prefix) != _RANDOM_PREFIX_LEN:
            raise ValueError("random_prefix must be exactly 16 bytes")
        message = plaintext.encode("utf-8")
        framed = random_prefix + struct.pack(">I", len(message)) + message + self._receive_id
        ciphertext: bytes = self._cipher.encrypt(_pad(framed))
        encrypt = base64.b64encode(ciphertext).decode("ascii")
        return encrypt, self.signature(timestamp=timestamp, nonce=nonce, encrypt=encrypt)

    def build_callback_body(
        self,
        plaintext_xml: str,
        *,
        nonce: str,
        timestamp: str,
        to_user_name: str,
        agent_id: str,
    ) -> tuple[bytes, str]:
        """The POST body WeCom sends to a callback URL, and its msg_signature.

        Shape as in 加解密方案说明: ``<xml><ToUserName/><Encrypt/><AgentID/></xml>``.
        """
        encrypt, msg_signature = self.encrypt(plaintext_xml, nonce=nonce, timestamp=timestamp)
        body = (
            "<xml>"
            f"<ToUserName>{_cdata(to_user_name)}</ToUserName>"
            f"<Encrypt>{_cdata(encrypt)}</Encrypt>"
            f"<AgentID>{_cdata(agent_id)}</AgentID>"
            "</xml>"
        )
        return body.encode("utf-8"), msg_signature


# The envelope exactly as WeCom sends it: <xml> with simple children whose
# text is CDATA or plain characters (no markup, no "&", no "<!" of any kind).
# Such a body cannot hold a DTD or an entity, so the Encrypt value is read
# without building a tree — the receiver's hottest path.  Anything else goes
# through the full parser, which refuses DTDs and entities.
_ENVELOPE_CHILD = rb"<([A-Za-z]{1,32})>(?:<!\[CDATA\[([^\]<>&]*)\]\]>|([^<>&\]]*))</\1>"
_ENVELOPE = re.compile(rb"\A\s*<xml>(?:\s*" + _ENVELOPE_CHILD + rb")+\s*</xml>\s*\Z")
_CHILD = re.compile(_ENVELOPE_CHILD)


def _fast_encrypt(body: bytes) -> str | None:
    if len(body) > 256 * 1024 or not _ENVELOPE.match(body):
        return None
    found = [m for m in _CHILD.finditer(body) if m.group(1) == b"Encrypt"]
    if len(found) != 1:
        return None  # let the full parser decide
    value = found[0].group(2) if found[0].group(2) is not None else found[0].group(3)
    return value.decode("ascii", errors="strict") if value and value.isascii() else None


def extract_encrypt(body: bytes) -> str:
    """The ``Encrypt`` text of a callback POST body, parsed without DTDs or entities."""
    fast = _fast_encrypt(body)
    if fast:
        return fast
    try:
        root = parse_root(body)
    except XmlError as exc:
        raise CallbackError(400, exc.reason, f"callback body: {exc}") from exc
    # Only the root's own <Encrypt> child counts; nothing else of this unsigned
    # envelope is read (its ToUserName/AgentID are not covered by the signature).
    element = root.find("Encrypt")
    encrypt = element.text if element is not None and len(element) == 0 else None
    if not encrypt:
        raise CallbackError(400, "missing_encrypt", "callback body has no <Encrypt> element")
    # Not stripped: the signature covers the exact text, as in WeCom's own libraries.
    return encrypt


def _pad(data: bytes) -> bytes:
    count = WECOM_BLOCK_SIZE - len(data) % WECOM_BLOCK_SIZE  # 1..32, never 0
    return data + bytes([count]) * count


def _unpad(padded: bytes) -> bytes:
    """Strict PKCS#7 with 32-byte blocks: pad byte in 1..32 and all pad bytes equal.

    With CBC and no MAC, a wrong EncodingAESKey almost always lands here, so the
    message says so.
    """
    count = padded[-1]
    if not 1 <= count <= WECOM_BLOCK_SIZE or padded[-count:] != bytes([count]) * count:
        raise CallbackError(
            400,
            "bad_padding",
            f"invalid PKCS#7 padding (last byte {count}; WeCom pads 1..32 equal bytes): "
            "corrupted message or wrong EncodingAESKey",
        )
    return padded[:-count]


def _cdata(value: str) -> str:
    if "]]>" in value:  # CDATA cannot contain its own terminator; fall back to escaping
        return escape(value)
    return f"<![CDATA[{value}]]>"


def _printable(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text if len(text) <= 64 else text[:64] + "…"
