"""The device folder itself: its paths, the encrypted key, its state (device.json), a
new key replacing the old one crash-safe (`DeviceFolder.init`), and the lock every
device command holds."""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shlex
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from clients import devicelock
from clients.device.disk import atomic_write, read_device_file
from clients.device.leftovers import clean_leftovers
from clients.device.state import REPAIR_ADVICE, DeviceState, _parse_state, state_bytes
from provenance.cli.atomicfile import fsync_folder
from provenance.core.errors import ConfigError
from provenance.core.files import file_kind
from provenance.core.keyfile import PBKDF2_ITERATIONS, weaker_than_written_here
from provenance.core.keys import DeviceKey
from provenance.wire.jsontext import loads_text


class DeviceFolder:
    """A device folder's key, state and lock (see `clients.device`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.key_path = self.root / "device_key.pem"
        self.state_path = self.root / "device.json"
        self.queue_dir = self.root / "queue"
        self.set_aside_dir = self.root / "set_aside"
        self.sidecar_dir = self.root / "sidecars"
        self.cert_path = self.root / "device_cert.pem"
        #: whether this object holds the folder's lock (`locked`)
        self._holding = False
        #: the key file's bytes, the passphrase, and the key `check_passphrase` decrypted
        #: from them: `load_key` takes it while the file holds the same bytes
        self._decrypted: tuple[bytes, bytes, DeviceKey] | None = None

    def check_init(self, force: bool = False) -> None:
        """Raise ConfigError when `init` would refuse: a key exists and not ``force`` (asked
        before the passphrase prompt, so nobody types a passphrase twice for nothing)."""
        if self.key_path.exists() and not force:
            raise ConfigError(
                f"a device key already exists at {self.key_path}; use --force to replace it"
                " with a new key (then enroll that one): the old key is gone and signs no"
                " more; its claims stay signed and verifiable, and what it still had queued"
                f" moves to {self.root}/replaced/OLD_DEVICE_ID/ (`prov device sync --home"
                " FOLDER` submits it)"
            )

    def init(self, passphrase: bytes, force: bool = False) -> tuple[DeviceState, Path | None]:
        """Create a new device key. Refuses to overwrite one unless ``force`` (ConfigError,
        see `check_init`). Returns the new device's state and, when it replaced a device
        (with ``force``, or one whose key was deleted), the folder ``replaced/DEVICE_ID/``
        that device's files other than the key were moved to: its state, certificate,
        queue, set-aside claims, kept sidecars and the state copies a repair set aside
        (``device.json.damaged-*``), a device folder of its own (`prov device
        sync --home` submits its queue there). The new key's claims are numbered from 1
        again, so left here they would be overwritten by its entries of the same numbers,
        and the old certificate would be taken for the new key's. Hold `locked` around it.
        Raises OSError.

        Crash-safe: the new key, state and empty queue are written into ``.init-new.tmp/``
        first, which one rename makes ``.init-new/``, naming the folder the old device moves
        to. Killed before that rename, the old device is untouched (the next `init`
        removes the leftover folder); after it, the replacement is decided, and the next
        command that reads the folder finishes it (`finish_init`) before anything else.
        """
        self.check_init(force)
        self.root.mkdir(parents=True, exist_ok=True)
        self.finish_init()  # one killed before: its replacement first
        key = DeviceKey.generate()
        state = DeviceState(device_id=key.key_id.hex(), public_key=key.public_key.hex())
        staging = self.root / ".init-new.tmp"
        if os.path.lexists(staging):
            shutil.rmtree(staging)  # a replacement killed before it was decided
        staging.mkdir()
        (staging / "queue").mkdir()
        atomic_write(staging / self.key_path.name, key.to_encrypted_pem(passphrase), mode=0o600)
        atomic_write(staging / self.state_path.name, state_bytes(state))
        target = self._replaced_folder()
        atomic_write(staging / "replaced", (target.name if target else "").encode())
        os.replace(staging, self._init_journal)  # the commit point
        fsync_folder(self.root)
        return state, self.finish_init()

    @property
    def _init_journal(self) -> Path:
        """The decided, unfinished `init` (see `init`)."""
        return self.root / ".init-new"

    def finish_init(self) -> Path | None:
        """Finish a decided `init` (``.init-new/``, left by one killed midway; none: do
        nothing): move what is left of the old device to its replaced/ folder, then put
        the new queue, key and state in place, the state last, and remove the journal.
        Each step is skipped when done, so a run killed here is finished by the next.
        Returns the replaced/ folder, or None (no journal, or no old device). Call it
        holding the folder's lock. Raises OSError."""
        journal = self._init_journal
        if not os.path.lexists(journal):
            return None
        try:
            name = (journal / "replaced").read_text()
        except FileNotFoundError:  # killed after its last step but one
            journal.rmdir()
            return None
        target = self.root / "replaced" / name if name else None
        new_state = journal / self.state_path.name
        new_queue = journal / "queue"
        if target is not None and os.path.lexists(new_queue):
            target.mkdir(parents=True, exist_ok=True)  # a state file here is the old one
            for p in self._device_files():
                if os.path.lexists(p) and not os.path.lexists(target / p.name):
                    os.replace(p, target / p.name)
            fsync_folder(target)
        for staged, final in (
            (new_queue, self.queue_dir),
            (journal / self.key_path.name, self.key_path),
            (new_state, self.state_path),
        ):
            if os.path.lexists(staged):
                if final == self.queue_dir and os.path.lexists(final):
                    os.rmdir(final)  # an empty queue made meanwhile (no old device moved)
                os.replace(staged, final)
        fsync_folder(self.root)
        (journal / "replaced").unlink()
        journal.rmdir()
        fsync_folder(self.root)
        return target

    def _replaced_folder(self) -> Path | None:
        """A free ``replaced/DEVICE_ID`` (``.2``, ...) for this folder's device, not made
        yet; None when there is no device here. A device id that is not 64 hexadecimal
        digits (a damaged or edited state file: "../x" or "/x" would name a folder outside
        ``replaced/``) names it ``unknown-TIME`` instead."""
        try:
            old_id: object = self.state().device_id
        except ConfigError:  # no state (or damaged): name the folder by the time instead
            if not any(os.path.lexists(p) for p in self._device_files()):
                return None
            old_id = None
        if not (isinstance(old_id, str) and re.fullmatch(r"[0-9a-f]{64}", old_id)):
            old_id = "unknown-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.root / "replaced" / old_id
        n = 1
        while os.path.lexists(target):
            n += 1
            target = target.with_name(f"{old_id}.{n}")
        return target

    def _device_files(self) -> tuple[Path, ...]:
        """What belongs to the device of this folder, besides its key and lock: the
        copies of its state `prov device repair` set aside (``device.json.damaged-*``)
        included, which a later repair of a missing state reads (left here by `init`, a
        new device's repair took the old device's server and sequence from them)."""
        copies = sorted(self.root.glob(f"{glob.escape(self.state_path.name)}.damaged-*"))
        return (
            self.state_path,
            self.cert_path,
            self.queue_dir,
            self.set_aside_dir,
            self.sidecar_dir,
            *copies,
        )

    def require_key(self) -> None:
        """Raise ConfigError when this folder holds no device key (asked before the
        passphrase prompt: no passphrase is typed for a key that is not there)."""
        if not self.key_path.exists():
            raise ConfigError(f"no device key at {self.key_path}: run `prov device init` first")

    def load_key(self, passphrase: bytes) -> DeviceKey:
        """The device key, decrypted with ``passphrase``. Raises ConfigError when there is
        none (`require_key`) or it is not this device's, KeyMaterialError for a wrong
        passphrase or a corrupt file.

        A key file cheaper to guess than one written now (`keyfile.weaker_than_written_here`:
        an older `prov device init` wrote PBKDF2 at 2,048 iterations) is rewritten, same key
        and passphrase, at `keyfile.PBKDF2_ITERATIONS` (`_strengthen`). A key file holding
        the bytes `check_passphrase` decrypted with ``passphrase`` is not decrypted again."""
        self.require_key()
        pem = read_device_file(self.key_path)
        if self._decrypted is not None and self._decrypted[:2] == (pem, passphrase):
            key = self._decrypted[2]  # `check_passphrase` decrypted these very bytes
        else:
            key = DeviceKey.from_encrypted_pem(pem, passphrase)
        if key.key_id.hex() != self.state().device_id:
            raise ConfigError(f"{self.key_path} does not belong to the device in {self.state_path}")
        if weaker_than_written_here(pem):
            self._strengthen(key, pem, passphrase)
        return key

    def check_passphrase(self, passphrase: bytes) -> None:
        """Decrypt the key file with ``passphrase`` now, before waiting for the folder's
        lock: a wrong passphrase is said at once, not once the command holding the folder
        lets go of it (up to ``$PROV_LOCK_WAIT`` seconds later). The key is kept for
        `load_key`, which, under the lock, takes it while the key file still holds the
        bytes decrypted here, and decrypts anew a key file replaced meanwhile (`prov
        device init --force`). Nothing is rewritten here (`load_key` re-encrypts an older
        key file). Raises ConfigError when there is no key file (`require_key`) or it
        cannot be read as one, KeyMaterialError for a wrong passphrase or a corrupt file,
        OSError."""
        self.require_key()
        pem = read_device_file(self.key_path)
        self._decrypted = (pem, passphrase, DeviceKey.from_encrypted_pem(pem, passphrase))

    def _strengthen(self, key: DeviceKey, pem: bytes, passphrase: bytes) -> None:
        """Rewrite the key file ``pem`` (just read and decrypted) at today's work factor,
        atomically, mode 0600, and say so on stderr. Only when this object holds the
        folder's lock (`locked`: `prov sign` reads the key under it), or no other command
        holds it, ``.lock`` nor the folder itself (a `prov device init --force` may be
        writing a new key, its ``.lock`` removed), and the file
        is still ``pem``; a folder that cannot be written keeps the old file, with a line
        saying why. A key file that is a symbolic link (to a key kept on another volume)
        is rewritten where it points, the link kept: replacing the link left the weaker
        copy where the owner keeps the key, and a second copy in the device folder."""
        if self._holding:
            written = self._rewrite_key(key, pem, passphrase)
        else:
            written = self._rewrite_key_unheld(key, pem, passphrase)
        if written:
            print(
                f"{self.key_path}: re-encrypted with PBKDF2 at {PBKDF2_ITERATIONS:,} iterations"
                " (it had a cheaper key derivation, written by an older version); same key and"
                " passphrase",
                file=sys.stderr,
            )

    def _rewrite_key_unheld(self, key: DeviceKey, pem: bytes, passphrase: bytes) -> bool:
        """`_rewrite_key` while no other command holds the folder (``.lock`` and the folder
        itself, both tried without waiting), which this object does not hold either;
        whether the key file was rewritten."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self._open_folder()
        try:
            with self._open_lock() as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return False  # another command holds the folder: a later one rewrites it
                try:
                    # and the folder itself: a command whose .lock was removed holds it
                    if folder is not None and not devicelock.try_folder(folder):
                        return False
                    return self._rewrite_key(key, pem, passphrase)
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            if folder is not None:
                os.close(folder)  # lets go of the folder's lock

    def _rewrite_key(self, key: DeviceKey, pem: bytes, passphrase: bytes) -> bool:
        """Rewrite the key file, where it points, at today's work factor when it is still
        ``pem``, with the folder's lock held; whether it was. A folder that cannot be
        written keeps the old file, saying why on stderr."""
        try:
            if read_device_file(self.key_path) != pem:
                return False
            target = self.key_path.resolve()  # the file itself, through any link
            atomic_write(target, key.to_encrypted_pem(passphrase), mode=0o600)
        except OSError as e:
            print(
                f"note: {self.key_path} is encrypted with a weaker key derivation"
                f" than this version writes, and could not be rewritten ({e.strerror})",
                file=sys.stderr,
            )
            return False
        return True

    def state(self) -> DeviceState:
        """The device's state (``device.json``), after finishing a `prov device init` that
        was killed once decided (`finish_init`, under the folder's lock). Raises
        ConfigError when there is none or it is damaged, OSError."""
        if os.path.lexists(self._init_journal):
            if self._holding:
                self.finish_init()
            else:
                with self.locked():  # finishes it
                    pass
        try:
            return _parse_state(loads_text(read_device_file(self.state_path)))
        except FileNotFoundError as e:
            if os.path.lexists(self.key_path):  # a key, no state: rebuilt from the key
                raise ConfigError(
                    f"{self.state_path} is missing beside the device key {self.key_path}:"
                    f" {REPAIR_ADVICE}"
                ) from e
            raise ConfigError(f"no device at {self.root}: run `prov device init` first") from e
        except (ValueError, TypeError, RecursionError) as e:
            raise ConfigError(f"{self.state_path} is damaged: {e}; {REPAIR_ADVICE}") from e
        except ConfigError as e:  # not a regular file, or over the size limit
            raise ConfigError(f"{e}; {REPAIR_ADVICE}") from e

    def save_state(self, state: DeviceState) -> None:
        atomic_write(self.state_path, state_bytes(state))

    def _open_folder(self) -> int | None:
        """The device folder opened to be locked with ``flock`` (`devicelock.take_folder`,
        `devicelock.try_folder`; closing it lets go); None when it cannot be opened for
        reading (``.lock`` alone guards it then)."""
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None

    def _open_lock(self) -> BinaryIO:
        """The folder's lock file ``.lock`` (made if missing), opened to be locked with
        ``flock``: without blocking, and only when ``fstat`` shows a regular file (an open
        of a FIFO for writing waits for a reader for good). Raises ConfigError naming
        the file when it is not a regular file (a folder: saying what to do; before,
        "Is a directory: PATH"), OSError."""
        path = self.root / ".lock"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
        except IsADirectoryError:
            raise ConfigError(
                f"{path} is a folder, not the lock file device commands take there (an"
                " empty file they make themselves): move it elsewhere, or remove it if it"
                f" holds nothing you need (`rmdir {shlex.quote(str(path))}` when empty), then"
                " run the command again"
            ) from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise ConfigError(
                    f"{path} is {file_kind(mode)}, not a regular file: the device folder is damaged"
                )
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the device folder's lock: one command at a time signs or submits, so
        sequence numbers are never reused. Waits for another running command, for
        ``$PROV_LOCK_WAIT`` seconds at most (`clients.devicelock`: LockWaitError); then
        finishes a `prov device init` killed midway (`finish_init`). Both ``.lock`` and
        the folder itself are locked (`devicelock.take_folder`), in that order: a
        ``.lock`` removed while a command held it let the next command make a new one
        and sign beside the first, with the same last sequence."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self._open_folder()
        try:
            with self._open_lock() as handle:
                devicelock.take(handle, self.root / ".lock")  # bounded: $PROV_LOCK_WAIT
                self._holding = True
                try:
                    # and the folder itself: a .lock removed while another command held
                    # it (taken for a stale one) let this one run beside that one
                    if folder is not None:
                        devicelock.take_folder(folder, self.root)
                    since = time.time()  # the lock is ours from here: earlier writers are done
                    self.finish_init()  # a `prov device init` killed midway, first
                    clean_leftovers(self, since)
                    yield
                finally:
                    self._holding = False
                    devicelock.release(handle, self.root / ".lock")
        finally:
            if folder is not None:
                os.close(folder)  # lets go of the folder's lock
