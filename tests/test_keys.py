"""Device keys: RFC 8032 vectors, key ids, strict verification, encrypted PEM storage."""

from __future__ import annotations

import base64
import fcntl
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import Camellia
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from clients.device import DeviceHome
from provenance.c2pa.authority import KEY_FILE, init_authority, load_authority
from provenance.core import keyfile, keys
from provenance.core.errors import KeyMaterialError, SignatureError
from provenance.core.keyfile import PBKDF2_ITERATIONS
from provenance.core.keys import DeviceKey, key_id, verify_strict
from tests.conftest import PASSPHRASE, ROOT, SAMPLES, Cli, pbkdf2_iterations, sign_sample
from tests.gil import holds_the_gil

# RFC 8032 section 7.1, TEST 1 (empty message).
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
    "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
# Group order L of edwards25519 (RFC 8032 section 5.1).
L = 2**252 + 27742317777372353535851937790883648493


def test_rfc8032_test1_public_key_and_signature() -> None:
    key = DeviceKey.from_private_bytes(RFC8032_SECRET)
    assert key.public_key == RFC8032_PUBLIC
    assert key.sign(b"") == RFC8032_SIGNATURE
    verify_strict(RFC8032_PUBLIC, b"", RFC8032_SIGNATURE)


def test_key_id_is_sha256_of_raw_public_key() -> None:
    expected = bytes.fromhex("21fe31dfa154a261626bf854046fd2271b7bed4b6abe45aa58877ef47f9721b9")
    assert key_id(RFC8032_PUBLIC) == expected
    assert DeviceKey.from_private_bytes(RFC8032_SECRET).key_id == expected


def test_generated_keys_sign_and_verify() -> None:
    key = DeviceKey.generate()
    other = DeviceKey.generate()
    assert len(key.public_key) == 32
    assert key.public_key != other.public_key
    signature = key.sign(b"capture")
    assert len(signature) == 64
    verify_strict(key.public_key, b"capture", signature)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_strict(key.public_key, b"capture!", signature)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_strict(other.public_key, b"capture", signature)


@pytest.mark.parametrize("length", [0, 31, 33])
def test_private_key_of_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(KeyMaterialError, match=f"got {length}"):
        DeviceKey.from_private_bytes(bytes(length))


@pytest.mark.parametrize("cut", [0, 1, 63])
def test_signature_of_wrong_length_is_refused(cut: int) -> None:
    with pytest.raises(SignatureError, match="64 bytes"):
        verify_strict(RFC8032_PUBLIC, b"", RFC8032_SIGNATURE[:cut])
    with pytest.raises(SignatureError, match="64 bytes"):
        verify_strict(RFC8032_PUBLIC, b"", RFC8032_SIGNATURE + bytes(1))


def test_malleated_s_plus_l_is_refused_as_non_canonical() -> None:
    s = int.from_bytes(RFC8032_SIGNATURE[32:], "little")
    malleated = RFC8032_SIGNATURE[:32] + (s + L).to_bytes(32, "little")
    with pytest.raises(SignatureError, match="non-canonical S"):
        verify_strict(RFC8032_PUBLIC, b"", malleated)


def test_wrong_public_key_length_is_key_material_error() -> None:
    with pytest.raises(KeyMaterialError, match="32 bytes"):
        verify_strict(RFC8032_PUBLIC[:31], b"", RFC8032_SIGNATURE)


def test_encrypted_pem_round_trip() -> None:
    key = DeviceKey.generate()
    pem = key.to_encrypted_pem(b"correct horse")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    loaded = DeviceKey.from_encrypted_pem(pem, b"correct horse")
    assert loaded.public_key == key.public_key
    verify_strict(key.public_key, b"m", loaded.sign(b"m"))


def test_a_device_key_file_costs_600000_pbkdf2_iterations_per_guess(tmp_path: Path) -> None:
    """`prov device init` wrote its key with cryptography's BestAvailableEncryption:
    PBKDF2-HMAC-SHA256 at 2,048 iterations, so a copied key file cost about 1 µs per
    guessed passphrase. It is written with 600,000 (OWASP 2023), a PKCS#8 any reader
    loads; a file written the old way still loads."""
    home = DeviceHome(tmp_path / "dev")
    state, _ = home.init(b"correct horse")
    pem = home.key_path.read_bytes()
    assert pbkdf2_iterations(pem) == PBKDF2_ITERATIONS == 600_000
    assert home.load_key(b"correct horse").key_id.hex() == state.device_id
    loaded = serialization.load_pem_private_key(pem, b"correct horse")  # a plain reader
    assert isinstance(loaded, Ed25519PrivateKey)
    old = loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"correct horse"),
    )
    assert pbkdf2_iterations(old) == 2048
    home.key_path.write_bytes(old)
    assert home.load_key(b"correct horse").key_id.hex() == state.device_id


def _old_format(pem: bytes, passphrase: bytes) -> bytes:
    """The key of ``pem`` as an older `prov device init` wrote it: cryptography's
    BestAvailableEncryption (PBKDF2 at 2,048 iterations)."""
    loaded = serialization.load_pem_private_key(pem, passphrase)
    old = loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    assert pbkdf2_iterations(old) == 2048
    return old


def test_an_older_key_file_is_rewritten_at_600000_iterations_when_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key file an older version wrote (2,048 iterations) stayed that cheap to guess
    for ever: nothing rewrote it. Opening it now rewrites it, same key and passphrase, at
    600,000, mode 0600, saying so; not while another command holds the device folder's
    lock (a `prov device init --force` may be writing a new key), and a file already at
    600,000, or scrypt, is left as it is."""
    home = DeviceHome(tmp_path / "dev")
    state, _ = home.init(b"correct horse")
    strong = home.key_path.read_bytes()
    home.load_key(b"correct horse")
    assert home.key_path.read_bytes() == strong  # already at today's work factor
    old = _old_format(strong, b"correct horse")
    home.key_path.write_bytes(old)
    with (home.root / ".lock").open("ab") as held:  # another command holds the folder
        fcntl.flock(held, fcntl.LOCK_EX)
        assert home.load_key(b"correct horse").key_id.hex() == state.device_id
        assert home.key_path.read_bytes() == old
    capsys.readouterr()
    assert home.load_key(b"correct horse").key_id.hex() == state.device_id
    assert "re-encrypted with PBKDF2 at 600,000 iterations" in capsys.readouterr().err
    rewritten = home.key_path.read_bytes()
    assert pbkdf2_iterations(rewritten) == 600_000
    assert os.stat(home.key_path).st_mode & 0o777 == 0o600
    assert home.load_key(b"correct horse").key_id.hex() == state.device_id
    assert home.key_path.read_bytes() == rewritten  # once
    assert not keyfile.weaker_than_written_here(rewritten)
    assert not keyfile.weaker_than_written_here(_crafted_pem(_pbkdf2(600_000)))
    assert not keyfile.weaker_than_written_here(_crafted_pem(_scrypt(16384, 8, 1)))
    assert keyfile.weaker_than_written_here(_crafted_pem(_pbkdf2(599_999)))
    assert keyfile.weaker_than_written_here(_crafted_pem(_PKCS12_3DES_2048))
    assert keyfile.weaker_than_written_here(b"")  # no encrypted PKCS#8 block at all


def test_an_older_key_file_is_not_rewritten_while_a_command_holds_the_folder_itself(
    tmp_path: Path,
) -> None:
    """A command holding the device folder (a `prov device init --force` writing a new
    key) whose ``.lock`` was removed, taken for a stale one: opening an older key file
    took the new ``.lock`` at once and rewrote the key file beside that command, which
    could put the old key back over the new one. Now the folder's own lock is tried too,
    and the key file is left as it is until no command holds the folder."""
    home = DeviceHome(tmp_path / "dev")
    state, _ = home.init(b"correct horse")
    old = _old_format(home.key_path.read_bytes(), b"correct horse")
    home.key_path.write_bytes(old)
    folder = os.open(home.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # another command holds the folder
        (home.root / ".lock").unlink(missing_ok=True)  # and its lock file was removed
        assert home.load_key(b"correct horse").key_id.hex() == state.device_id
        assert home.key_path.read_bytes() == old
    finally:
        os.close(folder)
    assert home.load_key(b"correct horse").key_id.hex() == state.device_id
    assert pbkdf2_iterations(home.key_path.read_bytes()) == 600_000


def test_an_older_key_file_behind_a_link_is_rewritten_where_it_points(tmp_path: Path) -> None:
    """A device_key.pem that is a symbolic link to the key kept elsewhere (another
    volume) was replaced by a regular file in the device folder: the 2,048-iteration copy
    stayed where its owner keeps the key, and a second copy appeared beside the state.
    Now the file it points to is rewritten and the link kept."""
    home = DeviceHome(tmp_path / "dev")
    state, _ = home.init(b"correct horse")
    kept = tmp_path / "volume" / "key.pem"
    kept.parent.mkdir()
    kept.write_bytes(_old_format(home.key_path.read_bytes(), b"correct horse"))
    home.key_path.unlink()
    home.key_path.symlink_to(kept)
    assert home.load_key(b"correct horse").key_id.hex() == state.device_id
    assert home.key_path.is_symlink()  # was a regular file: the link replaced
    assert pbkdf2_iterations(kept.read_bytes()) == 600_000  # was 2,048
    assert os.stat(kept).st_mode & 0o777 == 0o600
    assert home.load_key(b"correct horse").key_id.hex() == state.device_id


def test_prov_sign_with_an_older_key_file_signs_and_strengthens_it(enrolled: Cli) -> None:
    """Through the real CLI and a real `prov serve`: `prov sign` with a 2,048-iteration
    key file signs and logs as before, and leaves the file at 600,000 iterations."""
    home = DeviceHome(enrolled.home)
    home.key_path.write_bytes(_old_format(home.key_path.read_bytes(), PASSPHRASE.encode()))
    folder = enrolled.home.parent / "photos"
    folder.mkdir()
    sign_sample(enrolled, folder)
    assert pbkdf2_iterations(home.key_path.read_bytes()) == 600_000


def _crafted_pem(algorithm: bytes) -> bytes:
    """An ENCRYPTED PRIVATE KEY PEM of ``algorithm`` (a DER AlgorithmIdentifier) over
    48 random bytes: a reader derives the key the file asks for before it can tell."""
    der = keyfile._seq(algorithm, keyfile._tlv(0x04, os.urandom(48)))
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}-----END ENCRYPTED PRIVATE KEY-----\n".encode()


def _pbes2(kdf: bytes) -> bytes:
    aes = keyfile._seq(keyfile._AES256_CBC, keyfile._tlv(0x04, os.urandom(16)))
    return keyfile._seq(keyfile._PBES2, keyfile._seq(kdf, aes))


def _pbkdf2(count: int) -> bytes:
    prf = keyfile._seq(keyfile._HMAC_SHA256, keyfile._NULL)
    salt = keyfile._tlv(0x04, os.urandom(16))
    return _pbes2(keyfile._seq(keyfile._PBKDF2, keyfile._seq(salt, keyfile._int(count), prf)))


def _scrypt(n: int, r: int, p: int) -> bytes:
    salt = keyfile._tlv(0x04, os.urandom(16))
    ints = keyfile._int(n) + keyfile._int(r) + keyfile._int(p)
    return _pbes2(keyfile._seq(keyfile._SCRYPT, keyfile._seq(salt, ints)))


#: pbeWithSHAAnd3-KeyTripleDES-CBC (PKCS#12): SEQUENCE { salt, iterations }
_PKCS12_3DES = bytes.fromhex("060a2a864886f70d010c0103")
#: that scheme at 2,048 iterations
_PKCS12_3DES_2048 = keyfile._seq(
    _PKCS12_3DES, keyfile._seq(keyfile._tlv(0x04, os.urandom(8)), keyfile._int(2048))
)


@pytest.mark.parametrize(
    ("algorithm", "said"),
    [
        (_pbkdf2(2**31 - 1), "it asks for 2,147,483,647 PBKDF2 iterations"),
        (_scrypt(2**20, 8, 2**20), "it asks for scrypt with N=1048576, r=8, p=1048576"),
        (_scrypt(2**14, 1, 2**30), "it asks for scrypt with N=16384, r=1, p=1073741824"),
        (
            keyfile._seq(
                _PKCS12_3DES, keyfile._seq(keyfile._tlv(0x04, b"s" * 8), keyfile._int(2**31 - 1))
            ),
            "it asks for 2,147,483,647 password-based encryption iterations",
        ),
    ],
    ids=["pbkdf2-2^31", "scrypt-huge-n", "scrypt-huge-p", "pkcs12-2^31"],
)
def test_a_key_file_asking_for_minutes_of_key_derivation_is_refused_unopened(
    tmp_path: Path, algorithm: bytes, said: str
) -> None:
    """The iteration count (or scrypt cost) is the key file's to say, and OpenSSL runs
    it: a crafted device_key.pem asking 2**31 PBKDF2 iterations held prov sign on one
    core for about ten minutes per attempt, the passphrase right or wrong, and Ctrl-C
    does not reach OpenSSL's loop. It is refused at once, saying what it asks for. The
    real CLI in a child process, so the code before the fix times out instead of hanging
    the run."""
    home = tmp_path / "device"
    env = {**os.environ, "PROV_PASSPHRASE": "correct horse"}
    init = subprocess.run(
        [sys.executable, "-m", "clients.cli", "device", "init", "--home", str(home)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    DeviceHome(home).key_path.write_bytes(_crafted_pem(algorithm))
    photo = tmp_path / "rocket.jpg"
    photo.write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "clients.cli",
                "sign",
                "--home",
                str(home),
                "--server",
                "127.0.0.1:9",
                str(photo),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("prov sign was still deriving the crafted key file's key after 60 s")
    assert done.returncode == 1, done.stderr
    assert "the private key file is refused unopened: " + said in done.stderr
    assert not (tmp_path / "rocket.jpg.prov").exists()


def test_a_key_file_at_the_caps_still_loads() -> None:
    """The caps refuse only what no writer uses: a key file at MAX_PBKDF2_ITERATIONS,
    one openssl pkcs8 -scrypt writes (N=16384, r=8, p=1), a PKCS#12 3DES one, and a
    damaged one is one sentence."""
    key = DeviceKey.generate()
    info = key._private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    at_cap = keyfile.encrypt_pkcs8_pem(info, b"pw", iterations=keyfile.MAX_PBKDF2_ITERATIONS)
    assert DeviceKey.from_encrypted_pem(at_cap, b"pw").public_key == key.public_key
    keyfile.check_kdf_cost(_crafted_pem(_scrypt(16384, 8, 1)))
    keyfile.check_kdf_cost(_crafted_pem(_pbkdf2(2048)))
    with pytest.raises(KeyMaterialError, match="over the most this program runs"):
        keyfile.check_kdf_cost(_crafted_pem(_pbkdf2(keyfile.MAX_PBKDF2_ITERATIONS + 1)))
    with pytest.raises(KeyMaterialError, match="the private key file is damaged"):
        keyfile.check_kdf_cost(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAo=\n-----END ENCRYPTED PRIVATE KEY-----\n"
        )


def test_encrypted_pem_refuses_empty_passphrase() -> None:
    key = DeviceKey.generate()
    with pytest.raises(KeyMaterialError, match="empty passphrase"):
        key.to_encrypted_pem(b"")
    pem = key.to_encrypted_pem(b"pw")
    with pytest.raises(KeyMaterialError, match="non-empty passphrase"):
        DeviceKey.from_encrypted_pem(pem, b"")


def test_wrong_passphrase_is_key_material_error() -> None:
    pem = DeviceKey.generate().to_encrypted_pem(b"right")
    with pytest.raises(KeyMaterialError) as e:
        DeviceKey.from_encrypted_pem(pem, b"wrong")
    assert str(e.value) == (
        "cannot decrypt the private key: the passphrase is wrong, or the key file is damaged"
    )


def test_corrupt_pem_is_key_material_error() -> None:
    pem = bytearray(DeviceKey.generate().to_encrypted_pem(b"pw"))
    middle = len(pem) // 2
    pem[middle : middle + 8] = bytes(b ^ 0x01 for b in pem[middle : middle + 8])
    with pytest.raises(KeyMaterialError):
        DeviceKey.from_encrypted_pem(bytes(pem), b"pw")
    with pytest.raises(KeyMaterialError):
        DeviceKey.from_encrypted_pem(b"not a pem at all", b"pw")


def test_unencrypted_pem_is_refused() -> None:
    plain = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyMaterialError, match="not encrypted"):
        DeviceKey.from_encrypted_pem(plain, b"pw")


def test_non_ed25519_key_is_refused() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(KeyMaterialError, match="expected an Ed25519 private key"):
        DeviceKey.from_encrypted_pem(pem, b"pw")


def test_repr_shows_key_id_not_secret() -> None:
    key = DeviceKey.from_private_bytes(RFC8032_SECRET)
    text = repr(key)
    assert "21fe31dfa154a261" in text
    assert RFC8032_SECRET.hex() not in text


@pytest.fixture(scope="module")
def long_signed() -> tuple[bytes, bytes, bytes]:
    """A 32 MiB message (tens of milliseconds to verify), its public key and signature."""
    message = bytes(32 << 20)
    key = DeviceKey.from_private_bytes(RFC8032_SECRET)
    return message, key.public_key, key.sign(message)


def test_verification_holds_the_gil_unless_told_to_release_it(
    long_signed: tuple[bytes, bytes, bytes],
) -> None:
    """The GIL is kept through libsodium's check by default (an event loop's thread: a
    switch would cost it up to 5 ms) and given away with ``release_gil`` (the log
    writer's thread), so that other threads run meanwhile."""
    message, public, signature = long_signed
    assert holds_the_gil(lambda: verify_strict(public, message, signature))
    assert holds_the_gil(lambda: verify_strict(public, message, signature, release_gil=False))
    assert not holds_the_gil(lambda: verify_strict(public, message, signature, release_gil=True))


@pytest.mark.parametrize("release_gil", [False, True], ids=["gil-held", "gil-released"])
def test_each_libsodium_binding_verifies_and_holds_the_gil_as_asked(
    long_signed: tuple[bytes, bytes, bytes], release_gil: bool
) -> None:
    """Each ctypes binding of libsodium's crypto_sign_ed25519_verify_detached, made as the
    module makes its two at import: 0 for a valid signature and -1 for any other; the GIL
    held through the call or given away as asked."""
    message, public, signature = long_signed
    verify = keys._sodium_verifier(release_gil)
    assert verify(RFC8032_SIGNATURE, b"", 0, RFC8032_PUBLIC) == 0
    assert verify(RFC8032_SIGNATURE, b"x", 1, RFC8032_PUBLIC) == -1
    bad = signature[:-1] + bytes([signature[-1] ^ 1])
    assert verify(bad, message, len(message), public) == -1
    held = holds_the_gil(lambda: verify(signature, message, len(message), public) == 0)
    assert held is not release_gil


def test_a_key_of_an_unsupported_kind_is_refused_as_such() -> None:
    """An encrypted key of a kind `cryptography` cannot load (here an EC key on the SM2
    curve) is refused naming what is unsupported, not as an unsupported encryption (the
    file is encrypted as this program writes it)."""
    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    p256 = bytes.fromhex("06082a8648ce3d030107")  # OID 1.2.840.10045.3.1.7
    sm2 = bytes.fromhex("06082a811ccf5501822d")  # OID 1.2.156.10197.1.301, the same length
    assert der.count(p256) == 1
    pem = keyfile.encrypt_pkcs8_pem(der.replace(p256, sm2), b"pw", iterations=1000)
    with pytest.raises(
        KeyMaterialError,
        match=r"^the private key uses an algorithm this program does not support \(.*"
        r"1\.2\.156\.10197\.1\.301.*\)$",
    ):
        DeviceKey.from_encrypted_pem(pem, b"pw")


def _encrypted_with(
    info: bytes,
    passphrase: bytes,
    prf: tuple[bytes, hashes.HashAlgorithm],
    cipher: tuple[bytes, Callable[[bytes], BlockCipherAlgorithm]],
) -> bytes:
    """``info`` (PKCS#8 DER) as a genuine PBES2 ``ENCRYPTED PRIVATE KEY`` PEM with PBKDF2
    under the PRF ``prf`` (its DER OID, its hash) and the CBC cipher ``cipher`` (its DER
    OID, its algorithm from a key): what ``openssl pkcs8 -topk8 -v2 CIPHER -v2prf PRF``
    writes."""
    salt, iv = os.urandom(16), os.urandom(16)
    key = PBKDF2HMAC(algorithm=prf[1], length=32, salt=salt, iterations=1000).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    enc = Cipher(cipher[1](key), modes.CBC(iv)).encryptor()
    sealed = enc.update(padder.update(info) + padder.finalize()) + enc.finalize()
    kdf_params = keyfile._seq(
        keyfile._tlv(0x04, salt), keyfile._int(1000), keyfile._seq(prf[0], keyfile._NULL)
    )
    params = keyfile._seq(
        keyfile._seq(keyfile._PBKDF2, kdf_params),
        keyfile._seq(cipher[0], keyfile._tlv(0x04, iv)),
    )
    return _pem(keyfile._seq(keyfile._seq(keyfile._PBES2, params), keyfile._tlv(0x04, sealed)))


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}-----END ENCRYPTED PRIVATE KEY-----\n".encode()


_SHA256_PRF = (keyfile._HMAC_SHA256, hashes.SHA256())
_AES256 = (keyfile._AES256_CBC, algorithms.AES)
_CAMELLIA256 = (bytes.fromhex("060b2a83088c9a4b3d01010104"), Camellia)  # 1.2.392.200011.61.1.1.1.4
_SHA512_256_PRF = (
    bytes.fromhex("06082a864886f70d020d"),
    hashes.SHA512_256(),
)  # 1.2.840.113549.2.13


@pytest.mark.parametrize(
    ("prf", "cipher", "found"),
    [
        (_SHA256_PRF, _CAMELLIA256, "camellia-256-cbc (OID 1.2.392.200011.61.1.1.1.4)"),
        (_SHA512_256_PRF, _AES256, "PBKDF2 with hmacWithSHA512-256 (OID 1.2.840.113549.2.13)"),
    ],
    ids=["camellia", "sha512-256-prf"],
)
def test_a_key_file_encrypted_with_an_unsupported_algorithm_says_which(
    tmp_path: Path,
    prf: tuple[bytes, hashes.HashAlgorithm],
    cipher: tuple[bytes, Callable[[bytes], BlockCipherAlgorithm]],
    found: str,
) -> None:
    """A key file `openssl pkcs8 -topk8 -v2 camellia-256-cbc` (or ``-v2prf
    hmacWithSHA512-256``) wrote, opened with the RIGHT passphrase: before, "the passphrase
    is wrong, or the key file is damaged" (a user then retypes a correct passphrase);
    now the algorithm found and those this program decrypts. Device key and enrollment
    authority key alike; a wrong passphrase on a supported file is still said so."""
    key = DeviceKey.generate()
    info = key._private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = _encrypted_with(info, b"right", prf, cipher)
    with pytest.raises(KeyMaterialError) as e:
        DeviceKey.from_encrypted_pem(pem, b"right")
    said = str(e.value)
    assert said.startswith(
        f"cannot decrypt the private key: it is encrypted with {found}, which this program"
        " does not decrypt (it decrypts PBES2: PBKDF2 with HMAC-SHA1, -SHA224, -SHA256,"
    ), said
    assert "AES-128/192/256-CBC" in said and "openssl pkcs8 -topk8" in said, said
    assert "passphrase is wrong" not in said, said
    supported = _encrypted_with(info, b"right", _SHA256_PRF, _AES256)
    assert DeviceKey.from_encrypted_pem(supported, b"right").public_key == key.public_key
    with pytest.raises(KeyMaterialError, match="the passphrase is wrong"):
        DeviceKey.from_encrypted_pem(supported, b"wrong")

    ca = tmp_path / "ca"
    init_authority(ca, now=datetime.now(UTC), passphrase=b"right")
    authority = serialization.load_pem_private_key((ca / KEY_FILE).read_bytes(), b"right")
    (ca / KEY_FILE).write_bytes(
        _encrypted_with(
            authority.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            b"right",
            prf,
            cipher,
        )
    )
    with pytest.raises(KeyMaterialError) as e:
        load_authority(ca, b"right")
    said = str(e.value)
    assert said.startswith(
        f"cannot decrypt the enrollment authority key in {ca}: it is encrypted with {found},"
    ), said


@pytest.mark.parametrize(
    "oid, found",
    [
        # 2.999.1: a first subidentifier of two bytes (before: "OID 2.56.55.1")
        (bytes.fromhex("0603883701"), "OID 2.999.1"),
        (bytes.fromhex("06062a8648ce3d02"), "OID 1.2.840.10045.2"),
        # an OID body of 400,002 bytes: before, 12 s of quadratic arithmetic, then "the
        # passphrase is wrong" (the arc had more digits than Python prints)
        (keyfile._tlv(0x06, b"\x2a" + b"\xff" * 400_000 + b"\x01"), "an OID of 400,002 bytes"),
    ],
    ids=["2.999.1", "ecPublicKey", "400 kB"],
)
def test_an_unknown_scheme_is_named_by_its_oid_quickly(oid: bytes, found: str) -> None:
    """A key file whose encryption scheme is an OID nobody reads: named by its dotted
    form, decoded as X.690 says (the first two arcs share the first subidentifier,
    which may take several bytes), and an OID far longer than any real one by its size
    alone (the message names the size: the OID was not decoded)."""
    der = keyfile._seq(keyfile._seq(oid, keyfile._seq()), keyfile._tlv(0x04, b"x" * 48))
    with pytest.raises(KeyMaterialError) as e:
        DeviceKey.from_encrypted_pem(_pem(der), b"right")
    assert f"it is encrypted with {found}, which this program does not decrypt" in str(e.value)
