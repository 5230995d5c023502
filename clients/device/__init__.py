"""The device SDK (`clients.device.home.DeviceHome`); the names other modules import."""

from clients.device.disk import (
    MAX_DEVICE_FILE_BYTES,
    SIDECAR_SUFFIX,
    atomic_write,
    default_home,
    read_device_file,
    sidecar_path,
)
from clients.device.entries import (
    MAX_ATTEMPTS_COUNT,
    MAX_FAILED_ATTEMPTS,
    MAX_QUEUE_ENTRY_BYTES,
    QueueEntry,
    name_sequence,
    read_entries,
    signed_sequence,
)
from clients.device.export import check_embeddable
from clients.device.home import DeviceHome
from clients.device.logkey import pinned_key_differs, receipt_problem
from clients.device.measuring import ClaimFields, _still_the_hashed_bytes, measure
from clients.device.sidecars import SidecarExistsError, SignedFile
from clients.device.signing import APP_VERSION
from clients.device.state import REPAIR_ADVICE, SEQUENCE_MARGIN, DeviceState, state_bytes
from clients.device.sync import ENTRY_FAILURE_CODES, LOG_KEY_CODES, PERMANENT_CODES, SyncResult

__all__ = [
    "APP_VERSION",
    "ENTRY_FAILURE_CODES",
    "LOG_KEY_CODES",
    "MAX_ATTEMPTS_COUNT",
    "MAX_DEVICE_FILE_BYTES",
    "MAX_FAILED_ATTEMPTS",
    "MAX_QUEUE_ENTRY_BYTES",
    "PERMANENT_CODES",
    "REPAIR_ADVICE",
    "SEQUENCE_MARGIN",
    "SIDECAR_SUFFIX",
    "ClaimFields",
    "DeviceHome",
    "DeviceState",
    "QueueEntry",
    "SidecarExistsError",
    "SignedFile",
    "SyncResult",
    "_still_the_hashed_bytes",
    "atomic_write",
    "check_embeddable",
    "default_home",
    "measure",
    "name_sequence",
    "pinned_key_differs",
    "read_device_file",
    "read_entries",
    "receipt_problem",
    "sidecar_path",
    "signed_sequence",
    "state_bytes",
]
