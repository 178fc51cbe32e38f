"""The command line keeps freed tensor memory in its process (glibc's mmap and trim thresholds); a
library call never touches its host's allocator. Each check runs in a fresh process, since the
thresholds are process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HOLDOUT, SAMPLES

REPO = Path(__file__).resolve().parent.parent

if not (sys.platform == "linux" and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")):
    pytest.skip("the malloc thresholds exist on glibc only", allow_module_level=True)

# Allocates and frees 8 MiB with malloc and prints how glibc's mmapped bytes (hblkhd) grew while the
# block was held, and how its heap (arena) stands after the free compared with before.
PROBE = """
import ctypes, json, sys
from robaudit.allocator import tune_malloc
setting = tune_malloc() if sys.argv[1] == "tune" else None

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2()
block = libc.malloc(8 << 20)
ctypes.memset(block, 1, 8 << 20)
held = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(json.dumps({"setting": setting, "mapped_growth": held.hblkhd - before.hblkhd,
                  "heap_kept": after.arena - before.arena}))
"""


def _without_malloc_variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}


def probe(mode: str, **env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env=_without_malloc_variables() | env,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_tuned_malloc_serves_large_blocks_from_the_heap_and_keeps_them() -> None:
    default = probe("default")
    assert default["setting"] is None
    assert default["mapped_growth"] >= 8 << 20  # glibc's default: a fresh mapping, unmapped on free
    tuned = probe("tune")
    assert str(tuned["setting"]).startswith("glibc mallopt")
    assert tuned["mapped_growth"] == 0  # from the heap instead
    assert tuned["heap_kept"] >= 8 << 20  # and kept after the free, for the next step to reuse


def test_the_users_own_malloc_variables_win() -> None:
    mine = probe("tune", MALLOC_TRIM_THRESHOLD_="65536")
    assert mine["setting"] is None


def test_a_scan_records_the_setting_and_a_library_call_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "scan.json"
    scan = subprocess.run(
        [sys.executable, "-m", "robaudit", "scan", str(SAMPLES / "mnist_cnn.pt"), "--data", str(HOLDOUT)]
        + ["--limit", "20", "--attack", "fgsm", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_without_malloc_variables(),
    )
    assert scan.returncode == 0, scan.stderr
    assert json.loads(out.read_text())["environment"]["malloc"].startswith("glibc mallopt")
    library = (
        "from robaudit.api import run_audit\n"
        "from robaudit.allocator import malloc_setting\n"
        "from robaudit.config import AuditConfig\n"
        f"result = run_audit(AuditConfig(model={str(SAMPLES / 'mnist_cnn.pt')!r}, data={str(HOLDOUT)!r},"
        " limit=20, attacks=('fgsm',)))\n"
        "print(malloc_setting(), 'malloc' in result.environment)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", library], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["None", "False"]
