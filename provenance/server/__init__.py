"""The service shell: the gRPC server, the service, the group-commit writer,
start-up checks, limits and `prov serve`.
"""
