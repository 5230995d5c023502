"""The wire contract: protobuf <-> dataclass conversion, sizes both ends agree on,
and FILE.prov sidecars (what a client needs besides the core).
"""
