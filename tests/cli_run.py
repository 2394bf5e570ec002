"""The CLI as the tests drive it: ``run`` one command line in-process, ``one_error_line`` the
one-line refusal it must print (shared by test_cli, test_guiders, test_tune)."""

from __future__ import annotations

from unitune.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``unitune ARGV`` (arguments str()-ed)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str) -> str:
    """The single "unitune: error:" line of a refusal (exit 2, no traceback)."""
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("unitune: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
