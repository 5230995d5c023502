"""What the `prov` commands share, below the layers that have commands of their own
(`web`: `prov web`; `server`: `prov serve`; clients/cli.py registers them with its own):
option types and checks (`options`) and where a key file's passphrase comes from
(`passphrase`), operator files read up to a limit (`files`), files replaced atomically
and durably (`atomicfile`, also for the layers above and the device SDK), the deadline
of a whole HTTP exchange (`cutoff`). Typer and Rich over `core`,
`metrics` and `terminal`."""
