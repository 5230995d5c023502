"""`make demo`: the whole path on real bundled media, printed as a person would type it.

Starts `prov serve` on a temporary database, enrolls a device, signs two photos and a
video, then verifies an original, a re-encoded and resized copy, a copy with edited
pixels carrying the original's sidecar, an unsigned photo, a generated image, the signed
video and a transcoded copy of it, checks a receipt offline and audits the log. Exits non-zero when any verdict is not the
expected one. Its temporary folder (database, device key, files) is removed when every
verdict was the expected one, else kept, and the last line says which.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clients.cli import main as prov
from provenance.media.video.transcode import transcode

#: The exit code of a command stopped by Ctrl-C (README, "Exit codes"), and the demo's.
EXIT_INTERRUPTED = 130

SAMPLES = Path(__file__).resolve().parent / "samples"


def run(*args: str, expect: int = 0) -> str:
    """Print and run one `prov` command in-process; fail the demo on a surprise exit code."""
    print(f"\n$ prov {shlex.join(args)}", flush=True)
    rc = prov(list(args))
    if rc == EXIT_INTERRUPTED:  # Ctrl-C: the command said "interrupted"; stop the demo
        raise KeyboardInterrupt
    if rc != expect:
        raise SystemExit(f"demo: `prov {shlex.join(args)}` exited {rc}, expected {expect}")
    if args[0] == "verify":  # the exit code is the verdict for scripts (README table)
        print(f"(exit code {rc})", flush=True)
    return ""


def capture(*args: str) -> str:
    """Run a `prov` command as a child process and return its stdout (for tokens)."""
    print(f"\n$ prov {shlex.join(args)}", flush=True)
    res = subprocess.run(
        [sys.executable, "-m", "clients.cli", *args], capture_output=True, text=True, check=False
    )
    sys.stderr.write(res.stderr)
    if res.returncode == EXIT_INTERRUPTED:
        raise KeyboardInterrupt
    if res.returncode != 0:
        raise SystemExit(f"demo: `prov {shlex.join(args)}` failed: {res.stderr}")
    print(res.stdout.strip())
    return res.stdout.strip()


def start_server(
    db: Path, *extra: str, listen: str = "127.0.0.1:0"
) -> tuple[subprocess.Popen[str], str]:
    """Start `prov serve --db DB --listen LISTEN EXTRA...` (the demo: a port drawn afresh,
    `make web`: a stable one); returns it and the address it listens on.
    Its stdout and stderr (its log records) come in one pipe, each line shown as
    "  [server] LINE"; once its start-up lines are read, `relay_server_lines` shows the
    rest (before, its stderr went to the terminal as it was: the "near-duplicate index"
    record stood bare among the prefixed lines)."""
    print(f"$ prov serve --db {db} --listen {listen} {shlex.join(extra)} &", flush=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "serve", "--db", str(db)]
        + ["--listen", listen, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            print(f"  [server] {line.rstrip()}", flush=True)
            if line.startswith("listening on "):
                return proc, line.split()[-1]
    except BaseException:  # Ctrl-C while it starts: it is not left running
        proc.terminate()
        proc.wait(timeout=30)
        raise
    raise SystemExit("demo: the server did not start")


def relay_server_lines(proc: subprocess.Popen[str]) -> threading.Thread:
    """Show the rest of the output of ``proc`` (started by `start_server`) as
    "  [server] LINE" until it ends, from a daemon thread (returned: join it once the
    server has exited, so that its last lines come before what follows). Reading it also
    keeps the server from blocking on a full pipe."""

    def relay() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"  [server] {line.rstrip()}", flush=True)

    thread = threading.Thread(target=relay, name="server-lines", daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class DemoFiles:
    """The demo's media: three signed captures (sidecars beside them) and the copies a
    newsroom might receive."""

    hopper: Path
    rocket: Path
    video: Path
    derived: Path
    tampered: Path
    small_video: Path
    unsigned: Path
    generated: Path


def prepare(work: Path) -> DemoFiles:
    """Enroll a device with the server at $PROV_SERVER (PROV_ADMIN_TOKEN, PROV_HOME and
    PROV_PASSPHRASE set), sign two photos and a video into ``work/captures`` and make the
    newsroom's copies in ``work/newsroom``. Used by the demo, `make web` and the tests."""
    print("\n# 2. a camera creates its key and enrolls with a one-time token")
    run("device", "init")
    token = capture("admin", "enroll-token", "--label", "demo-camera")
    run("device", "enroll", "--token", token)

    print(
        "\n# 3. the camera signs two photos and a video; each gets a sidecar with its log receipt"
    )
    shots = work / "captures"
    shots.mkdir()
    hopper = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", shots / "hopper.jpg"))
    rocket = Path(shutil.copy(SAMPLES / "rocket.jpg", shots / "rocket.jpg"))
    video = Path(shutil.copy(SAMPLES / "fabric_pattern.mp4", shots / "fabric.mp4"))
    run("sign", str(hopper), str(rocket), str(video))

    print("\n# 4. copies a newsroom might receive")
    desk = work / "newsroom"
    desk.mkdir()
    derived = desk / "rocket_resized.jpg"
    img = Image.open(rocket).convert("RGB")
    img.resize((img.width * 3 // 5, img.height * 3 // 5), Image.Resampling.LANCZOS).save(
        derived, "JPEG", quality=70
    )
    print(f"  {derived.name}: the rocket photo resized to 60% and re-encoded at JPEG q70")
    tampered = desk / "hopper_edited.jpg"
    img = Image.open(hopper).convert("RGB")
    for x in range(200, 260):
        for y in range(300, 310):
            img.putpixel((x, y), (0, 0, 0))
    img.save(tampered, "JPEG", quality=92)
    shutil.copy(str(hopper) + ".prov", str(tampered) + ".prov")
    print(
        f"  {tampered.name}: a black bar painted over the photo, shipped with the original sidecar"
    )
    small_video = desk / "fabric_small.mp4"
    transcode(video, small_video, 180, 320, crf=34, encoder_options={"preset": "ultrafast"})
    print(f"  {small_video.name}: the signed video transcoded to 180x320 at a lower quality")
    unsigned = Path(shutil.copy(SAMPLES / "chelsea.png", desk / "cat.png"))
    generated = Path(shutil.copy(SAMPLES / "generated_controlnet.png", desk / "generated.png"))
    print(f"  {unsigned.name}: a real photo nobody signed; {generated.name}: a generated image")
    return DemoFiles(hopper, rocket, video, derived, tampered, small_video, unsigned, generated)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="prov-demo-"))
    os.environ["PROV_ADMIN_TOKEN"] = secrets.token_urlsafe(24)
    os.environ["PROV_HOME"] = str(work / "device")
    os.environ["PROV_PASSPHRASE"] = "demo passphrase, use a prompt in real life"
    print(f"# working in {work}\n# 1. the server, with its embedded SQLite database")
    server: subprocess.Popen[str] | None = None
    relay: threading.Thread | None = None
    finished = interrupted = False
    try:
        server, address = start_server(work / "provenance.db")
        relay = relay_server_lines(server)
        os.environ["PROV_SERVER"] = address
        f = prepare(work)
        hopper, derived, tampered, unsigned = f.hopper, f.derived, f.tampered, f.unsigned
        generated, video, small_video = f.generated, f.video, f.small_video

        print("\n# 5. verification: cryptography decides; the detector only advises")
        run("verify", str(hopper), expect=0)
        run("verify", str(derived), expect=10)
        run("verify", str(tampered), expect=13)
        run("verify", str(unsigned), expect=11)
        run("verify", str(generated), expect=11)
        print(
            "# UNSIGNED only says that no signed capture matches. Whether the pixels look"
            " generated is\n# the detector's advice, kept apart: its `likely generated` band"
            " is reserved for strong\n# evidence (few real photos reach it), so a generated"
            " image can well read `uncertain`."
        )
        run("verify", str(video), expect=0)
        run("verify", str(small_video), expect=10)
        run("verify", str(hopper), "--json", "--no-detect", expect=0)

        print(
            "\n# 6. anyone can check a receipt offline with the log's public key, and audit the log"
        )
        vkey = capture("log", "key")
        run("receipt", "verify", str(hopper) + ".prov", "--log-key", vkey)
        run("log", "audit", "--state", str(work / "audit-state.json"))
        print("\ndemo finished: every verdict was the expected one")
        finished = True
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
            if relay is not None:
                relay.join(timeout=10)  # its last lines ("shutting down") first
            print("  [server] stopped")
        if finished or interrupted:  # nothing to look into: the key and files go
            shutil.rmtree(work, ignore_errors=True)
            said = "interrupted: " if interrupted else ""
            print(f"{said}removed {work} (the demo's database, device key and files)")
        else:
            print(
                f"kept {work} (the demo's database, device key and files) to look into;"
                f" remove it when done: rm -rf {shlex.quote(str(work))}"
            )
    if interrupted:
        raise SystemExit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
