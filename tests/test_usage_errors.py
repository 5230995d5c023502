"""Wrong arguments are usage errors (exit 2, a message naming the option and what it
wants) found before any call or work; failures of the machine, the network or the
evidence stay exit 1 (README, "Verdicts and exit codes"). Through the real CLI, real
files; the server address given to a runtime failure is a real closed loopback port."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from clients.device import DeviceHome
from provenance.log.checkpoint import generate_log_key
from provenance.witness import cosigner_vkey
from tests.conftest import ROOT, SAMPLES, cli_process, closed_port
from tests.stopping import ended


def _flat(text: str) -> str:
    """A usage error's text without the box Typer draws around it (and its line breaks)."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", text).split())


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = prov_main(list(args))
    return rc, _flat(capsys.readouterr().err)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))


def test_a_server_address_that_is_not_host_port_is_a_usage_error(
    photo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for args in (
        ("verify", str(photo), "--server", "nonsense"),
        ("verify", str(photo), "--server", "127.0.0.1:99999"),
        ("verify", str(photo), "--server", "http://127.0.0.1:50051"),  # a URL: was exit 1
        ("log", "key", "--server", "nonsense"),
        ("scan", str(photo), "--report", str(photo.with_suffix(".jsonl")), "--server", "x"),
    ):
        rc, err = _run(capsys, *args)
        assert rc == 2 and "--server" in err and "is not HOST:PORT" in err, (args, err)
    monkeypatch.setenv("PROV_SERVER", "nonsense")  # the same, from the environment
    rc, err = _run(capsys, "verify", str(photo))
    assert rc == 2 and "$PROV_SERVER" in err, err
    # a well-formed address nobody answers on is a runtime failure, as before
    monkeypatch.delenv("PROV_SERVER")
    rc, err = _run(capsys, "verify", str(photo), "--server", closed_port(), "--no-detect")
    assert rc == 1 and "cannot reach the server" in err, err
    # with where to go from there (before: the error alone)
    said = " ".join(err.split())
    assert "Start one with `prov serve --db FILE`" in said and "--server HOST:PORT" in said, err


#: Ports `str.isdigit` takes but `int` refuses ("²", 5,000 digits) or reads as another
#: script's digits ("٥٠٠٥١" is 50051 to `int`, but no resolver reads it).
ODD_PORTS = ("²", "٥٠٠٥١", "１２３", "9" * 5000)


def test_a_port_of_other_scripts_digits_is_a_usage_error(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clients.api import ProvenanceClient
    from provenance.core.errors import ConfigError

    for port in ODD_PORTS:
        address = f"127.0.0.1:{port}"
        # before: a ValueError traceback ("²"), or "cannot reach the server" (exit 1)
        rc, err = _run(capsys, "log", "key", "--server", address)
        assert rc == 2 and "--server" in err and "is not HOST:PORT" in err, (port, err)
        # prov web's own address: before, "²" was exit 1 after the probe of the service
        rc, err = _run(capsys, "web", "--server", closed_port(), "--listen", address)
        assert rc == 2 and "--listen" in err and "is not HOST:PORT" in err, (port, err)
        assert "does not answer" not in err  # refused before the service is probed
        with pytest.raises(ConfigError, match="is not HOST:PORT"):
            ProvenanceClient(address)


def test_prov_web_limits_out_of_range_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, `prov web` started with these: --max-upload-mb 0 refused every file,
    --upload-idle-seconds -1 answered every upload 408 at once, and a negative
    --uploads-per-minute was taken. (--listen is malformed too, so the old code stops
    with that error rather than serving: the flag named must be the limit's.)"""
    for flag, value in (
        ("--max-upload-mb", "0"),
        ("--upload-idle-seconds", "-1"),
        ("--upload-idle-seconds", "0"),
        ("--uploads-per-minute", "-1"),
        # the option's min lets these through: they turned the idle limit (and with it
        # the relay slots' pace rule) off
        ("--upload-idle-seconds", "inf"),
        ("--upload-idle-seconds", "1e309"),
        ("--header-seconds", "inf"),
        ("--upload-idle-seconds", "nan"),  # refused by the min already
    ):
        args = ("web", "--server", closed_port(), "--listen", "127.0.0.1:99999", flag, value)
        rc, err = _run(capsys, *args)
        assert rc == 2 and flag in err and "--listen" not in err, (flag, value, err)


def test_prov_web_service_timeout_out_of_range_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--service-timeout 1e10 (or 1e308) started the page, and every page and lookup was
    answered at once 504 "the verification service did not answer within 1e+10 s" (gRPC's
    deadline, in nanoseconds, overflowed: past about 7e9 s). Now at most a day, as are
    0, negatives, nan and inf refused (exit 2, the flag named)."""
    from clients.options import MAX_WAIT_S

    for value in ("0", "-1", "nan", "inf", "1e309", "1e10", "1e308", "86401"):
        args = ("web", "--server", closed_port(), "--listen", "127.0.0.1:99999")
        rc, err = _run(capsys, *args, "--service-timeout", value)
        assert rc == 2 and "--service-timeout" in err and "--listen" not in err, (value, err)
    rc, err = _run(capsys, *args, "--service-timeout", "1e10")
    assert f"less than or equal to {MAX_WAIT_S:g}" in " ".join(err.split()), err


def test_an_ipv6_server_address_without_brackets_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from clients.api import ProvenanceClient
    from provenance.core.errors import ConfigError
    from provenance.metrics import serve_metrics

    # before: taken, and gRPC read each whole as a host without a port: "::1:50051" a
    # misformatted name, "::1:80" the address ::1:80 on port 443, "::1" host "::" port 1
    # ([::1]:443); each exit 1 "cannot reach the server" after the call
    for address in ("::1:50051", "::1:80", "::1"):
        rc, err = _run(capsys, "log", "key", "--server", address)
        assert rc == 2 and "--server" in err and "put an IPv6 address in brackets" in err, err
        with pytest.raises(ConfigError, match=r"IPv6 address in brackets, \[::1\]:50051"):
            ProvenanceClient(address)
    # empty or stray brackets are no host (before: taken, then a resolver error)
    for address in ("[]:50051", "[::1]x:50051", "[[::1]]:50051"):
        rc, err = _run(capsys, "log", "key", "--server", address)
        assert rc == 2 and "is not HOST:PORT" in err, (address, err)
        with pytest.raises(ConfigError, match="is not HOST:PORT"):
            ProvenanceClient(address)
        with pytest.raises(ConfigError, match="is not HOST:PORT"):
            serve_metrics(address)  # before: "[]" was every interface, "[::1]x" an error
    with pytest.raises(ConfigError, match="in brackets"):
        serve_metrics("::1:0")  # before: served on ::1, unlike --listen and --http


def test_a_log_key_that_is_no_verifier_key_is_a_usage_error(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    side = tmp_path / "x.prov"
    side.write_text("{}")
    junk = tmp_path / "key.txt"
    junk.write_text("not a key\n")
    for key in ("garbage", str(junk), "log+0000+AAAA"):
        for args in (
            ("receipt", "verify", str(side), "--log-key", key),
            ("log", "audit", "--state", str(tmp_path / "s.json"), "--log-key", key),
            ("receipt", "refresh", str(side), "--log-key", key),
        ):
            rc, err = _run(capsys, *args)
            assert rc == 2 and "--log-key" in err and "is not a log verifier key" in err, (
                args,
                err,
            )
            assert "prov log key" in err  # where the right value comes from
    # a well-formed key passes: the command goes on (to the sidecar, "{}": not usable)
    other = generate_log_key(tmp_path / "other.pem", "other.example/log").verifier_key()
    rc, err = _run(capsys, "receipt", "verify", str(side), "--log-key", other)
    assert rc == 2 and "is not a usable sidecar" in err, err
    assert "is not a log verifier key" not in err


def test_a_log_key_naming_a_fifo_or_a_device_says_what_it_names(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--log-key PATH`` where PATH is a FIFO or a device: the usage error (exit 2) says
    what PATH is, never opening it (a FIFO's open waits for a writer). Before: "'PATH' is
    not a log verifier key NAME+ID+KEY nor a file holding one", as if PATH were text."""
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    for path, kind in ((str(fifo), "a FIFO (named pipe)"), (os.devnull, "a device")):
        for args in (
            ("verify", str(photo), "--log-key", path),
            ("receipt", "verify", str(photo), "--log-key", path),
        ):
            rc, err = _run(capsys, *args)
            assert rc == 2 and "--log-key" in err, (args, err)
            assert f"{path} is {kind}, not a file holding a log verifier key" in err, (args, err)
            assert "is not a log verifier key NAME+ID+KEY" not in err, (args, err)


def test_a_witness_that_is_no_cosigner_key_is_a_usage_error(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--witness`` is checked before any call, as ``--log-key`` is (before: exit 1,
    "error: witness key 'junk' is not ...", after a sidecar was read)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from provenance.witness import cosigner_vkey

    side = tmp_path / "x.prov"
    side.write_text("{}")
    junk = tmp_path / "w.txt"
    junk.write_text("not a key\n")
    raw = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    real = cosigner_vkey("witness.example/w1", raw)
    log_key = generate_log_key(tmp_path / "log.pem", "log.example/log").verifier_key()
    closed = closed_port()
    for key in ("junk", str(junk), f"someone.else={real}"):
        for args in (
            ("verify", str(photo), "--witness", key, "--server", closed),
            ("receipt", "verify", str(side), "--log-key", log_key, "--witness", key),
            ("receipt", "refresh", str(side), "--witness", key, "--server", closed),
        ):
            rc, err = _run(capsys, *args)
            assert rc == 2 and "--witness" in err and "prov witness serve" in err, (args, err)
    # the whole line `prov witness serve` prints, saved to a file: what to drop, in words
    # (before: "witness key id ... does not match the key", the name taken as "witness key w1")
    line = tmp_path / "w1.vkey"
    line.write_text(f"witness key {real}\n")
    rc, err = _run(
        capsys, "receipt", "verify", str(side), "--log-key", log_key, "--witness", str(line)
    )
    assert rc == 2 and "without the 'witness key '" in " ".join(err.split()), err
    # a well-formed key passes: the command goes on to its runtime failure (exit 1)
    rc, err = _run(capsys, "verify", str(photo), "--witness", real, "--server", closed)
    assert rc == 1 and "cannot reach the server" in err, err


def test_receipt_commands_given_the_photo_name_its_sidecar(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov receipt verify/export IMG.jpg` (the photo, not IMG.jpg.prov) is a usage error
    (exit 2; before: exit 1) that says which file to give (before that: only "sidecar is
    not valid JSON: 'utf-8' codec can't decode byte 0xff ...")."""
    monkeypatch.setenv("COLUMNS", "400")  # the box would break the long path
    log_key = generate_log_key(tmp_path / "log.pem", "log.example/log").verifier_key()
    for args in (
        ("receipt", "verify", str(photo), "--log-key", log_key),
        ("receipt", "export", str(photo), "--format", "tlog-proof"),
    ):
        rc, err = _run(capsys, *args)
        assert rc == 2 and "is not a usable sidecar: it is the media file itself" in err, (
            args,
            err,
        )
        assert "(image/jpeg); give its sidecar rocket.jpg.prov (`prov sign` writes it" in err
    (tmp_path / "rocket.jpg.prov").write_text("{}")
    rc, err = _run(capsys, "receipt", "verify", str(photo), "--log-key", log_key)
    assert rc == 2 and f"give its sidecar, {photo}.prov" in err, err
    # not media and not a sidecar: a usage error (exit 2; before: 1), as `prov verify
    # --sidecar` has it, whichever command is given the damaged sidecar
    junk = tmp_path / "junk.prov"
    junk.write_text("not json")
    rc, err = _run(capsys, "receipt", "verify", str(junk), "--log-key", log_key)
    assert rc == 2 and "is not a usable sidecar (" in err, err
    rc, err = _run(capsys, "receipt", "refresh", str(junk), "--server", closed_port())
    assert rc == 2 and "is not a usable sidecar (" in err, err
    rc, err = _run(capsys, "verify", str(photo), "--sidecar", str(junk), "--server", closed_port())
    assert rc == 2 and "not a usable sidecar" in err, err


def test_a_missing_audit_database_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov log audit --db nope.db` and `prov log export-tiles --db nope.db` exit 2 (before:
    1, after the command had started)."""
    key = generate_log_key(tmp_path / "log.pem", "log.example/log").verifier_key()
    missing = str(tmp_path / "nope.db")
    for args in (
        ("log", "audit", "--state", str(tmp_path / "s.json"), "--db", missing, "--log-key", key),
        ("log", "export-tiles", str(tmp_path / "tiles"), "--db", missing),
    ):
        rc, err = _run(capsys, *args)
        assert rc == 2 and "--db" in err and f"no database at {missing}" in err, (args, err)
    assert not (tmp_path / "tiles").exists() and not (tmp_path / "s.json").exists()


def test_receipt_verify_without_a_log_key_says_where_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    side = tmp_path / "x.prov"
    side.write_text("{}")
    rc, err = _run(capsys, "receipt", "verify", str(side))
    assert rc == 2 and "--log-key" in err and "`prov log key --server HOST:PORT`" in err, err


def test_a_missing_sidecar_is_a_usage_error(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = _run(capsys, "verify", str(photo), "--sidecar", str(tmp_path / "missing.prov"))
    assert rc == 2 and "--sidecar" in err and "does not exist" in err, err


def test_a_scan_report_of_another_kind_is_a_usage_error(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = _run(capsys, "scan", str(photo), "--report", str(tmp_path / "out.txt"))
    assert rc == 2 and "--report" in err and "must end in .jsonl" in err, err
    assert not (tmp_path / "out.txt").exists()


def test_scan_checks_its_arguments_before_the_progress_bar(photo: Path, tmp_path: Path) -> None:
    """Each wrong --report is named at once (exit 2), before the bar is drawn or the
    server called (before: the bar ran, then 'error: cannot open the report', exit 1)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    existing = tmp_path / "done.jsonl"
    existing.write_text('{"path": "x.jpg"}\n')  # a row: an empty report is taken over
    for report, words in (
        (tmp_path / "no" / "such" / "out.jsonl", "does not exist"),
        (tmp_path / "out.txt", "must end in .jsonl"),
        (existing, "exists: add --resume"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "clients.cli", "scan", str(photo), "--report", str(report)]
            + ["--server", closed_port(), "--workers", "0"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "200"},
        )
        err = _flat(run.stderr)
        assert run.returncode == 2 and "--report" in err and words in err, (report, err)
        assert "starting" not in err and "cannot reach" not in err  # no bar, no call


@pytest.mark.parametrize("resume", [(), ("--resume",)])
@pytest.mark.parametrize("beside", ["out.csv", "out.html", "out.csv.part"])
def test_a_new_scan_refuses_to_replace_a_file_no_scan_wrote(
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    beside: str,
    resume: tuple[str, ...],
) -> None:
    """A scan into out.jsonl writes out.csv and out.html when it completes, replacing
    whatever was there: a spreadsheet or page of the user's named so is refused up front
    (exit 2, naming it), with or without --resume, and left as it was. Before, the scan
    ran (here: exit 1, the server unreachable) and a completed one replaced the file.
    The same for out.csv.part, which the scan truncates as it starts (its CSV goes there
    first) and removes or renames: before, a user's out.csv.part (a browser's download of
    an out.csv in progress is named so) was lost, with or without the check of the two."""
    theirs = tmp_path / beside
    theirs.write_text("name,amount\nalice,3\n")
    report = tmp_path / "out.jsonl"
    args = ("scan", str(photo), "--report", str(report), *resume)
    rc, err = _run(capsys, *args, "--server", closed_port(), "--workers", "0")
    assert rc == 2 and "--report" in err, (rc, err)
    assert f"{theirs} exists and is not a report of prov scan" in err, err
    assert "Move that file away, or name another --report" in err, err
    assert theirs.read_text() == "name,amount\nalice,3\n"


def test_a_new_scan_takes_over_an_earlier_scans_csv_and_html(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSV and HTML an earlier scan left (its report removed, as the refusal of an
    existing report says to do), and the OUT.csv.part of a scan that was killed (its
    header and a row cut short), are no usage error: the scan starts (here: exit 1, the
    server unreachable)."""
    from clients.scan import worker
    from clients.scan.report import CSV_FIELDS, HTML_HEAD, SCAN_TITLE

    monkeypatch.setattr(worker, "RETRY_DELAYS_S", (0.01,))
    report = tmp_path / "out.jsonl"
    (tmp_path / "out.csv").write_text(",".join(CSV_FIELDS[:17]) + "\r\nx.jpg\r\n")
    (tmp_path / "out.html").write_text(f"{HTML_HEAD}<title>{SCAN_TITLE}out.jsonl</title>")
    (tmp_path / "out.csv.part").write_text(",".join(CSV_FIELDS) + "\r\nx.jpg,,med")
    args = ("scan", str(photo), "--report", str(report), "--server", closed_port())
    rc, err = _run(capsys, *args, "--workers", "0")
    assert rc == 1 and "cannot reach the server" in err, err


#: A row of a scan report (`prov scan --report`) for a file other than the one scanned.
_EARLIER_ROW = '{"path": "a.jpg", "kind": "empty", "size": 0, "status": null, "error": null}\n'


@pytest.mark.parametrize("beside", ["out.csv", "out.html", "out.csv.part"])
def test_a_resumed_scan_refuses_to_replace_a_file_no_scan_wrote(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], beside: str
) -> None:
    """`prov scan --resume` of a report that holds rows replaces out.csv and out.html when
    it completes and truncates out.csv.part as it starts, as a new scan does: a file of
    the user's named so is refused up front (exit 2, naming it) and left as it was. Before
    (h-cliwords61), only a new scan was checked: the resumed one ran (here: exit 1, the
    server unreachable), and one that completed replaced the file."""
    theirs = tmp_path / beside
    theirs.write_text("name,amount\nalice,3\n")
    report = tmp_path / "out.jsonl"
    report.write_text(_EARLIER_ROW)
    args = ("scan", str(photo), "--report", str(report), "--resume")
    rc, err = _run(capsys, *args, "--server", closed_port(), "--workers", "0")
    assert rc == 2 and "--report" in err, (rc, err)
    assert f"{theirs} exists and is not a report of prov scan" in err, err
    assert theirs.read_text() == "name,amount\nalice,3\n"
    assert report.read_text() == _EARLIER_ROW


def test_a_resumed_scan_takes_over_its_own_csv_html_and_part(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSV and HTML of the run that wrote the report's rows, and the OUT.csv.part of a
    run that was killed, pass the check of `prov scan --resume` (here: exit 1, the server
    unreachable, so the scan started)."""
    from clients.scan import worker
    from clients.scan.report import CSV_FIELDS, HTML_HEAD, SCAN_TITLE

    monkeypatch.setattr(worker, "RETRY_DELAYS_S", (0.01,))
    report = tmp_path / "out.jsonl"
    report.write_text(_EARLIER_ROW)
    (tmp_path / "out.csv").write_text(",".join(CSV_FIELDS) + "\r\na.jpg,empty\r\n")
    (tmp_path / "out.html").write_text(f"{HTML_HEAD}<title>{SCAN_TITLE}out.jsonl</title>")
    (tmp_path / "out.csv.part").write_text(",".join(CSV_FIELDS) + "\r\na.jpg,em")
    args = ("scan", str(photo), "--report", str(report), "--resume", "--server", closed_port())
    rc, err = _run(capsys, *args, "--workers", "0")
    assert rc == 1 and "cannot reach the server" in err, err


def test_a_scan_report_that_is_no_regular_file_is_a_usage_error(
    photo: Path, tmp_path: Path
) -> None:
    """`prov scan --report` naming a FIFO, or a link to a device, exits 2 naming --report
    before the scan starts, with or without --resume (before: a FIFO blocked the scan for
    good, as its open for appending waited for a reader; /dev/zero ended in exit 1,
    "error: Invalid argument")."""
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    device = tmp_path / "zero.jsonl"
    device.symlink_to("/dev/zero")
    for report, kind in ((fifo, "a FIFO (named pipe)"), (device, "a device")):
        for resume in ((), ("--resume",)):
            args = ("scan", str(photo), "--report", str(report), *resume)
            rc, _, err = _prov_in_2_gb(*args, "--server", closed_port(), "--workers", "0")
            assert rc == 2 and "--report" in err, (args, rc, err)
            assert f"{report} is {kind}, not a regular file" in err, (args, err)


def test_a_log_key_file_that_holds_no_key_is_not_echoed(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--log-key FILE` naming a readable file that holds no key (the operator's typo:
    /etc/shadow, a private key, a log file) is a usage error that names the file and
    quotes none of its text, which would land in a terminal's scrollback or a service's
    log (before: its whole text, up to the message's end); a file over 16 KiB is not read
    whole (before: read into memory whatever its size)."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$s3cretHASHs3cret:19000:0:99999:7:::\ndaemon:*:19000\n")
    big = tmp_path / "big.log"
    big.write_bytes(b"x" * (17 * 1024))
    for key, why in ((secret, "key read from that file is not"), (big, "over 16 KiB")):
        for args in (
            ("verify", str(photo), "--log-key", str(key)),
            ("scan", str(photo), "--report", str(tmp_path / "r.jsonl"), "--log-key", str(key)),
        ):
            rc, err = _run(capsys, *args)
            flat = " ".join(err.split())
            assert rc == 2 and "--log-key" in flat and str(key.name) in flat, (args, err)
            assert why in flat, (args, err)
            assert "s3cret" not in flat and "xxxx" not in flat, (args, err)
    rc, err = _run(capsys, "verify", str(photo), "--witness", str(secret))
    flat = " ".join(err.split())
    assert rc == 2 and "key read from that file is not" in flat and "s3cret" not in flat, err


def test_a_witness_given_a_malformed_log_key_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov witness serve --log-key` checks each key before it creates its own key or
    state folder (before: exit 1 after the witness key was written)."""
    args = ["witness", "serve", "--key", str(tmp_path / "w.pem"), "--state", str(tmp_path / "st")]
    good = generate_log_key(tmp_path / "log.pem", "example.org/log").verifier_key()
    rc, err = _run(capsys, *args, "--log-key", good, "--log-key", "garbage")
    assert rc == 2 and "--log-key" in err and "'garbage' is not a log verifier key" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.pem"]


def test_a_witness_name_no_cosignature_can_carry_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov witness serve --name` is a note key name (no spaces, no '+'), checked before
    anything is written (h-att41; before: exit 1)."""
    log = generate_log_key(tmp_path / "log.pem", "example.org/log").verifier_key()
    args = ["witness", "serve", "--key", str(tmp_path / "w.pem"), "--state", str(tmp_path / "st")]
    for bad in ("my witness", "w+1", ""):
        rc, err = _run(capsys, *args, "--log-key", log, "--listen", "127.0.0.1:0", "--name", bad)
        assert rc == 2 and "--name" in err and "is not a note key name" in err, (bad, rc, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.pem"]


def test_a_folder_option_naming_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov witness serve --state FILE` and `prov log export-tiles FILE` exit 2 naming the
    option, before any key or tile is written (review att36; before: exit 1, "error: File
    exists: FILE" after the witness key was created, and "error: Not a directory:
    FILE/tile/0/000.p" after the export had started). So does a --key that is a folder,
    and a key file of other mode says "witness key file" (before: "log key file")."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    db = tmp_path / "a.db"
    db.write_bytes(b"")
    log = generate_log_key(tmp_path / "log.pem", "example.org/log").verifier_key()
    witness = ["witness", "serve", "--log-key", log, "--listen", "127.0.0.1:0"]
    for args, option, words in (
        (
            (*witness, "--key", str(tmp_path / "w.pem"), "--state", str(a_file)),
            "--state",
            f"{a_file} is not a folder",
        ),
        (
            (*witness, "--key", str(tmp_path), "--state", str(tmp_path / "st")),
            "--key",
            f"{tmp_path} is a folder",
        ),
        (("log", "export-tiles", str(a_file), "--db", str(db)), "DIRECTORY", "is not a folder"),
        (  # a FIFO or device key: exit 2 as a folder is (h-rev43; was exit 1)
            (*witness, "--key", "/dev/null", "--state", str(tmp_path / "st")),
            "--key",
            "/dev/null is a device, not a regular file",
        ),
    ):
        rc, err = _run(capsys, *args)
        assert rc == 2 and option in err and words in " ".join(err.split()), (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "log.pem", "notes.txt"]
    a_file.chmod(0o644)
    rc, err = _run(capsys, *witness, "--key", str(a_file), "--state", str(tmp_path / "st"))
    assert rc == 1 and f"witness key file {a_file} has mode 0644" in err, err


def test_a_quorum_above_the_witnesses_and_a_missing_key_file_are_usage_errors(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--witness-quorum more than the --witness given (verify, receipt verify/refresh) and
    `prov log key --key-file` naming no file exit 2 before any call (before: exit 1)."""
    w = cosigner_vkey("witness.example/w1", bytes(range(32)))
    log = generate_log_key(tmp_path / "log.pem", "example.org/log").verifier_key()
    sidecar = tmp_path / "rocket.jpg.prov"
    sidecar.write_text("{}")
    server = ("--server", closed_port())
    for args in (
        ("verify", str(photo), "--witness", w, "--witness-quorum", "3", *server),
        (
            "receipt",
            "verify",
            str(sidecar),
            "--log-key",
            log,
            "--witness",
            w,
            "--witness-quorum",
            "2",
        ),
        ("receipt", "refresh", str(sidecar), "--witness", w, "--witness-quorum", "2", *server),
    ):
        rc, err = _run(capsys, *args)
        assert rc == 2 and "--witness-quorum" in err and "is more than the 1 --witness" in err, (
            args,
            err,
        )
    rc, err = _run(capsys, "log", "key", "--key-file", str(tmp_path / "nothere.pem"))
    assert rc == 2 and "--key-file" in err and "does not exist" in err, err


def test_an_admin_command_without_the_admin_token_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov admin enroll-token` / `revoke` without $PROV_ADMIN_TOKEN exit 2 before any
    call, naming the variable and where the server's token comes from (before: exit 1,
    "error: this is an admin command: set PROV_ADMIN_TOKEN ...")."""
    monkeypatch.delenv("PROV_ADMIN_TOKEN", raising=False)
    server = ("--server", closed_port())
    for args in (
        ("admin", "enroll-token", *server),
        ("admin", "revoke", "ab" * 32, "--reason", "lost", *server),
    ):
        for token in (None, ""):  # unset, or set to nothing
            if token is not None:
                monkeypatch.setenv("PROV_ADMIN_TOKEN", token)
            rc, err = _run(capsys, *args)
            assert rc == 2 and "PROV_ADMIN_TOKEN" in err and "--admin-token-file" in err, (
                args,
                err,
            )
            assert "cannot reach" not in err  # no call was made
        monkeypatch.delenv("PROV_ADMIN_TOKEN")
    # with a token the command goes on to its runtime failure (exit 1)
    monkeypatch.setenv("PROV_ADMIN_TOKEN", "some-token")
    rc, err = _run(capsys, "admin", "enroll-token", *server)
    assert rc == 1 and "cannot reach the server" in err, err


def test_admin_arguments_the_server_would_refuse_are_usage_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --ttl over what the request can carry (2^32 - 1 s) ended in a Python traceback
    ("ValueError: Value out of range"), and a blank --reason was sent and refused by the
    server (exit 1, "a revocation needs a reason [INVALID_ARGUMENT]"): exit 2 before any
    call, naming the option. The ceiling is the server's, 30 days (MAX_TOKEN_TTL)."""
    monkeypatch.setenv("PROV_ADMIN_TOKEN", "some-token")
    server = ("--server", closed_port())
    for over in (2**32, 2_592_001):
        rc, err = _run(capsys, "admin", "enroll-token", "--ttl", str(over), *server)
        assert rc == 2 and "--ttl" in err and "2592000" in err, err
    rc, err = _run(capsys, "admin", "enroll-token", "--ttl", "2592000", *server)
    assert rc == 1 and "cannot reach the server" in err, err  # the largest goes on
    for blank in ("", "   "):
        rc, err = _run(capsys, "admin", "revoke", "ab" * 32, "--reason", blank, *server)
        assert rc == 2 and "--reason" in err and "needs a reason" in err, (blank, err)
        assert "cannot reach" not in err


def test_device_enroll_without_a_token_or_certificate_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """(before: exit 1, "error: give --token ... or --certificate")"""
    monkeypatch.setenv("PROV_PASSPHRASE", "pw")
    home = ("--home", str(tmp_path / "device"), "--server", closed_port())
    rc, err = _run(capsys, "device", "enroll", *home)
    assert rc == 2 and "--token TOKEN" in err and "--certificate FILE" in err, err
    rc, err = _run(capsys, "device", "enroll", "--token", "t", *home)  # goes on: no key here
    assert rc == 1 and "prov device init" in err, err
    # not what `prov admin enroll-token` prints: before, a byte that is not UTF-8 ended in
    # a traceback ("can't encode character '\udcff' in position 0")
    keyed = ("--home", str(tmp_path / "keyed"), "--server", closed_port())
    DeviceHome(tmp_path / "keyed").init(b"pw")
    for token in ("\udcffabc", "abc def", "tok\u00e9n"):
        rc, err = _run(capsys, "device", "enroll", "--token", token, *keyed)
        assert rc == 2 and "--token" in err and "letters, digits, '-' and '_'" in err, err
    rc, err = _run(capsys, "device", "enroll", "--token", "\u00e9", *keyed)
    assert rc == 2 and "(1 character)" in err, err  # before: "(1 characters)"
    # a --certificate that does not exist (before: exit 1), is a FIFO (before: waited for a
    # writer for ever) or is no PEM text (before: a UnicodeDecodeError traceback)
    fifo = tmp_path / "chain.fifo"
    os.mkfifo(fifo)
    for chain, said in (
        (tmp_path / "gone.pem", "does not exist"),
        (fifo, "FIFO"),
        (SAMPLES / "rocket.jpg", "is not a PEM certificate chain"),
        (SAMPLES.parent / "cli.py", "is not a PEM certificate chain"),
    ):
        rc, err = _run(capsys, "device", "enroll", "--certificate", str(chain), *keyed)
        assert rc == 2 and "--certificate" in err and said in err, (chain, err)


def test_verify_given_several_files_points_to_scan(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov verify a b` is a usage error (exit 2) that names `prov scan`, which checks
    many files (before: only "Got unexpected extra argument(s) (b)")."""
    other = Path(shutil.copy(photo, tmp_path / "other.jpg"))
    rc, err = _run(capsys, "verify", str(photo), str(other), "--server", closed_port())
    assert rc == 2 and "checks one file, got 2" in err, err
    assert "`prov scan" in err and "--report scan.jsonl` checks many" in err, err
    # one file is verified as before (here: a runtime failure, nobody answers)
    rc, err = _run(capsys, "verify", str(photo), "--server", closed_port(), "--no-detect")
    assert rc == 1 and "cannot reach the server" in err, err


def test_a_scan_that_failed_before_its_first_row_can_be_run_again(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan stopped by an unreachable server leaves an empty report; running it again
    takes that report over (before: exit 2, "o.jsonl exists: add --resume")."""
    from clients.scan import worker

    monkeypatch.setattr(worker, "RETRY_DELAYS_S", (0.01,))
    report = tmp_path / "o.jsonl"
    args = ("scan", str(photo), "--report", str(report), "--server", closed_port())
    for _ in range(2):
        rc, err = _run(capsys, *args, "--workers", "0")
        assert rc == 1 and "cannot reach the server" in err, err
        assert report.read_text() == ""


def test_verify_given_a_sidecar_or_a_folder_says_what_to_give(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov verify x.jpg.prov` names the media file to verify; `prov verify DIR` points to
    `prov scan DIR` (before: exit 1 "not a recognised image" / Click's "is a directory")."""
    monkeypatch.setenv("COLUMNS", "400")
    side = tmp_path / "rocket.jpg.prov"
    side.write_text("{}")
    server = ("--server", closed_port())
    rc, err = _run(capsys, "verify", str(side), *server)
    assert rc == 2 and f"{side} is a provenance sidecar" in err, err
    assert f"verify the media file beside it, `prov verify {photo}`" in err, err
    lone = tmp_path / "gone.png.prov"
    lone.write_text("{}")
    rc, err = _run(capsys, "verify", str(lone), *server)
    assert rc == 2 and "verify the media file it describes (gone.png)" in err, err
    rc, err = _run(capsys, "verify", f"{tmp_path}/", *server)
    assert rc == 2 and "is a folder; `prov verify` checks one file" in err, err
    assert f"`prov scan {tmp_path} --report scan.jsonl` checks every file in it" in err, err


def test_sign_and_detect_given_a_folder_say_what_to_give(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov sign DIR` and `prov detect DIR` name the files to give instead, and `prov
    scan` for a whole folder (before: Click's "file 'DIR' is a directory." alone), exit 2
    before any file is signed or the device key is opened."""
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("PROV_HOME", str(tmp_path / "no-device"))
    server = ("--server", closed_port())
    rc, err = _run(capsys, "sign", str(photo), str(tmp_path), *server)
    assert rc == 2 and f"{tmp_path} is a folder; `prov sign` signs files" in err, err
    assert f"name them, e.g. `prov sign {tmp_path}/*.jpg`" in err, err
    assert not (tmp_path / "rocket.jpg.prov").exists()
    rc, err = _run(capsys, "detect", str(tmp_path), *server)
    assert rc == 2 and f"{tmp_path} is a folder; `prov detect` scores files" in err, err
    assert f"`prov scan {tmp_path} --report scan.jsonl --detect` scores" in err, err


def test_serve_given_a_folder_as_its_database_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov serve --db .` exits 2 naming a file to give (before: a ValueError traceback,
    "PosixPath('.') has an empty name"; `--db DIR`: exit 1, SQLite's "unable to open
    database file"), and creates nothing."""
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for db in (".", "data", str(tmp_path / "data") + "/"):
        rc, err = _run(capsys, "serve", "--db", db, "--listen", "127.0.0.1:0")
        assert rc == 2 and "--db" in err, (db, err)
        assert f"{db} is a folder; name the SQLite database file" in err, (db, err)
        assert "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data"]


def test_serve_given_a_fifo_or_a_device_as_its_database_is_a_usage_error(tmp_path: Path) -> None:
    """`prov serve --db FIFO` hung in SQLite's open of the FIFO for a writer that never
    came, and SIGTERM (or Ctrl-C) could not stop it: `timeout 15 prov serve --db fifo.db`
    still ran 10 minutes later, killed with SIGKILL; `--db` a link to /dev/null ended in
    a traceback ("sqlite3.OperationalError: disk I/O error") after SQLite wrote to the
    device (a disk's, as root, would have been written over). Now both exit 2 naming
    what the path is, before anything is opened. Children killed if they do not end."""

    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    device = tmp_path / "null.db"
    device.symlink_to("/dev/null")
    env = {"PROV_ADMIN_TOKEN": "a" * 32}
    for db, kind in ((fifo, "a FIFO (named pipe)"), (device, "a device")):
        proc = cli_process(["serve", "--db", str(db), "--listen", "127.0.0.1:0"], env=env)
        rc, _, err = ended(proc, timeout=60)  # before: TimeoutExpired (the FIFO)
        assert rc == 2 and "--db" in err, (db, rc, err[-1500:])
        assert f"{db} is {kind}, not a database file" in err, err
        assert "Traceback" not in err, err
        assert not (tmp_path / f"{db.name}.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.db", "null.db"]


def test_serve_whose_database_lock_is_a_fifo_says_so_and_ends(tmp_path: Path) -> None:
    """A FIFO at DB.lock held `prov serve --db DB` in the lock's open (for a reader that
    never came) until a signal stopped it. Now it ends at once, exit 1, naming the lock
    file, what it is and what to do; the database is not created."""
    os.mkfifo(tmp_path / "a.db.lock")
    env = {"PROV_ADMIN_TOKEN": "a" * 32}
    args = ["serve", "--db", str(tmp_path / "a.db"), "--listen", "127.0.0.1:0"]
    rc, _, err = ended(cli_process(args, env=env), timeout=60)  # before: TimeoutExpired
    assert rc == 1, (rc, err[-1500:])
    assert f"the database lock file {tmp_path / 'a.db.lock'} is a FIFO (named pipe)" in err, err
    assert "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db.lock"]


def _serve_ended(db: Path, env: dict[str, str]) -> tuple[int, str]:
    """`prov serve --db DB` run to its end (60 s at most, then killed: a hang fails the
    test with TimeoutExpired): its exit status and stderr."""
    proc = cli_process(["serve", "--db", str(db), "--listen", "127.0.0.1:0"], env=env)
    rc, _, err = ended(proc, timeout=60)
    return rc, err


def test_serve_whose_database_has_a_fifo_beside_it_says_so_and_ends(tmp_path: Path) -> None:
    """A FIFO at DB-journal held `prov serve --db DB` in SQLite's open of it (its check
    for a hot journal), in C, deaf to SIGTERM (only SIGKILL ended it); one at DB-shm ended
    the start in "cannot open database DB: disk I/O error", the database blamed; one at
    DB-wal was taken for the WAL. Now each ends the start at once, exit 1, naming the
    file, what it is and what to do, before SQLite opens anything."""
    import sqlite3

    env = {"PROV_ADMIN_TOKEN": "a" * 32}
    for suffix in ("-journal", "-shm", "-wal"):
        db = tmp_path / f"a{suffix}.db"
        with sqlite3.connect(db) as conn:  # a database there: SQLite reads it at open
            conn.execute("CREATE TABLE t (x)")
        conn.close()
        beside = Path(f"{db}{suffix}")
        os.mkfifo(beside)
        rc, err = _serve_ended(db, env)  # before: TimeoutExpired (-journal)
        assert rc == 1, (suffix, rc, err[-1500:])
        assert f"{beside} is a FIFO (named pipe), not a regular file" in err, err
        assert "Traceback" not in err, err
        assert beside.is_fifo()


def test_serve_whose_database_folder_is_no_folder_says_what_it_is(tmp_path: Path) -> None:
    """`prov serve --db FIFO/a.db` (or FILE/a.db) said "the folder FIFO does not exist
    (create it first)", of a path that exists: creating it fails. Now it says what is
    there instead of a folder; still a usage error, exit 2, nothing opened."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_bytes(b"x")
    env = {"PROV_ADMIN_TOKEN": "a" * 32, "COLUMNS": "400"}  # one line
    for parent, kind in (("pipe", "a FIFO (named pipe)"), ("file", "a file")):
        db = tmp_path / parent / "a.db"
        rc, err = _serve_ended(db, env)
        assert rc == 2, (parent, rc, err[-1500:])
        assert f"the folder {tmp_path / parent} is {kind}, not a folder" in err, err
        assert "does not exist" not in err, err


def test_a_sidecar_missing_a_field_names_the_field(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sidecar without one of its fields says which (before: "malformed sidecar:
    KeyError('payload')", Python's repr of the exception)."""
    import json

    from provenance.wire.sidecar import Sidecar, encode_sidecar
    from tests.fuzz.targets import DEVICE_KEY, SIGNED

    monkeypatch.setenv("COLUMNS", "400")
    for field in ("payload", "publicKey"):
        doc = json.loads(encode_sidecar(Sidecar(SIGNED, DEVICE_KEY.public_key)))
        del doc[field]
        side = tmp_path / f"no-{field}.prov"
        side.write_text(json.dumps(doc))
        rc, err = _run(
            capsys, "verify", str(photo), "--sidecar", str(side), "--server", closed_port()
        )
        assert rc == 2 and f"malformed sidecar: the field '{field}' is missing" in err, err
        assert "KeyError" not in err, err


def test_a_sidecar_field_of_the_wrong_kind_is_named_in_words() -> None:
    """A sidecar field of the wrong kind says which field and what it should be, not
    Python's words for what decoding it raised: "'int' object is not subscriptable",
    "non-hexadecimal number found in fromhex() arg at position 0", "argument should be a
    bytes-like object or ASCII string, not 'int'", "Incorrect padding"."""
    import base64
    import json

    from provenance.core.errors import ClaimError
    from provenance.wire.sidecar import Sidecar, decode_sidecar, encode_sidecar
    from tests.fuzz.targets import DEVICE_KEY, SIGNED

    good = json.loads(encode_sidecar(Sidecar(SIGNED, DEVICE_KEY.public_key)))
    sig = good["signatures"][0]
    cases = {
        "signatures": ([1], "the field 'signatures' is not a list of one object"),
        "keyid": ([{**sig, "keyid": "xyz"}], "the field 'keyid' is not hex text"),
        "sig": ([{**sig, "sig": "!!"}], "the field 'sig' is not base64 text"),
        "payload": (7, "the field 'payload' is not base64 text"),
        "publicKey": ("abc", "the field 'publicKey' is not base64 text"),
        "receipt": ("é", "the field 'receipt' is not base64 text"),
        "chunkHashes": (5, "the field 'chunkHashes' is not a list of base64 text"),
        "payloadType": ({"a": 1}, "the field 'payloadType' is not text"),
    }
    for name, (value, words) in cases.items():
        field = "signatures" if name in ("keyid", "sig") else name
        doc = {**good, field: value}
        with pytest.raises(ClaimError) as info:
            decode_sidecar(json.dumps(doc).encode())
        assert str(info.value) == f"malformed sidecar: {words}", (name, str(info.value))
    # a chunk hash that is no 32-byte leaf hash: the server would refuse the upload's header
    short = base64.b64encode(b"\x01" * 31).decode()
    with pytest.raises(ClaimError) as info:
        decode_sidecar(json.dumps({**good, "chunkHashes": [short]}).encode())
    assert str(info.value) == (
        "malformed sidecar: chunkHashes[0] is 31 bytes; each is a 32-byte leaf hash (SHA-256)"
        " of one chunk of the video"
    )


def test_an_audit_state_that_is_a_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov log audit --state DIR` exits 2 naming a file (before: exit 1, "error: Is a
    directory: DIR", after the command had started)."""
    monkeypatch.setenv("COLUMNS", "400")
    key = generate_log_key(tmp_path / "log.pem", "log.example/log").verifier_key()
    for args in (
        ("--server", closed_port()),
        ("--tiles", str(tmp_path), "--log-key", key),
    ):
        rc, err = _run(capsys, "log", "audit", "--state", str(tmp_path), *args)
        assert rc == 2 and "--state" in err, (args, err)
        assert f"{tmp_path} is a folder; name the file that keeps this auditor's" in err, err


def _prov_in_2_gb(*args: str) -> tuple[int, str, str]:
    """`prov ARGS` in a child process under a 2 GB address-space limit (so that an
    unbounded read fails there rather than filling the machine), given 120 s: its exit
    code, stdout and stderr (flattened). Raises AssertionError when it runs longer."""
    import os
    import subprocess
    import sys

    from tests.conftest import ADMIN_TOKEN, ROOT

    proc = subprocess.Popen(
        ["/bin/sh", "-c", 'ulimit -v 2000000; exec "$@"', "sh"]
        + [sys.executable, "-m", "clients.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PROV_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"prov {' '.join(args)}: still running after 120 s") from None
    return proc.returncode, out, _flat(err)


def test_an_audit_state_that_is_no_regular_file_or_no_text_is_refused_unread(
    tmp_path: Path,
) -> None:
    """`prov log audit --state` naming a FIFO, a device or a file over 1 MiB exits 2 naming
    --state, without blocking or reading without end (before: a FIFO blocked for good, and
    /dev/zero was read into memory, 17 GB in 30 s); bytes that are not UTF-8 are a damaged
    state, one `error:` line (before: a UnicodeDecodeError traceback)."""
    fifo = tmp_path / "state.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (1 << 20) + b"{}")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{}")
    for state, rc, words in (
        (fifo, 2, f"{fifo} is a FIFO (named pipe), not a regular file"),
        (Path("/dev/zero"), 2, "/dev/zero is a device, not a regular file"),
        (big, 2, f"audit state {big} is over the 1048576-byte limit"),
        (binary, 1, "error: audit state file is damaged"),
    ):
        got, _, err = _prov_in_2_gb(
            "log", "audit", "--state", str(state), "--server", closed_port()
        )
        assert got == rc and words in err, (state, got, err)
        assert "Traceback" not in err, (state, err)
        if rc == 2:
            assert "--state" in err, (state, err)


def test_serve_reads_at_most_a_bounded_share_of_each_file_it_is_given(tmp_path: Path) -> None:
    """`prov serve --admin-token-file`, `--tsa-trust-anchors`, `--c2pa-trust-anchors` and
    `--c2pa-trust-config` naming a device or a file far larger than such a file is exit 1
    with one `error:` line naming the file, read no further than the limit (before:
    /dev/zero was read into memory without end: a MemoryError traceback under the 2 GB
    limit, the machine's memory without one). A FIFO is still read, as process
    substitution (`<(...)`) needs."""
    ca = tmp_path / "ca"
    assert prov_main(["admin", "ca", "init", "--dir", str(ca), "--no-passphrase"]) == 0
    big = tmp_path / "big.pem"
    with big.open("wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB of zeros
    for n, (flag, path, words) in enumerate(
        (
            ("--admin-token-file", "/dev/zero", "admin token file /dev/zero is over"),
            ("--admin-token-file", str(big), f"admin token file {big} is over"),
            ("--tsa-trust-anchors", "/dev/zero", "TSA trust anchors /dev/zero is over"),
            ("--c2pa-trust-anchors", "/dev/zero", "C2PA trust anchors /dev/zero is over"),
            ("--c2pa-trust-anchors", str(big), f"C2PA trust anchors {big} is over"),
            ("--c2pa-trust-config", "/dev/zero", "C2PA trust settings /dev/zero is over"),
        )
    ):
        serve = ["serve", "--db", str(tmp_path / f"{n}.db"), "--listen", "127.0.0.1:0"]
        ca_flag = ["--ca", str(ca)] if flag == "--c2pa-trust-config" else []
        rc, out, err = _prov_in_2_gb(*serve, "--no-detector", flag, path, *ca_flag)
        assert rc == 1 and f"error: {words}" in err, (flag, path, rc, err)
        assert "Traceback" not in err and "listening on" not in out, (flag, path, err)


def test_a_log_key_file_that_is_no_regular_file_is_refused_unread(tmp_path: Path) -> None:
    """A log or witness key file (`prov log key --key-file`, `prov serve --log-key`) that
    is a FIFO or a device is refused, exit 1 naming it, without blocking or reading
    (before: a FIFO of mode 0600 blocked for good; /dev/zero was told "run chmod 600
    /dev/zero")."""
    fifo = tmp_path / "log.pem"
    os.mkfifo(fifo, 0o600)
    for path, kind in ((str(fifo), "a FIFO (named pipe)"), ("/dev/zero", "a device")):
        for args in (
            ("log", "key", "--key-file", path),
            ("serve", "--db", str(tmp_path / "p.db"), "--listen", "127.0.0.1:0", "--log-key", path),
        ):
            rc, out, err = _prov_in_2_gb(*args)
            assert rc == 1, (args, rc, err)
            assert f"error: log key file {path} is {kind}, not a regular file" in err, (args, err)
            assert "chmod" not in err and "Traceback" not in err and "listening" not in out, err


def test_serve_witness_options_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov serve` with a --witness that is not URL=KEY, a KEY that is no cosigner key, or
    a --witness-quorum above the --witness given exits 2 before any file is made, as the
    clients' --witness and --witness-quorum do (before: exit 1, "error: ...")."""
    w = cosigner_vkey("witness.example/w1", bytes(range(32)))
    db = tmp_path / "prov.db"
    serve = ("serve", "--db", str(db), "--listen", "127.0.0.1:0")
    for extra, words in (
        (("--witness", "garbage"), "Invalid value for --witness: 'garbage' is not URL=KEY"),
        (
            ("--witness", "http://127.0.0.1:8090=nokey"),
            "Invalid value for --witness: http://127.0.0.1:8090: witness key 'nokey'",
        ),
        (
            ("--witness", f"http://127.0.0.1:8090={w}", "--witness-quorum", "2"),
            "Invalid value for --witness-quorum: 2 is more than the 1 --witness given",
        ),
    ):
        rc, err = _run(capsys, *serve, *extra)
        assert rc == 2 and words in err, (extra, err)
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_serve_witness_timeout_that_is_no_finite_time_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov serve --witness-timeout` inf, nan or past a day exits 2 before any file is
    made (before: inf was accepted, a wait with no limit, and values past ~7e9 s overflow
    gRPC's nanosecond deadline as --service-timeout did)."""
    serve = ("serve", "--db", str(tmp_path / "prov.db"), "--listen", "127.0.0.1:0")
    for value in ("inf", "nan", "1e10", "0.05"):
        rc, err = _run(capsys, *serve, "--witness-timeout", value)
        assert rc == 2 and "--witness-timeout" in err, (value, err)
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_serve_witness_interval_past_a_day_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov serve --witness-interval-ms` past a day (as --witness-timeout) exits 2
    before any file is made, naming the option; a day itself is taken. Before, any whole
    number was: one of over 308 digits ended the start in an OverflowError traceback
    (exit 1) when it was turned into seconds."""
    serve = ("serve", "--db", str(tmp_path / "prov.db"), "--listen", "127.0.0.1:0")
    for value in ("1" + "0" * 400, "86400001"):
        rc, err = _run(capsys, *serve, "--witness-interval-ms", value)
        assert rc == 2 and "--witness-interval-ms" in err, (value[:20], err)
        assert "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_serve_refuses_an_admin_token_that_can_be_guessed_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin key is HKDF of the admin token and its public half is in every logged
    enrollment and revocation: `prov serve` took "admin123", found from the public log
    with a word list at about 17,000 guesses a second on one core (then anyone could make
    enrollment tokens and revoke keys). Under 22 characters: exit 2 before anything is
    made, naming where the token came from, never the token."""
    db = tmp_path / "prov.db"
    serve = ("serve", "--db", str(db), "--listen", "127.0.0.1:0", "--no-detector")
    monkeypatch.setenv("PROV_ADMIN_TOKEN", "admin123")
    rc, err = _run(capsys, *serve)
    assert rc == 2 and "$PROV_ADMIN_TOKEN" in err and "at least 22" in err, err
    assert "admin123" not in err and "token_urlsafe" in err and not db.exists()
    monkeypatch.delenv("PROV_ADMIN_TOKEN")
    short = tmp_path / "admin-token"
    short.write_text("x" * 21 + "\n")
    rc, err = _run(capsys, *serve, "--admin-token-file", str(short))
    assert rc == 2 and "--admin-token-file" in err and "21 characters" in err, err
    assert not db.exists()
    short.write_text("x\n")  # one character is one, not "1 characters"
    rc, err = _run(capsys, *serve, "--admin-token-file", str(short))
    assert rc == 2 and "is 1 character;" in err, err


def test_an_admin_token_grpc_cannot_carry_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token with a character that is not visible ASCII cannot travel as gRPC metadata:
    `prov serve` took one (then no admin call could ever reach it), `prov admin` with a
    byte that is not UTF-8 ended in a traceback showing that character and its place,
    and with an accented letter said "Invalid metadata [INTERNAL]" with grpc's source
    trace. Exit 2 on both sides, before any call, never showing the token."""
    db = tmp_path / "prov.db"
    serve = ("serve", "--db", str(db), "--listen", "127.0.0.1:0", "--no-detector")
    enroll = ("admin", "enroll-token", "--server", closed_port())
    for token in ("é" + "a" * 30, "\udcff" + "a" * 30, "a" * 15 + " " + "a" * 15):
        monkeypatch.setenv("PROV_ADMIN_TOKEN", token)
        for args in (serve, enroll):
            rc, err = _run(capsys, *args)
            assert rc == 2 and "not visible ASCII" in err and "PROV_ADMIN_TOKEN" in err, err
            assert "aaaa" not in err and "position" not in err and "Traceback" not in err
        assert not db.exists()
    # in --admin-token-file, a byte that is not UTF-8 ended in a UnicodeDecodeError
    # traceback naming the byte and its place, exit 1
    monkeypatch.delenv("PROV_ADMIN_TOKEN")
    token_file = tmp_path / "admin-token"
    token_file.write_bytes(b"\xff" + b"a" * 30 + b"\n")
    rc, err = _run(capsys, *serve, "--admin-token-file", str(token_file))
    assert rc == 2 and "not visible ASCII" in err and "--admin-token-file" in err, err
    assert "aaaa" not in err and "position" not in err and "0xff" not in err, err
    assert not db.exists()


def test_serve_files_that_do_not_exist_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov serve` naming an admin token file, an enrollment authority folder or a C2PA or
    TSA trust file that does not exist exits 2 before anything is made (before: exit 1
    after the database's lock file was made, the trust files' only after the database and
    its index were opened)."""
    serve = ("serve", "--db", str(tmp_path / "prov.db"), "--listen", "127.0.0.1:0")
    gone = str(tmp_path / "gone")
    for option in (
        "--admin-token-file",
        "--ca",
        "--c2pa-trust-anchors",
        "--c2pa-trust-config",
        "--tsa-trust-anchors",
    ):
        rc, err = _run(capsys, *serve, option, gone)
        assert rc == 2 and f"Invalid value for {option}:" in err and "does not exist" in err, (
            option,
            err,
        )
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_sign_tsa_timeout_without_tsa_url_is_a_usage_error(
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`prov sign --tsa-timeout S FILE` (with or without --c2pa) and no --tsa-url exits 2
    before any file is made (before: S was silently ignored and FILE signed)."""
    monkeypatch.setenv("PROV_HOME", str(tmp_path / "home"))
    for extra in ((), ("--c2pa",)):
        rc, err = _run(capsys, "sign", *extra, "--tsa-timeout", "3", str(photo))
        assert rc == 2 and "Invalid value for --tsa-timeout" in err, (extra, err)
        assert "none is asked: add --tsa-url URL (with --c2pa)" in err, err
    assert list(tmp_path.iterdir()) == [photo], list(tmp_path.iterdir())


def test_serve_c2pa_trust_config_without_anchors_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov serve --c2pa-trust-config CFG` with neither --c2pa-trust-anchors nor --ca
    exits 2 before anything is made: CFG widens the EKUs accepted under the trust
    anchors, and there are none (before: the server started and CFG did nothing)."""
    config = tmp_path / "store.cfg"
    config.write_text("1.3.6.1.4.1.99999.1\n")
    db = tmp_path / "missing" / "prov.db"  # a later usage error: never a running server
    rc, err = _run(
        capsys,
        "serve",
        "--db",
        str(db),
        "--listen",
        "127.0.0.1:0",
        "--c2pa-trust-config",
        str(config),
    )
    assert rc == 2 and "Invalid value for --c2pa-trust-config" in err, err
    assert "add --c2pa-trust-anchors PEM (or --ca DIR" in err, err
    assert list(tmp_path.iterdir()) == [config], list(tmp_path.iterdir())


def test_serve_c2pa_trust_config_that_is_not_text_is_one_error_line(tmp_path: Path) -> None:
    """A --c2pa-trust-config that is not UTF-8 text is a file that cannot be read: exit 1
    and one `error:` line naming it, with --c2pa-trust-anchors as with --ca (before,
    beside --c2pa-trust-anchors: a UnicodeDecodeError traceback)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ADMIN_TOKEN, ROOT

    assert prov_main(["admin", "ca", "init", "--dir", str(tmp_path / "ca"), "--no-passphrase"]) == 0
    config = tmp_path / "store.cfg"
    config.write_bytes(b"1.3.6.1.4.1.99999.1\n\xff\xfe\n")
    for n, anchor in enumerate(
        (
            ["--c2pa-trust-anchors", str(tmp_path / "ca" / "ca.cert.pem")],
            ["--ca", str(tmp_path / "ca")],
        )
    ):
        run = subprocess.run(
            [sys.executable, "-m", "clients.cli", "serve", "--db", str(tmp_path / f"{n}.db")]
            + ["--listen", "127.0.0.1:0", "--c2pa-trust-config", str(config), *anchor],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN, "COLUMNS": "200"},
        )
        assert run.returncode == 1, (anchor, run.stderr)
        assert "Traceback" not in run.stderr, (anchor, run.stderr)
        assert f"error: cannot read C2PA trust settings {config}" in _flat(run.stderr), anchor


def test_audit_of_tiles_or_a_database_without_a_key_and_with_both_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov log audit --tiles DIR` or `--db FILE` with neither --log-key nor a STATE that
    holds the key exits 2, as a missing `prov receipt verify --log-key` does (before: exit
    1); --tiles with --db exits 2 naming both (before: the tiles were audited and --db
    silently ignored). Nothing is read or written."""
    (tmp_path / "tiles").mkdir()
    db = tmp_path / "prov.db"
    db.write_bytes(b"")
    state = tmp_path / "s.json"
    for copy, what in (("--tiles", "tiles"), ("--db", "a database")):
        where = str(tmp_path / "tiles") if copy == "--tiles" else str(db)
        rc, err = _run(capsys, "log", "audit", "--state", str(state), copy, where)
        assert rc == 2 and "--log-key" in err and f"auditing {what} needs the log's" in err, err
    key = generate_log_key(tmp_path / "log.pem", "example.org/log").verifier_key()
    both = ("--tiles", str(tmp_path / "tiles"), "--db", str(db), "--log-key", key)
    rc, err = _run(capsys, "log", "audit", "--state", str(state), *both)
    assert rc == 2 and "give one of --tiles and --db" in err, err
    assert not state.exists() and db.read_bytes() == b""


def test_verify_with_no_sidecar_and_a_sidecar_is_a_usage_error(
    photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov verify F --no-sidecar --sidecar S` exits 2 before any call (before: S was
    silently ignored and the file judged without it, a different verdict)."""
    sidecar = photo.with_name("other.prov")
    sidecar.write_text("{}")
    args = ("verify", str(photo), "--no-sidecar", "--sidecar", str(sidecar))
    rc, err = _run(capsys, *args, "--server", closed_port())
    assert rc == 2 and "--no-sidecar" in err and "give one of them" in err, err


def test_detect_options_of_the_local_model_need_local(
    photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov detect --seed/--model/--weights/--device` without --local exits 2 before any
    call (before: the server's model scored the file and the option did nothing)."""
    for extra in (("--seed", "3"), ("--model", "other"), ("--device", "cpu")):
        rc, err = _run(capsys, "detect", str(photo), *extra, "--server", closed_port())
        assert rc == 2 and f"{extra[0]} choose the model run here: add --local" in err, err


def test_a_loop_of_symbolic_links_is_named_not_reported_missing(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path argument or option that is a loop of symbolic links (loop1 -> loop2 ->
    loop1) is a usage error that names the loop (before: "path 'loop1' does not exist",
    Typer's message for any path that cannot be stat'ed); a dangling link still reads
    "does not exist"."""
    loop = tmp_path / "loop1"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    report = str(tmp_path / "scan.jsonl")
    for args, option in (
        (("verify", "LOOP"), "for FILE:"),
        (("verify", str(photo), "--sidecar", "LOOP"), "--sidecar"),
        (("sign", "LOOP"), "for FILES:"),
        (("detect", "LOOP"), "for FILES:"),
        (("scan", str(photo), "LOOP", "--report", report), "for PATHS:"),
        (("receipt", "export", "LOOP"), "for SIDECAR:"),
        (("receipt", "verify", "LOOP"), "for SIDECAR:"),
        (("receipt", "refresh", "LOOP"), "for SIDECAR:"),
        (("log", "key", "--key-file", "LOOP"), "--key-file"),
        (("device", "enroll", "--certificate", "LOOP"), "--certificate"),
        (
            ("serve", "--db", str(tmp_path / "x.db"), "--admin-token-file", "LOOP"),
            "--admin-token-file",
        ),
        (("serve", "--db", str(tmp_path / "x.db"), "--ca", "LOOP"), "--ca"),
    ):
        for path, said in (
            (loop, "too many levels of symbolic links"),
            (dangling, "does not exist"),
        ):
            rc, err = _run(capsys, *[str(path) if a == "LOOP" else a for a in args])
            assert rc == 2 and option in err and f"{path.name}'" in err and said in err, (args, err)
            if said != "does not exist":
                assert "does not exist" not in err, (args, err)


@pytest.mark.parametrize(
    "args",
    [
        ("scan", "", "--report", "scan.jsonl", "--workers", "0"),
        ("log", "export-tiles", "", "--db", "log.db"),
        ("device", "init", "--home", ""),
        ("log", "audit", "--state", ""),
        ("log", "audit", "--state", "s.json", "--tiles", ""),
    ],
    ids=["scan", "export-tiles", "home", "audit-state", "audit-tiles"],
)
def test_an_empty_path_is_a_usage_error_not_the_current_folder(
    args: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty path (`prov scan "$ARCHIVE"` with ARCHIVE unset) is a usage error, as
    for `ls ''`; nothing is read or written in the current folder (h-att45c: before,
    Path('') was '.': `prov scan ''` scanned the current folder and sent its hashes to
    the server, `prov log export-tiles ''` wrote the tiles there, and `prov device init
    --home ''` made a device key there; `prov log audit --tiles ''` audited the current
    folder as the tiles, `--state ''` was told ". is a folder"). A real `prov` process in
    an empty folder."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "log.db").touch()
    monkeypatch.setenv("PROV_PASSPHRASE", "a passphrase for the test")
    monkeypatch.setenv("PROV_SERVER", closed_port())
    rc, out, err = ended(cli_process(args, cwd=work), timeout=120)
    flat = _flat(err)
    assert rc == 2, (rc, out, err)
    assert "an empty path" in flat, flat
    assert sorted(p.name for p in work.iterdir()) == ["log.db"], list(work.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ("admin", "ca", "init", "--dir", ""),
        ("witness", "serve", "--key", "{tmp}/w.pem", "--log-key", "{vkey}", "--state", "")
        + ("--name", "witness.example/w1", "--listen", "127.0.0.1:0"),
        ("web", "--tiles-dir", "", "--listen", "127.0.0.1:0"),
        ("log", "audit", "--state", "{tmp}/s.json", "--tiles", "", "--log-key", "{vkey}"),
        ("serve", "--db", "{tmp}/p.db", "--log-key", "", "--listen", "127.0.0.1:0"),
    ],
    ids=["ca-init-dir", "witness-state", "web-tiles-dir", "audit-tiles", "serve-log-key"],
)
def test_other_empty_paths_are_usage_errors_not_the_current_folder(
    args: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for the paths the first fix left out (seen failing first: `prov admin
    ca init --dir ''` wrote the authority's private key into the current folder, exit 0;
    `prov witness serve --state ''` kept its state there, and `prov web --tiles-dir ''`
    served it as a tiled log, both running on; `prov log audit --tiles ''` audited the
    current folder as a tiled log; `prov serve --log-key ''` ended in a traceback)."""
    work = tmp_path / "work"
    work.mkdir()
    vkey = generate_log_key(tmp_path / "log.pem", "log.example/log").verifier_key()
    args = tuple(a.replace("{tmp}", str(tmp_path)).replace("{vkey}", vkey) for a in args)
    monkeypatch.setenv("PROV_CA_PASSPHRASE", "a passphrase for the test")
    monkeypatch.setenv("PROV_SERVER", closed_port())
    rc, out, err = ended(cli_process(args, cwd=work), timeout=30)  # a refused start ends at once
    flat = _flat(err)
    assert rc == 2, (rc, out, err)
    assert "an empty path" in flat and "Traceback" not in err, flat
    assert list(work.iterdir()) == [], list(work.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ("log", "audit", "--state", "", "--log-key", "{vkey}"),
        ("serve", "--db", "{tmp}/p.db", "--log-key", "", "--listen", "127.0.0.1:0"),
    ],
    ids=["audit-state", "serve-log-key"],
)
def test_an_empty_file_path_is_not_told_to_be_the_current_folder(
    args: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An option naming a file, given empty, asks for a file name (seen failing first:
    "give a file or folder name, or . for the current folder", and `--log-key .` or
    `--state .` is then refused as a folder)."""
    work = tmp_path / "work"
    work.mkdir()
    vkey = generate_log_key(tmp_path / "log.pem", "log.example/log").verifier_key()
    args = tuple(a.replace("{tmp}", str(tmp_path)).replace("{vkey}", vkey) for a in args)
    monkeypatch.setenv("PROV_SERVER", closed_port())
    rc, out, err = ended(cli_process(args, cwd=work), timeout=30)
    flat = _flat(err)
    assert rc == 2, (rc, out, err)
    assert "an empty path (an unset shell variable?); give a file name" in flat, flat
    assert "current folder" not in flat, flat


def test_a_log_key_that_is_a_folder_is_a_usage_error(tmp_path: Path) -> None:
    """`prov serve --log-key` naming a folder is a usage error naming it (seen failing
    first: `.` and `/` ended a new database's start in a traceback, "PosixPath('.') has
    an empty name"; another folder was exit 1 once the start had begun)."""
    for n, folder in enumerate((".", "/", str(tmp_path))):
        serve = ("serve", "--db", str(tmp_path / f"{n}.db"), "--listen", "127.0.0.1:0")
        rc, out, err = _prov_in_2_gb(*serve, "--no-detector", "--log-key", folder)
        assert rc == 2, (folder, rc, err)
        assert f"{folder} is a folder; name the log's key file" in err, (folder, err)
        assert "Traceback" not in err and "listening" not in out, (folder, err)


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (("witness", "serve"), "--log-key KEY"),
        (("serve",), "--witness URL=KEY"),
        (("verify",), "--witness KEY"),
        (("receipt", "verify"), "--witness KEY"),
        (("receipt", "refresh"), "--witness KEY"),
    ],
)
def test_a_repeated_option_names_what_it_takes_not_a_python_type(
    command: tuple[str, ...], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # before: `--log-key <list[str]>`, `--witness <list[str]>` (Typer's type of the list)
    capsys.readouterr()
    assert prov_main([*command, "--help"]) == 0
    said = _flat(capsys.readouterr().out)
    assert "list[str]" not in said and shown in said, (command, said)


def test_a_path_argument_is_named_in_its_errors_as_the_usage_line_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing path and a folder given where a file goes both name the argument as
    "Usage: prov verify [OPTIONS] FILE" does (before: "Invalid value for 'file': path ...
    does not exist" but "Invalid value for FILE: ... is a folder"); so does a missing
    argument (before: "Missing argument 'device_id'.")."""
    gone = str(tmp_path / "gone.jpg")
    report = str(tmp_path / "scan.jsonl")
    for args, name in (
        (("verify", gone), "FILE"),
        (("sign", gone), "FILES"),
        (("detect", gone), "FILES"),
        (("scan", gone, "--report", report), "PATHS"),
        (("receipt", "export", gone), "SIDECAR"),
        (("receipt", "verify", gone), "SIDECAR"),
        (("receipt", "refresh", gone), "SIDECAR"),
    ):
        rc, err = _run(capsys, *args)
        assert rc == 2 and f"Invalid value for {name}: path" in err, (args, err)
        assert "does not exist" in err and f"[OPTIONS] {name}" in err, (args, err)
    for command, name in (("verify", "FILE"), ("sign", "FILES"), ("detect", "FILES")):
        rc, err = _run(capsys, command, str(tmp_path))
        assert rc == 2 and f"Invalid value for {name}:" in err and "is a folder" in err, err
    rc, err = _run(capsys, "admin", "revoke")
    assert rc == 2 and "Missing argument DEVICE_ID." in err, err


def test_a_file_to_verify_that_is_no_regular_file_cannot_be_checked_as_documented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO or a device given as `prov verify`'s FILE is there but cannot be checked:
    exit 1 (README's "(error)" row: the file could not be checked), unread, not a usage
    error; only a FILE that does not exist is exit 2. Before, README's "(usage)" row said a
    FILE that "cannot be read" is exit 2 and neither exit table named FIFO or device."""
    fifo = tmp_path / "photo.fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO (named pipe)"), (Path("/dev/null"), "a device")):
        rc, err = _run(capsys, "verify", str(path), "--server", closed_port(), "--no-detect")
        assert rc == 1 and f"{path} is {kind}, not a regular file" in err, (path, err)
    for doc in ("README.md", "docs/verify.md"):
        rows = [r for r in (ROOT / doc).read_text().splitlines() if r.startswith("| (")]
        usage = next(r for r in rows if r.startswith("| (usage) | 2 |"))
        error = next(r for r in rows if r.startswith("| (error) | 1 |"))
        assert "a FILE or `--sidecar` that does not exist or cannot be read" not in usage, doc
        assert "a FIFO or a device" in error, (doc, error)


def test_a_log_database_that_is_no_regular_file_is_named_for_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov log audit --db`, `prov log export-tiles --db` and `prov log key --db` given a
    FIFO, a device or a folder say what it is, as `prov serve --db` does, exit 2 before
    anything is opened (before: "no database at PATH", as for a path with nothing there)."""
    key_file = tmp_path / "log.pem"
    key = generate_log_key(key_file, "log.example/log").verifier_key()
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    for db, kind in (
        (str(fifo), "a FIFO (named pipe)"),
        ("/dev/null", "a device"),
        (str(tmp_path), "a folder"),
    ):
        for args in (
            ("log", "audit", "--state", str(tmp_path / "s.json"), "--db", db, "--log-key", key),
            ("log", "export-tiles", str(tmp_path / "tiles"), "--db", db),
            ("log", "key", "--key-file", str(key_file), "--db", db),
        ):
            rc, err = _run(capsys, *args)
            assert rc == 2 and "--db" in err and f"{db} is {kind}, not a database file" in err, (
                args,
                err,
            )
            assert "no database at" not in err, (args, err)
    assert not (tmp_path / "tiles").exists() and not (tmp_path / "s.json").exists()


def test_an_option_is_named_in_its_errors_as_our_own_checks_name_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Click's checks name an option bare, as ours do ("Invalid value for --label: ...")
    (before: "Invalid value for '--ttl': ...", "Missing option '--key'.")."""
    monkeypatch.setenv("PROV_ADMIN_TOKEN", "some-token")
    rc, err = _run(capsys, "admin", "enroll-token", "--ttl", "99999999", "--server", closed_port())
    assert rc == 2 and "Invalid value for --ttl: " in err, err
    gone = str(tmp_path / "gone.pem")
    rc, err = _run(capsys, "device", "enroll", "--certificate", gone, "--home", str(tmp_path))
    assert rc == 2 and "Invalid value for --certificate: path" in err, err
    rc, err = _run(capsys, "witness", "serve")
    assert rc == 2 and "Missing option --key." in err, err


def test_serve_on_postgresql_without_a_log_key_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/deploy.md: `--log-key` is required with a PostgreSQL `--db`; a missing option
    is a usage error, found before anything is opened (before: exit 1, an `error:` line,
    as if the machine had failed). The URL's port is closed: nothing is reached."""
    monkeypatch.delenv("PROV_ADMIN_TOKEN", raising=False)
    url = f"postgresql://prov@{closed_port()}/provenance"
    rc, err = _run(capsys, "serve", "--db", url, "--listen", "127.0.0.1:0")
    assert rc == 2, (rc, err)
    assert "--log-key" in err and "required with a PostgreSQL --db" in err, err


def test_a_server_address_with_a_blank_is_a_usage_error(
    photo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A space, tab or newline in --server or $PROV_SERVER (pasted with the address) is a
    usage error naming it. Before (h-newuser60): taken, then exit 1 "cannot reach the
    server at  127.0.0.1:50051 (... Misformatted domain name)" and the hint "no server
    answers there"."""
    from clients.api import ProvenanceClient
    from provenance.core.errors import ConfigError

    for address in (" 127.0.0.1:50051", "127.0.0.1:50051\n", "127.0.0.1 :50051", "\t[::1]:1"):
        rc, err = _run(capsys, "verify", str(photo), "--server", address, "--no-detect")
        assert rc == 2 and "--server" in err and "a blank" in err, (address, err)
        with pytest.raises(ConfigError, match="a blank"):
            ProvenanceClient(address)
    monkeypatch.setenv("PROV_SERVER", " 127.0.0.1:50051")
    rc, err = _run(capsys, "log", "key")
    assert rc == 2 and "$PROV_SERVER" in err and "a blank" in err, err


def test_a_server_name_that_does_not_resolve_is_said_so(
    photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --server host no resolver knows (.invalid never resolves, RFC 6761) is exit 1
    with a hint about the name. Before (h-newuser60): the hint "no server answers there.
    Start one with `prov serve --db FILE`", as for a closed port."""
    rc, err = _run(capsys, "verify", str(photo), "--server", "nosuchhost.invalid:50051")
    assert rc == 1 and "cannot reach the server" in err, err
    assert "hint: the host name nosuchhost.invalid does not resolve" in err, err
    assert "Start one with" not in err, err


def test_a_witness_url_whose_port_is_no_port_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov verify --witness-url`, `prov receipt refresh --witness-url` and `prov serve
    --witness` with a URL whose port is past 65535, 0 or not a number exit 2 before any
    call or file, naming the URL (h-newuser61: before, `prov verify --witness-url
    http://127.0.0.1:99999` ended in a ValueError traceback, exit 1, and `prov serve
    --witness` started with it)."""
    w = cosigner_vkey("witness.example/w1", bytes(range(32)))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 not much of a photo")
    sidecar = tmp_path / "photo.jpg.prov"
    db = tmp_path / "prov.db"
    for url in ("http://127.0.0.1:99999", "http://127.0.0.1:0", "https://h.example:abc/w"):
        said = f"'{url}': its port is not a number from 1 to 65535"
        for args in (
            ("verify", str(photo), "--witness", w, "--witness-url", url),
            ("serve", "--db", str(db), "--listen", "127.0.0.1:0", "--witness", f"{url}={w}"),
        ):
            rc, err = _run(capsys, *args)
            assert rc == 2 and said in err and "Traceback" not in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]
    sidecar.write_text("{}")
    rc, err = _run(
        capsys,
        "receipt",
        "refresh",
        str(sidecar),
        "--witness",
        w,
        "--witness-url",
        "http://127.0.0.1:99999",
    )
    assert rc == 2 and "port is not a number from 1 to 65535" in err, err


def test_a_witness_given_a_bare_key_after_its_name_is_told_the_whole_key(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--witness NAME=KEY`` with KEY only the key's last part (the base64 after the
    second ``+``): the usage error says KEY is the whole cosigner key NAME+ID+KEY, with an
    example (before: "give the cosigner key NAME+ID+KEY ... (inline, as NAME=KEY or in a
    file)", which read as if the bare key went after ``NAME=``)."""
    w = cosigner_vkey("witness.example/w1", bytes(range(32)))
    side = tmp_path / "x.prov"
    side.write_text("{}")
    bare = f"witness.example/w1={w.rsplit('+', 1)[1]}"
    closed = closed_port()
    for args in (
        ("verify", str(photo), "--witness", bare, "--server", closed),
        ("receipt", "refresh", str(side), "--witness", bare, "--server", closed),
    ):
        rc, err = _run(capsys, *args)
        assert rc == 2 and "as NAME=KEY" not in err, (args, err)
        assert "NAME=NAME+ID+KEY" in err and "e.g. witness.example/w1+" in err, (args, err)


def test_a_witness_quorum_of_0_or_less_is_a_usage_error(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--witness-quorum 0`` (verify, receipt verify/refresh) would require no
    cosignature, so --witness would check none: exit 2 before any call, saying to leave
    it out for all (which is what `prov serve --witness-quorum 0` means). Before: taken,
    and the verdict passed with "cosigned by 0 of 1 witnesses (quorum 0): none"; a
    negative quorum was Typer's "not in the range x>=0"."""
    w = cosigner_vkey("witness.example/w1", bytes(range(32)))
    log = generate_log_key(tmp_path / "log.pem", "example.org/log").verifier_key()
    sidecar = tmp_path / "rocket.jpg.prov"
    sidecar.write_text("{}")
    server = ("--server", closed_port())
    for quorum in ("0", "-1"):
        for args in (
            ("verify", str(photo), "--witness", w, *server),
            ("receipt", "verify", str(sidecar), "--log-key", log, "--witness", w),
            ("receipt", "refresh", str(sidecar), "--witness", w, *server),
        ):
            rc, err = _run(capsys, *args, "--witness-quorum", quorum)
            assert rc == 2 and "--witness-quorum" in err, (args, err)
            assert "requires no cosignature" in err and "leave it out" in err, (args, err)


@pytest.mark.parametrize("beside", ["out.csv", "out.html", "out.csv.part"])
def test_an_unreadable_file_where_the_scan_writes_is_said_unreadable(
    photo: Path, tmp_path: Path, beside: str
) -> None:
    """A file of mode 0000 where a scan into out.jsonl writes its CSV, its page or the
    CSV's .part cannot be checked for a scan's: refused up front (exit 2, as the other
    files no scan wrote), said to be unreadable and why (Permission denied), and left as
    it was. Before, it was said to be "not a report of prov scan", which
    sent the user looking at a file that may well be one. Run without the capabilities
    that let root read it (`WITHOUT_DAC_OVERRIDE`), through the real CLI."""
    import subprocess
    import sys

    from tests.conftest import WITHOUT_DAC_OVERRIDE

    theirs = tmp_path / beside
    theirs.write_text("whatever\n")
    theirs.chmod(0o000)
    report = tmp_path / "out.jsonl"
    try:
        run = subprocess.run(
            [*WITHOUT_DAC_OVERRIDE, sys.executable, "-m", "clients.cli", "scan", str(photo)]
            + ["--report", str(report), "--server", closed_port(), "--workers", "0"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "400"},
        )
    finally:
        theirs.chmod(0o600)
    err = _flat(run.stderr)
    assert run.returncode == 2 and "--report" in err, (run.returncode, err)
    assert f"{theirs} exists and cannot be read (Permission denied)" in err, err
    assert "not a report of prov scan" not in err and "Traceback" not in err, err
    assert "Move that file away, or name another --report" in err, err
    assert theirs.read_text() == "whatever\n" and not report.exists()


@pytest.mark.parametrize("beside", ["out.csv", "out.html", "out.csv.part"])
def test_a_symbolic_link_where_the_scan_writes_is_refused(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], beside: str
) -> None:
    """A symbolic link where a scan into out.jsonl writes its CSV, its page or the CSV's
    .part, leading to a file elsewhere (empty here, which a scan takes over as holding
    nothing), is refused up front (exit 2, naming the link and where it leads) and the file
    it leads to is left as it was. Before, the scan opened out.csv.part and
    out.html through the link and wrote its CSV and its page into that other file (out of
    the report's folder: another scan's report, or any empty file), and replaced an out.csv
    link by its CSV."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "kept.txt"
    target.write_bytes(b"")
    (tmp_path / "reports").mkdir()
    link = tmp_path / "reports" / beside
    link.symlink_to(target)
    report = tmp_path / "reports" / "out.jsonl"
    args = ("scan", str(photo), "--report", str(report), "--server", closed_port())
    rc, err = _run(capsys, *args, "--workers", "0")
    assert rc == 2 and "--report" in err, (rc, err)
    assert f"{link} is a symbolic link (to {target})" in err, err
    assert "Move that link away, or name another --report" in err, err
    assert target.read_bytes() == b"" and link.is_symlink() and not report.exists()


def test_a_report_linked_into_a_missing_folder_is_a_usage_error(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--report` naming a symbolic link to a file in a folder that does not exist (the
    report is created where the link leads) is a usage error (exit 2, naming the folder
    and the link) found before the scan starts, as a report in a missing folder is.
    Before, the scan started and stopped with "cannot open the report
    ...: No such file or directory", exit 1."""
    report = tmp_path / "out.jsonl"
    report.symlink_to(tmp_path / "gone" / "out.jsonl")
    args = ("scan", str(photo), "--report", str(report), "--server", closed_port())
    rc, err = _run(capsys, *args, "--workers", "0")
    assert rc == 2 and "--report" in err, (rc, err)
    assert f"the folder {tmp_path / 'gone'} does not exist (create it first)" in err, err
    assert f"{report} is a symbolic link to {tmp_path / 'gone' / 'out.jsonl'}" in err, err


def test_a_report_that_is_a_loop_of_links_is_a_usage_error(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--report` naming a symbolic link that leads round in a loop (to itself, or through
    another link back to it) is a usage error (exit 2, naming the link and what to do),
    found before the scan starts. Before, the scan stopped with "error: Too many levels
    of symbolic links: PATH", exit 1, saying nothing of a link."""
    for report, other in (
        (tmp_path / "self.jsonl", None),
        (tmp_path / "one.jsonl", tmp_path / "two.jsonl"),
    ):
        if other is None:
            report.symlink_to(report.name)
        else:
            report.symlink_to(other.name)
            other.symlink_to(report.name)
        args = ("scan", str(photo), "--report", str(report), "--server", closed_port())
        rc, err = _run(capsys, *args, "--workers", "0")
        assert rc == 2 and "--report" in err, (rc, err)
        assert f"{report} is a symbolic link (to" in err, err
        assert "a loop of symbolic links" in err and "fix the link" in err, err


def test_an_unreadable_file_to_verify_or_detect_is_named_with_why_exit_1(
    photo: Path, tmp_path: Path
) -> None:
    """A file of mode 0000 given to `prov verify`, `prov detect` or `prov detector detect`
    could not be checked: exit 1 with the reason ("Permission denied"), as README's
    exit-code table and their --help say, and the detection commands still score the other
    files they were given (`prov detect --local`: a server would need to be reached).
    Before, Click's check refused the whole command as a usage error, exit 2, "path '...'
    is not readable." with no reason. Run without the capabilities that let root read it
    (`WITHOUT_DAC_OVERRIDE`), through the real CLI."""
    import subprocess
    import sys

    from tests.conftest import WITHOUT_DAC_OVERRIDE

    secret = tmp_path / "secret.jpg"
    secret.write_bytes(photo.read_bytes())
    secret.chmod(0o000)
    local = ("detect", "--local", "--seed", "1", "--device", "cpu", str(secret), str(photo))
    alone = ("detector", "detect", *local[2:])  # `prov detector detect`: the same words
    try:
        runs = [
            subprocess.run(
                [*WITHOUT_DAC_OVERRIDE, sys.executable, "-m", "clients.cli", *args],
                capture_output=True,
                text=True,
                timeout=600,
                cwd=ROOT,
                env={**os.environ, "COLUMNS": "400"},
            )
            for args in (("verify", str(secret), "--server", closed_port()), local, alone)
        ]
    finally:
        secret.chmod(0o600)
    verify, *detects = runs
    assert verify.returncode == 1, (verify.returncode, verify.stderr)
    assert f"error: cannot read {secret}: Permission denied" in verify.stderr, verify.stderr
    assert "not readable" not in verify.stderr
    for detect in detects:  # `prov detector detect` was exit 2, "... is not readable."
        assert detect.returncode == 1, (detect.args, detect.returncode, detect.stderr)
        assert f"{secret}: cannot read: Permission denied" in detect.stderr, detect.stderr
        assert f"{photo}: " in detect.stdout and "not every file was scored" in detect.stderr
        assert "not readable" not in detect.stderr, detect.stderr


def test_a_log_key_that_is_a_link_leading_nowhere_is_named_a_link(tmp_path: Path) -> None:
    """`prov serve --log-key LINK`, a symbolic link to a key file not made yet: a new key is
    made beside the name and hard-linked to it, never written through a link, so the
    start stops (exit 1) saying the link leads nowhere and what to do, and makes no key.
    Before, it said "log key file LINK already exists; not overwriting it" of a file that
    did not exist."""
    (tmp_path / "keys").mkdir()
    link = tmp_path / "log.pem"
    link.symlink_to(Path("keys") / "log.pem")
    rc, out, err = _prov_in_2_gb(
        "serve",
        "--db",
        str(tmp_path / "p.db"),
        "--log-key",
        str(link),
        "--listen",
        "127.0.0.1:0",
        "--no-detector",
    )
    assert rc == 1 and "listening on" not in out and "Traceback" not in err, (rc, err)
    assert f"error: log key file {link} is a symbolic link (to keys/log.pem)" in err, err
    assert "leads to no file" in err and "remove the link" in err, err
    assert "already exists" not in err, err
    assert list((tmp_path / "keys").iterdir()) == [] and link.is_symlink()
