"""Sizes both ends of the gRPC wire contract agree on (`proto/provenance/v1`).

Clients (`clients.api`, the web app) and the server (`provenance.server`) import these
from here, so a client never loads the server, the store or the service.
"""

from __future__ import annotations

#: Largest gRPC message either side accepts, in bytes. Uploads travel in 1 MiB chunks.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Upload chunk size the clients use, in bytes.
UPLOAD_CHUNK_BYTES = 1024 * 1024
