"""The stack check that ends `make setup` and starts the test suite: it names what is wrong and the fix."""

import subprocess
import sys
from pathlib import Path

from common.stack_check import main, problems, report
from common.versions import LOCK_FILE, locked_pins

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_stack_passes_and_says_so(capsys):
    assert main() == 0
    assert "torchaudio resample + Spectrogram ran" in capsys.readouterr().out


def test_a_version_other_than_the_locked_one_is_named_with_the_fix(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(LOCK_FILE.read_text().replace(f"torchaudio=={locked_pins()['torchaudio']} ", "torchaudio==2.11.1 "))
    found = problems({"torchaudio": "torchaudio"}, lock=lock)
    assert len(found) == 1 and "torchaudio 2.11.0 is installed, requirements.lock pins 2.11.1" in found[0]
    assert "make setup" in report(found)


def test_a_package_that_fails_to_load_is_one_line_not_a_traceback(tmp_path):
    # A real import failure, shaped like the one of a compiled library built against another torch.
    (tmp_path / "broken_ext.py").write_text("raise OSError('libbroken.so: undefined symbol: torch_exception_x')\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from importlib import metadata;"
            "from common.stack_check import problems, report;"
            "found = problems({'torch': 'broken_ext'});"
            "print(report(found)); sys.exit(1 if found else 0)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1
    assert "torch 2.11.0 does not import: OSError: libbroken.so: undefined symbol" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_a_missing_lock_is_refused_with_how_to_restore_it(tmp_path):
    found = problems({"torch": "torch"}, lock=tmp_path / "requirements.lock")
    assert len(found) == 1 and "git checkout -- requirements.lock" in found[0] and "make lock" in found[0]
