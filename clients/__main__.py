"""``python -m clients``: the ``prov`` command, started as its console script starts it
(`clients.launch`, Ctrl-C answered from the first moment)."""

from __future__ import annotations

import sys

from clients.launch import main

if __name__ == "__main__":
    sys.exit(main())
