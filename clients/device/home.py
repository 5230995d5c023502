"""`DeviceHome`: a device folder and every job done in it, in one object (the jobs in
the modules beside this one, see `clients.device`)."""

from __future__ import annotations

from clients.device.enrollment import EnrollingFolder
from clients.device.export import C2paExport
from clients.device.signing import SigningFolder
from clients.device.sync import SyncingFolder


class DeviceHome(EnrollingFolder, SyncingFolder, SigningFolder, C2paExport):
    """A device's key, state and queue on disk (see `clients.device`): each job in the
    base class that does it, all of them in one object."""
