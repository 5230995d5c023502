"""The scan's fork server is started with SIGINT blocked (`clients.scan.engines.
_start_fork_server`), and `clients.scan.preload`, last of its preload list, ignores and
unblocks it. The fork server passes over an ImportError in its preload, so a preload that
fails to import would leave SIGINT blocked in every worker forked from it. A real
`prov`-style process with a broken `clients.scan.preload` (an import hook in a
sitecustomize on PYTHONPATH: nothing of ours replaced) starts the real pool and asks a
worker for its signal mask and SIGINT handler."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_python

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the fork server and pthread_sigmask: Linux"
)

BROKEN = """
import sys

class _Broken:
    def find_spec(self, name, path=None, target=None):
        if name == "clients.scan.preload":
            raise ImportError("clients.scan.preload broken on purpose (test)")
        return None

sys.meta_path.insert(0, _Broken())
"""

ASK_A_WORKER = """
import json, signal
from concurrent.futures import ProcessPoolExecutor
from clients.scan.engines import _PoolContext, _exit_with_parent, _worker_context

ctx = _PoolContext(_worker_context())
with ProcessPoolExecutor(1, mp_context=ctx, initializer=_exit_with_parent) as pool:
    blocked = pool.submit(signal.pthread_sigmask, signal.SIG_BLOCK, []).result()
    handler = pool.submit(signal.getsignal, signal.SIGINT).result()
print(json.dumps({"blocked": signal.SIGINT in blocked, "ignored": handler == signal.SIG_IGN,
                  "here": signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])}))
"""


@pytest.mark.parametrize("preload", ["broken", "as shipped"])
def test_a_worker_has_sigint_ignored_and_unblocked_whatever_the_preload_did(
    tmp_path: Path, preload: str
) -> None:
    site = None
    if preload == "broken":
        (tmp_path / "sitecustomize.py").write_text(BROKEN)
        site = tmp_path
    done = run_python(["-c", ASK_A_WORKER], ROOT, timeout=300, site=site)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"blocked": False, "ignored": True, "here": False}, (
        seen,
        done.stderr,
    )
