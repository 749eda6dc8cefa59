"""Tests for mmtx/launch.py: when a run restarts with glibc malloc tunables, that they stop the
per-call page faults of large buffers, and that importing the library launches nothing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
import types

import pytest

from mmtx import launch as host_malloc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Children import this checkout's mmtx, whatever their working directory.
PYTHONPATH = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="glibc malloc tunables only")
TUNED = ":".join(f"{name}={value}" for name, value in host_malloc.TUNABLES.items())


@pytest.fixture
def cpu_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend no accelerator plugin is installed (the answer on this test machine anyway)."""
    monkeypatch.setattr(host_malloc, "_accelerator_plugin_installed", lambda: False)


@needs_glibc
@pytest.mark.usefixtures("cpu_host")
def test_tuned_environment_adds_the_tunables_and_keeps_the_rest() -> None:
    env = host_malloc.tuned_environment({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": TUNED}

    # The user's own values win; other tunables stay, in their order.
    user = "glibc.malloc.arena_max=4:glibc.pthread.rseq=0"
    env = host_malloc.tuned_environment({"GLIBC_TUNABLES": user})
    assert env is not None
    assert env["GLIBC_TUNABLES"] == (
        "glibc.malloc.arena_max=4:glibc.pthread.rseq=0:glibc.malloc.mmap_max=0:"
        f"glibc.malloc.trim_threshold={2**32 - 1}"
    )


@needs_glibc
@pytest.mark.usefixtures("cpu_host")
def test_no_restart_when_already_tuned_or_switched_off() -> None:
    assert host_malloc.tuned_environment({"GLIBC_TUNABLES": TUNED}) is None
    assert host_malloc.tuned_environment({host_malloc.SWITCH: "default"}) is None
    assert host_malloc.tuned_environment({host_malloc.SWITCH: "Tuned"}) is not None
    with pytest.raises(ValueError, match="MMTX_HOST_MALLOC='on'"):
        host_malloc.tuned_environment({host_malloc.SWITCH: "on"})


@needs_glibc
def test_auto_leaves_accelerator_hosts_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_malloc, "_accelerator_plugin_installed", lambda: False)
    assert host_malloc.tuned_environment({"JAX_PLATFORMS": "cuda,cpu"}) is None
    assert host_malloc.tuned_environment({"JAX_PLATFORMS": "cpu"}) is not None
    forced = {"JAX_PLATFORMS": "tpu", host_malloc.SWITCH: "tuned"}
    assert host_malloc.tuned_environment(forced) is not None

    monkeypatch.setattr(host_malloc, "_accelerator_plugin_installed", lambda: True)
    assert host_malloc.tuned_environment({}) is None
    assert host_malloc.tuned_environment({"JAX_PLATFORMS": "cpu"}) is not None


def test_libtpu_alone_does_not_make_a_tpu_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """libtpu (the aot extra, for mmtx.compile) counts as an accelerator only where the host
    shows TPU chips; a CUDA plugin counts wherever it is installed."""
    installed: list[str] = []
    fake = lambda: [types.SimpleNamespace(metadata={"Name": n}) for n in installed]
    monkeypatch.setattr(host_malloc.importlib.metadata, "distributions", fake)
    monkeypatch.setattr(host_malloc, "_tpu_device_files", lambda: False)
    assert not host_malloc._accelerator_plugin_installed()
    installed.append("libtpu")
    assert not host_malloc._accelerator_plugin_installed()
    monkeypatch.setattr(host_malloc, "_tpu_device_files", lambda: True)
    assert host_malloc._accelerator_plugin_installed()
    monkeypatch.setattr(host_malloc, "_tpu_device_files", lambda: False)
    installed.append("jax-cuda12-plugin")
    assert host_malloc._accelerator_plugin_installed()


def test_an_absent_tpu_is_skipped_before_jax_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """libtpu installed for compiles on a host without TPU chips: JAX_PLATFORMS=cpu, so no
    process prints libtpu's failed start; a TPU host, a CUDA plugin or the user's own
    JAX_PLATFORMS are left alone."""
    installed = ["libtpu"]
    fake = lambda: [types.SimpleNamespace(metadata={"Name": n}) for n in installed]
    monkeypatch.setattr(host_malloc.importlib.metadata, "distributions", fake)
    monkeypatch.setattr(host_malloc, "_tpu_device_files", lambda: False)
    environ: dict[str, str] = {}
    assert host_malloc.skip_absent_tpu(environ) and environ == {"JAX_PLATFORMS": "cpu"}
    assert not host_malloc.skip_absent_tpu({"JAX_PLATFORMS": "tpu"})
    monkeypatch.setattr(host_malloc, "_tpu_device_files", lambda: True)
    assert not host_malloc.skip_absent_tpu({})
    monkeypatch.setattr(host_malloc, "_tpu_device_files", lambda: False)
    installed.append("jax-cuda12-plugin")
    assert not host_malloc.skip_absent_tpu({})
    installed[:] = []
    assert not host_malloc.skip_absent_tpu({})  # nothing to skip


def test_current_setting() -> None:
    assert host_malloc.current_setting({}) == "default"
    assert host_malloc.current_setting({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}) == "default"
    assert host_malloc.current_setting({"GLIBC_TUNABLES": TUNED}) == TUNED


# A child that restarts itself, then mallocs, touches and frees a 64 MiB block (above glibc's
# largest mmap threshold, like XLA's temporaries) from a worker thread, several times, and
# reports the minor page faults of each round after the first. (Plain malloc through ctypes:
# NumPy would ask for transparent huge pages, which hides the effect.)
_CHILD = textwrap.dedent(
    """
    import ctypes, json, os, resource, sys, threading
    from mmtx import launch as host_malloc

    host_malloc.restart_with_tuned_malloc()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def touch():
        size = 64 * 2**20
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)

    faults = []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        worker = threading.Thread(target=touch)
        worker.start()
        worker.join()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"tunables": os.environ.get("GLIBC_TUNABLES"), "pid": os.getpid(),
                      "argv": sys.argv[1:], "faults": faults[1:]}))
    """
)


def _run_child(tmp_path, switch: str) -> tuple[dict, str]:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update({host_malloc.SWITCH: switch, "JAX_PLATFORMS": "cpu", "PYTHONPATH": PYTHONPATH})
    done = subprocess.run(
        [sys.executable, "-B", str(script), "--flag=1"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@needs_glibc
def test_restart_stops_page_faults_of_reused_large_buffers(tmp_path) -> None:
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")

    default, stderr = _run_child(tmp_path, "default")
    assert default["tunables"] is None and "restarting" not in stderr
    assert min(default["faults"]) > pages // 2  # a fresh mmap every round

    tuned, stderr = _run_child(tmp_path, "auto")
    assert "mmtx: restarting with GLIBC_TUNABLES=" in stderr
    assert tuned["tunables"] == TUNED and tuned["argv"] == ["--flag=1"]
    assert max(tuned["faults"]) < pages // 50  # the block's pages are reused


def test_importing_the_library_neither_launches_nor_parses_flags() -> None:
    """Launch concerns stay with the entry points: importing the library (the loop, the data
    pipeline, the evaluate and checkpoint packages) neither imports :mod:`mmtx.launch` nor
    parses or marks absl's flags."""
    code = textwrap.dedent(
        """
        import json, sys
        from absl import flags
        import mmtx, mmtx.train.loop, mmtx.train.build, mmtx.data.pipeline
        import mmtx.evaluate, mmtx.checkpoints
        print(json.dumps({"launch": "mmtx.launch" in sys.modules,
                          "parsed": flags.FLAGS.is_parsed()}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"launch": False, "parsed": False}


def test_answer_help_prints_the_doc_and_the_flags_only_when_asked(capsys) -> None:
    assert not host_malloc.answer_help(["prog", "--x=1"], "Doc.")
    assert not host_malloc.answer_help(["--help"], "Doc.")  # argv[0] is the program
    assert capsys.readouterr().out == ""
    for flag in host_malloc.HELP_FLAGS:
        assert host_malloc.answer_help(["prog", "--x=1", flag], "  Doc.\n", lambda: "--x: an x")
        assert capsys.readouterr().out == "Doc.\n\nflags:\n--x: an x\n"
    assert host_malloc.answer_help(["prog", "-h"], "Doc.\n")
    assert capsys.readouterr().out == "Doc.\n"


@pytest.mark.parametrize(
    "module,with_flags",
    [
        ("mmtx.import_checkpoint", True),
        ("mmtx.embed", True),
        ("mmtx.evaluate", False),
        ("mmtx.compile", False),
    ],
)
def test_every_command_answers_help_with_its_docstring(module: str, with_flags: bool) -> None:
    import importlib

    command = importlib.import_module(
        "mmtx.evaluate.command" if module == "mmtx.evaluate" else module
    )
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(command.__doc__.strip())
    assert ("\n\nflags:\n" in done.stdout) == with_flags
