"""Model signing: every published version is signed with the learner's key; robots load only what a trusted key signed.

The registry (MLflow) is not trusted to say which weights are good: whoever can write to it could otherwise make every
robot run their weights. So a publisher signs, with an Ed25519 private key only publishers hold, a canonical message
that binds what robots load and where it sits in the registry::

    fleet-model-version/v1
    {"config_sha256":"…","model":"fleet-vla","version":"7","weights_sha256":"…"}

(JSON with sorted keys and no spaces.) The version number is in it, so a signed version cannot be replayed under a
newer number; both files' digests are in it, so no byte a robot loads can change. A rollback points the alias at an
older version whose own signature still holds. The signature rides beside the sha256 as version tags (`TAGS`), and
robots check it (`verify_version`) before they download anything, then load only files with the signed digests.

Keys are PEM files: the private key (`FLEET_SIGNING_KEY_FILE`) on publishers only, the trusted public keys
(`FLEET_TRUSTED_KEYS_FILE`, one or more, so the learner's key can be rotated) on robots. Outside production a pair is
generated once under `FLEET_HOME/keys/` (private key 0600) when none is configured; production refuses to run without
them. Make a pair with `openssl genpkey -algorithm ed25519 -out signing-key.pem` and
`openssl pkey -in signing-key.pem -pubout -out trusted-keys.pem` (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleet.settings import Settings

log = logging.getLogger(__name__)

MESSAGE_PREFIX = b"fleet-model-version/v1\n"
WEIGHTS_TAG = "sha256"  # the weights' sha256 (the tag robots always checked)
CONFIG_TAG = "config_sha256"  # config.json's sha256
SIGNATURE_TAG = "signature"  # base64 Ed25519 signature of `signing_message`
KEY_TAG = "signature_key"  # `key_id` of the key that signed
TAGS = (CONFIG_TAG, SIGNATURE_TAG, KEY_TAG)
LOCAL_KEY_DIR = "keys"  # under Settings.home, outside production
LOCAL_PRIVATE = "signing-key.pem"
LOCAL_PUBLIC = "trusted-keys.pem"
_PUBLIC_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)
_HEX64 = re.compile(r"[0-9a-f]{64}")

TrustedKeys = Mapping[str, Ed25519PublicKey]  # key id -> public key


class SignatureError(ValueError):
    """A version is unsigned, signed by a key robots do not trust, or its signature does not match; never loaded."""


class KeyFileError(RuntimeError):
    """A signing or trusted-keys file is missing or not what it must be; the message says what to set."""


@dataclass(frozen=True)
class SignedVersion:
    """What a trusted signature vouches for: the files with these digests are this version of this model."""

    model_name: str
    version: str
    weights_sha256: str  # the weights file robots load (hex)
    config_sha256: str  # config.json (hex)
    key_id: str  # which trusted key signed it


def key_id(key: Ed25519PublicKey) -> str:
    """Short id of a public key (hex of the sha256 of its raw bytes, first 16): names it in tags and messages."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def signing_message(*, model_name: str, version: str, weights_sha256: str, config_sha256: str) -> bytes:
    """The canonical bytes a version's signature covers (see the module docstring)."""
    body = {
        "config_sha256": config_sha256,
        "model": model_name,
        "version": str(version),
        "weights_sha256": weights_sha256,
    }
    return MESSAGE_PREFIX + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_version(
    key: Ed25519PrivateKey, *, model_name: str, version: str, weights_sha256: str, config_sha256: str
) -> dict[str, str]:
    """The tags that sign `version` (config digest, signature, key id); the caller sets them on the version."""
    for name, digest in (("weights_sha256", weights_sha256), ("config_sha256", config_sha256)):
        if not _HEX64.fullmatch(digest):
            raise ValueError(f"{name} must be a lower-case hex sha256, got {digest!r}")
    message = signing_message(
        model_name=model_name, version=version, weights_sha256=weights_sha256, config_sha256=config_sha256
    )
    return {
        CONFIG_TAG: config_sha256,
        SIGNATURE_TAG: base64.b64encode(key.sign(message)).decode("ascii"),
        KEY_TAG: key_id(key.public_key()),
    }


def verify_version(keys: TrustedKeys, *, model_name: str, version: str, tags: Mapping[str, str]) -> SignedVersion:
    """What a version's tags are signed to be; SignatureError naming the problem when a trusted key did not sign them.

    `model_name` and `version` come from the robot's own lookup, never from the tags, so a signature made for another
    model or another version number does not match.
    """
    signature = tags.get(SIGNATURE_TAG) or ""
    if not signature:
        raise SignatureError(f"version {version} is unsigned: robots load only versions signed by the learner's key")
    signer = tags.get(KEY_TAG) or ""
    key = keys.get(signer)
    if key is None:
        raise SignatureError(
            f"version {version}: signature by an untrusted key {signer or '(none named)'!r}"
            f" (trusted: {', '.join(sorted(keys)) or 'none'}; see FLEET_TRUSTED_KEYS_FILE)"
        )
    weights, config = tags.get(WEIGHTS_TAG) or "", tags.get(CONFIG_TAG) or ""
    message = signing_message(model_name=model_name, version=version, weights_sha256=weights, config_sha256=config)
    try:
        key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureError(
            f"version {version}: signature does not match (model {model_name!r}, sha256 {weights[:12] or '-'},"
            f" config {config[:12] or '-'}, key {signer}): the registry's tags were changed after signing"
        ) from None
    return SignedVersion(model_name, str(version), weights, config, signer)


# ---- key files ---------------------------------------------------------------------------------------------------


def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The publisher's private key: FLEET_SIGNING_KEY_FILE, else (outside production) the generated local one."""
    if settings.signing_key_file is not None:
        return _read_private(settings.signing_key_file, "FLEET_SIGNING_KEY_FILE")
    if settings.env == "production":
        raise KeyFileError(
            "production needs FLEET_SIGNING_KEY_FILE (the learner's Ed25519 private key, PEM) to publish a model"
            " version; no key is generated in production (docs/security.md: model signing)"
        )
    private, _ = ensure_local_keys(settings.home)
    return _read_private(private, "the local signing key")


def load_trusted_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """The public keys whose signatures robots accept, by key id.

    FLEET_TRUSTED_KEYS_FILE, else (outside production) the public half of the local signing key: the configured
    FLEET_SIGNING_KEY_FILE's, or the generated pair's.
    """
    if settings.trusted_keys_file is not None:
        return read_trusted_keys(settings.trusted_keys_file, "FLEET_TRUSTED_KEYS_FILE")
    if settings.env == "production":
        raise KeyFileError(
            "production needs FLEET_TRUSTED_KEYS_FILE (the learner's Ed25519 public key(s), PEM) to load model"
            " versions; robots hold only public keys (docs/security.md: model signing)"
        )
    if settings.signing_key_file is not None:
        public = _read_private(settings.signing_key_file, "FLEET_SIGNING_KEY_FILE").public_key()
        return {key_id(public): public}
    _, public_file = ensure_local_keys(settings.home)
    return read_trusted_keys(public_file, "the local trusted keys")


def read_trusted_keys(path: Path, what: str) -> dict[str, Ed25519PublicKey]:
    """Every Ed25519 public key in a PEM file (one or more blocks), by key id."""
    data = _read(path, what)
    if b"PRIVATE KEY" in data:
        raise KeyFileError(
            f"{what} {path} holds a private key: give robots the public half only (openssl pkey -pubout)"
        )
    keys: dict[str, Ed25519PublicKey] = {}
    for block in _PUBLIC_PEM.findall(data):
        try:
            key = serialization.load_pem_public_key(block)
        except ValueError as err:
            raise KeyFileError(f"{what} {path}: a PEM block does not parse ({err})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{what} {path}: every key must be Ed25519, found {type(key).__name__}")
        keys[key_id(key)] = key
    if not keys:
        raise KeyFileError(f"{what} {path} holds no PEM public key (-----BEGIN PUBLIC KEY-----)")
    return keys


def ensure_local_keys(home: Path) -> tuple[Path, Path]:
    """The local key pair under `home`/keys, generated once (private key 0600, directory 0700); for outside production.

    Safe when several processes start on a fresh home at once: the private key appears whole or not at all (a hard
    link of a finished file), the first one wins, and the public file is derived from it.
    """
    directory = Path(home) / LOCAL_KEY_DIR
    private, public = directory / LOCAL_PRIVATE, directory / LOCAL_PUBLIC
    if not private.is_file():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = _write_new(directory, pem, mode=0o600)
        try:
            os.link(tmp, private)
            log.warning("signing: generated a local model-signing key pair in %s (not for production)", directory)
        except FileExistsError:
            pass  # another process made it first: everyone uses that one
        finally:
            tmp.unlink()
    if not public.is_file():
        key = _read_private(private, "the local signing key").public_key()
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        os.replace(_write_new(directory, pem, mode=0o644), public)
    return private, public


def _write_new(directory: Path, data: bytes, *, mode: int) -> Path:
    tmp = directory / f".key.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise KeyFileError(
            f"{what} {path} cannot be read ({err.strerror}); check the path and its permissions"
        ) from None


def _read_private(path: Path, what: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path, what), password=None)
    except (ValueError, TypeError) as err:  # the key's bytes stay out of the message
        raise KeyFileError(f"{what} {path} is not an unencrypted PEM private key ({type(err).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{what} {path} must hold an Ed25519 key, found {type(key).__name__}")
    return key
