"""Coverage-guided fuzzing of the C cores: replay of the saved inputs, then a short run of each harness.

The libFuzzer harnesses live in tests/fuzz/ (one C file each: ring_reader, ring_writer, dp_rx, dp_tx,
simhost_tx; their invariants are in each file's header comment); scripts/fuzz.py builds and runs
them (long runs, seeds). Here each harness is built once with clang -fsanitize=fuzzer,address,
undefined into a temporary directory, then:

* every seed (tests/fuzz/corpus/<harness>/) and regression input (tests/fuzz/regressions/<harness>/)
  runs once and must not crash, except regression inputs named crash-*: they reproduce a finding
  of the C code that is not fixed yet and are xfail(strict=True) with the finding below, so the
  test fails (XPASS) the day the bug is fixed and the input can become a plain regression;
* each harness fuzzes for 12 s from a copy of its seeds and must end without a finding (known
  findings, named by HVU_FUZZ_ALLOW, do not stop it: see tests/fuzz/README.md).

Skips with the reason when clang or libFuzzer is missing.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import pathlib
import shutil
import subprocess
from types import ModuleType

import pytest

from support.paths import ROOT


def _load_fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hvuio_fuzz_script", ROOT / "scripts" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzz()
CLANG = fuzz.find_clang()
WHY = "needs clang (apt-get install clang)" if CLANG is None else fuzz.libfuzzer_missing(CLANG)
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")

# Open findings of the C code, kept as regressions/<harness>/crash-<what> until fixed: input name ->
# what is wrong. None open; fixed ones stay as plain regressions (tests/fuzz/README.md).
FINDINGS: dict[str, str] = {}
SHORT_RUN_S = 12


def _cases() -> list[object]:
    out: list[object] = []
    for name in sorted(fuzz.HARNESSES):
        for path in fuzz.inputs(name):
            marks = []
            if fuzz.expected_to_crash(path):
                marks.append(pytest.mark.xfail(strict=True, reason=FINDINGS.get(path.name, "a known finding")))
            out.append(pytest.param(name, path, marks=marks, id=f"{name}/{path.parent.parent.name}/{path.name}"))
    return out


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    out = tmp_path_factory.mktemp("fuzz-build")
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(fuzz.build, name, out, CLANG) for name in fuzz.HARNESSES}
        return {name: f.result() for name, f in futures.items()}


def test_every_harness_has_seeds() -> None:
    for name in fuzz.HARNESSES:
        seeds = list((fuzz.CORPUS / name).glob("seed-*"))
        assert seeds, f"no seeds for {name}: python scripts/fuzz.py --make-seeds"


@pytest.mark.parametrize(("name", "path"), _cases())
def test_replay(binaries: dict[str, pathlib.Path], name: str, path: pathlib.Path) -> None:
    crashed, report = fuzz.replay_one(binaries[name], path)
    assert not crashed, f"{path.relative_to(ROOT)} crashes {name}:\n{report}"


@pytest.mark.parametrize("name", sorted(fuzz.HARNESSES))
def test_short_run_finds_nothing(binaries: dict[str, pathlib.Path], name: str, tmp_path: pathlib.Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for p in (fuzz.CORPUS / name).iterdir():
        shutil.copy(p, corpus / p.name)
    arts = tmp_path / "artifacts"
    arts.mkdir()
    cmd = [str(binaries[name]), f"-max_total_time={SHORT_RUN_S}", "-rss_limit_mb=2048", f"-max_len={fuzz.MAX_LEN}",
           "-timeout=60", f"-artifact_prefix={arts}/", str(corpus)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=fuzz.clean_env(allow=True), cwd=tmp_path,
                       timeout=SHORT_RUN_S + 240)
    found = sorted(p.name for p in arts.iterdir())
    tail = "\n".join(ln for ln in r.stderr.splitlines()[-40:] if not ln.startswith('"'))
    assert r.returncode == 0 and not found, f"{name} found {found or 'a failure'} (rc {r.returncode}):\n{tail}"
    execs, cov, rate = fuzz.stats(r.stderr)
    assert execs and execs > 0, f"{name} ran no input:\n{tail}"
