"""Model signing (fleet.signing): what a signature binds, which keys robots trust, where the keys come from.

Unit tests, no services: tests/actors/test_reload.py runs the same checks through a robot's reloader and
tests/registry/test_registry.py through the real MLflow server.
"""

from __future__ import annotations

import hashlib
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.settings import Settings
from fleet.signing import (
    KeyFileError,
    SignatureError,
    SignedVersion,
    TrustedKeys,
    ensure_local_keys,
    key_id,
    load_signing_key,
    load_trusted_keys,
    read_trusted_keys,
    sign_version,
    signing_message,
    verify_version,
)

LEARNER = Ed25519PrivateKey.generate()
TRUSTED = {key_id(LEARNER.public_key()): LEARNER.public_key()}
WEIGHTS = hashlib.sha256(b"weights").hexdigest()
CONFIG = hashlib.sha256(b"config").hexdigest()


def _tags(key: Ed25519PrivateKey = LEARNER, *, version: str = "7", model: str = "fleet-vla") -> dict[str, str]:
    """A version's tags as `Registry.publish` leaves them."""
    signed = sign_version(key, model_name=model, version=version, weights_sha256=WEIGHTS, config_sha256=CONFIG)
    return {"sha256": WEIGHTS, "parent_version": "6", **signed}


def _verify(tags: dict[str, str], *, version: str = "7", keys: TrustedKeys = TRUSTED) -> SignedVersion:
    return verify_version(keys, model_name="fleet-vla", version=version, tags=tags)


def test_a_signed_version_verifies_to_the_digests_it_binds() -> None:
    signed = _verify(_tags())
    assert signed.weights_sha256 == WEIGHTS and signed.config_sha256 == CONFIG
    assert signed.version == "7" and signed.key_id == key_id(LEARNER.public_key())
    # the message is canonical: fixed prefix, sorted keys, no spaces, the version number as a string
    message = signing_message(model_name="m", version="7", weights_sha256="a", config_sha256="b")
    assert message == b'fleet-model-version/v1\n{"config_sha256":"b","model":"m","version":"7","weights_sha256":"a"}'


def test_a_missing_signature_is_unsigned() -> None:
    tags = _tags()
    del tags["signature"]
    with pytest.raises(SignatureError, match="version 7 is unsigned"):
        _verify(tags)
    with pytest.raises(SignatureError, match="is unsigned"):
        _verify({"sha256": WEIGHTS})  # a version registered straight into MLflow


def test_another_key_is_untrusted_even_when_it_claims_a_trusted_id() -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError, match="signature by an untrusted key"):
        _verify(_tags(other))
    # naming the learner's key id does not help: its signature does not verify under that key
    forged = {**_tags(other), "signature_key": key_id(LEARNER.public_key())}
    with pytest.raises(SignatureError, match="signature does not match"):
        _verify(forged)
    with pytest.raises(SignatureError, match="untrusted key"):
        _verify({**_tags(), "signature_key": ""})


@pytest.mark.parametrize(
    "change",
    [
        {"version": "8"},  # version 7's signature replayed as a newer number
        {"sha256": hashlib.sha256(b"other weights").hexdigest()},  # weights swapped, tag updated
        {"config_sha256": hashlib.sha256(b"other config").hexdigest()},  # config swapped, tag updated
        {"signature": "not base64!"},
        {"signature": "AAAA"},  # base64, but no Ed25519 signature
        {"model": "another-fleet"},  # signed for another registered model
    ],
)
def test_anything_changed_after_signing_does_not_match(change: dict[str, str]) -> None:
    tags = _tags(model=change.pop("model", "fleet-vla"))
    version = change.pop("version", "7")
    with pytest.raises(SignatureError, match="version .* signature does not match"):
        _verify({**tags, **change}, version=version)


def test_several_trusted_keys_let_the_learner_key_rotate(tmp_path: Path) -> None:
    new = Ed25519PrivateKey.generate()
    pem = b"".join(
        k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        for k in (LEARNER, new)
    )
    (tmp_path / "trusted.pem").write_bytes(b"# old learner key, then the new one\n" + pem)
    keys = read_trusted_keys(tmp_path / "trusted.pem", "FLEET_TRUSTED_KEYS_FILE")
    assert set(keys) == {key_id(LEARNER.public_key()), key_id(new.public_key())}
    _verify(_tags(LEARNER), keys=keys)  # versions signed before the rotation (rollback targets) still load
    _verify(_tags(new), keys=keys)
    only_new = {key_id(new.public_key()): new.public_key()}
    with pytest.raises(SignatureError, match="untrusted key"):  # once the old key is dropped, its versions are not
        _verify(_tags(LEARNER), keys=only_new)


def test_trusted_keys_file_holds_ed25519_public_keys_only(tmp_path: Path) -> None:
    private = LEARNER.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "private.pem").write_bytes(private)
    with pytest.raises(KeyFileError, match="holds a private key"):
        read_trusted_keys(tmp_path / "private.pem", "FLEET_TRUSTED_KEYS_FILE")
    ec_public = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "ec.pem").write_bytes(
        ec_public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match="must be Ed25519"):
        read_trusted_keys(tmp_path / "ec.pem", "FLEET_TRUSTED_KEYS_FILE")
    (tmp_path / "empty.pem").write_text("nothing here\n")
    with pytest.raises(KeyFileError, match="holds no PEM public key"):
        read_trusted_keys(tmp_path / "empty.pem", "FLEET_TRUSTED_KEYS_FILE")
    with pytest.raises(KeyFileError, match="cannot be read"):
        read_trusted_keys(tmp_path / "missing.pem", "FLEET_TRUSTED_KEYS_FILE")


def test_a_bad_signing_key_file_is_refused_without_its_contents(tmp_path: Path) -> None:
    secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGJ5dGVz\n-----END PRIVATE KEY-----\n"
    (tmp_path / "bad.pem").write_text(secret)
    settings = Settings(home=tmp_path, signing_key_file=tmp_path / "bad.pem")
    with pytest.raises(KeyFileError) as err:
        load_signing_key(settings)
    assert "not an unencrypted PEM private key" in str(err.value) and "c2VjcmV0" not in str(err.value)


def test_outside_production_a_key_pair_is_made_once_under_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    key = load_signing_key(settings)
    private, public = ensure_local_keys(settings.home)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    assert b"PRIVATE" not in public.read_bytes()
    assert load_signing_key(settings).public_key() == key.public_key()  # not made again
    assert list(load_trusted_keys(settings)) == [key_id(key.public_key())]
    signed = sign_version(key, model_name="fleet-vla", version="1", weights_sha256=WEIGHTS, config_sha256=CONFIG)
    verify_version(load_trusted_keys(settings), model_name="fleet-vla", version="1", tags={"sha256": WEIGHTS, **signed})


def test_processes_starting_on_a_fresh_home_agree_on_one_key(tmp_path: Path) -> None:
    barrier, found = threading.Barrier(8), []

    def start() -> None:
        barrier.wait()
        found.append(key_id(load_signing_key(Settings(home=tmp_path)).public_key()))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 8 and len(set(found)) == 1
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["signing-key.pem", "trusted-keys.pem"]


def test_a_configured_signing_key_is_trusted_locally_and_env_names_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = LEARNER.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "learner.pem").write_bytes(pem)
    monkeypatch.setenv("FLEET_SIGNING_KEY_FILE", str(tmp_path / "learner.pem"))
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    settings = Settings()
    assert load_signing_key(settings).public_key() == LEARNER.public_key()
    assert load_trusted_keys(settings) == TRUSTED  # its public half, when no trusted keys file is set
    assert not (tmp_path / "home" / "keys").exists()  # nothing generated


def test_production_never_generates_keys(tmp_path: Path) -> None:
    production = Settings(home=tmp_path).model_copy(update={"env": "production"})
    with pytest.raises(KeyFileError, match="production needs FLEET_SIGNING_KEY_FILE"):
        load_signing_key(production)
    with pytest.raises(KeyFileError, match="production needs FLEET_TRUSTED_KEYS_FILE"):
        load_trusted_keys(production)
    # a robot with the public key only: it may load versions, and has nothing to sign with
    (tmp_path / "trusted.pem").write_bytes(
        LEARNER.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    robot = production.model_copy(update={"trusted_keys_file": tmp_path / "trusted.pem"})
    assert load_trusted_keys(robot) == TRUSTED
    with pytest.raises(KeyFileError, match="FLEET_SIGNING_KEY_FILE"):
        load_signing_key(robot)
    assert not (tmp_path / "keys").exists()
