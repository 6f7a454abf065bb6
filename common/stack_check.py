"""Does the installed stack work together? Imports it and runs torchaudio's compiled ops once.

``make setup`` ends with it and the test suite starts with it, so a broken pair (say torchaudio 2.11.1
beside torch 2.11.0: ``undefined symbol`` in ``libtorchaudio.so``) shows up as one message naming the
packages, their versions and the fix, not as a traceback from a worker process later.

    python -m common.stack_check
"""

from __future__ import annotations

import sys
from importlib import import_module, metadata
from pathlib import Path

from .versions import LOCK_FILE, LockError, canonical, locked_pins

# distribution -> module it installs
STACK = {"torch": "torch", "torchaudio": "torchaudio", "numpy": "numpy", "soundfile": "soundfile",
         "ray": "ray", "mlflow": "mlflow", "webdataset": "webdataset", "hydra-core": "hydra"}
FIX = "Run `make setup`: it reinstalls exactly the versions in requirements.lock."


def installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _audio_ops() -> None:
    """One resample and one Spectrogram: both need libtorchaudio's compiled kernels to load."""
    import torch
    import torchaudio

    wave = torch.sin(torch.linspace(0, 1000, 22050))
    resampled = torchaudio.functional.resample(wave, 22050, 16000)
    spec = torchaudio.transforms.Spectrogram(n_fft=256)(resampled)
    if resampled.shape[-1] != 16000 or not torch.isfinite(spec).all():
        raise RuntimeError(
            f"resample gave {tuple(resampled.shape)} samples (expected 16000) or a non-finite spectrogram"
        )


class StackError(RuntimeError):
    """The installed packages do not work together; the message is ``report``'s."""


def require_audio_stack() -> None:
    """Raise StackError unless torch and torchaudio load and run (versions unchecked): called before
    worker processes start, which would otherwise die with an unrelated-looking error."""
    found = problems({"torch": "torch", "torchaudio": "torchaudio"}, check_versions=False)
    if found:
        raise StackError(report(found))


def problems(stack: dict[str, str] = STACK, lock: Path = LOCK_FILE, check_versions: bool = True) -> list[str]:
    """Each problem as one line; empty when the stack imports, matches the lock and runs."""
    try:
        pins = locked_pins(lock) if check_versions else {}
    except LockError as exc:
        return [str(exc)]
    found: list[str] = []
    for dist, module in stack.items():
        have, want = installed(dist), pins.get(canonical(dist))
        if have is None:
            found.append(f"{dist} is not installed (locked: {want})")
            continue
        if want is not None and have.split("+")[0] != want:
            found.append(f"{dist} {have} is installed, {lock.name} pins {want}")
        try:
            import_module(module)
        except Exception as exc:  # noqa: BLE001 - any import failure is the finding
            found.append(f"{dist} {have} does not import: {type(exc).__name__}: {_first_line(exc)}")
    if "torchaudio" in stack and not any(" does not import" in line for line in found):
        try:
            _audio_ops()
        except Exception as exc:  # noqa: BLE001
            found.append(f"torchaudio {installed('torchaudio')} with torch {installed('torch')}: resample/Spectrogram "
                         f"failed: {type(exc).__name__}: {_first_line(exc)}")
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def report(found: list[str]) -> str:
    versions = ", ".join(f"{d} {installed(d) or '-'}" for d in STACK)
    return ("The installed Python packages do not work together:\n" + "".join(f"  - {line}\n" for line in found)
            + f"Installed: {versions}.\n{FIX} If you edited pyproject.toml, run `make lock` first; "
              f"a lock you changed by hand is undone by `git checkout -- {LOCK_FILE.name}`.")


def main() -> int:
    found = problems()
    if found:
        print(report(found), file=sys.stderr)
        return 1
    versions = ", ".join(f"{d} {installed(d)}" for d in ("torch", "torchaudio", "ray", "mlflow"))
    print(f"stack check: OK ({versions}; torchaudio resample + Spectrogram ran)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
