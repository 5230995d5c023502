"""Sizes both ends of the gRPC wire contract agree on (`proto/provenance/v1`).

Clients (`clients.api`, the web app) and the server (`provenance.server.rpc`) import these
from here, so a client never loads the server, the store or the service.
"""

from __future__ import annotations

from provenance.core.merkle import HASH_SIZE

#: Largest gRPC message either side accepts, in bytes. Uploads travel in 1 MiB chunks.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Upload chunk size the clients use, in bytes.
UPLOAD_CHUNK_BYTES = 1024 * 1024
#: Most chunk hashes a claim's list can hold as it reaches the server: an upload header of
#: at most MAX_MESSAGE_BYTES, each hash a 32-byte protobuf field of HASH_SIZE + 2 bytes
#: (246,723; a sidecar file of `MAX_SIDECAR_BYTES`, or one embedded in a C2PA manifest,
#: holds fewer, each hash 44 base64 characters). A file of more chunks than this matches
#: no list, so the server hashes it chunk by chunk only within it: 1-byte chunks of
#: 2.2 MB took 392 MiB before (`provenance.media.inspect.chunks_fit`).
MAX_CLAIM_CHUNK_HASHES = MAX_MESSAGE_BYTES // (HASH_SIZE + 2)
#: Start of the reason a Lookup (hashes only) gives for a video it could not search with
#: the dense frame pass; a caller holding the file (the scanner) then sends it (VerifyFile).
#: Most queries (files) in one Lookup call: the server's default `--max-lookup-queries`,
#: and the most a client puts in one call.
MAX_LOOKUP_QUERIES = 1000
#: Most perceptual hashes (video frames) in one Lookup call: the server's default
#: `--max-lookup-hashes`, and the most a client puts in one call.
MAX_LOOKUP_HASHES = 16384
#: Most entries one GetEntries page holds (a larger ``limit`` is cut to it), and the page
#: a GetEntries request of ``limit`` 0 gets.
MAX_ENTRIES_PAGE = 1000
DEFAULT_ENTRIES_PAGE = 100
DENSE_PASS_NEEDS_BYTES = "the dense frame pass that finds trimmed clips needs the file's bytes"
#: Trailing-metadata key on every error status the server sends for one of its own errors
#: (value: the error's class name), so a client tells "the server answered UNAVAILABLE
#: (disk full, index still loading)" from "no server answered" (gRPC's own UNAVAILABLE).
SERVER_ERROR_KEY = "prov-error"
#: Trailing-metadata key beside SERVER_ERROR_KEY when the server knows when to try again
#: (value: seconds, a decimal number), e.g. while the near-duplicate index is still loading.
RETRY_AFTER_KEY = "prov-retry-after-s"
#: Initial-metadata key the server sends on an upload call (VerifyFile, DetectFile) once
#: it has received the whole file, before decoding it (value "1"): a client waiting for
#: the answer can tell a service at work from one that stalled (`prov web
#: --service-timeout`).
RECEIVED_KEY = "prov-received"
