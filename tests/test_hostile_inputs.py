"""Hostile and faulty inputs through the CLI (issue 17, docs/reliability.md): no input runs
code or reads another file, work is bounded before allocation, faults leave nothing behind.

Each case asserts the exit code, one ``error:`` line naming the problem, no traceback, and
that nothing was created or executed. Most run in-process (click's CliRunner); the signal
cases run the CLI in a subprocess and check its process tree and /dev/shm.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import netx_export
from loihi_conv.app.cli import main
from loihi_conv.fixed import qir
from netx_export import schema

ROOT = Path(__file__).resolve().parents[1]

MODELS = '''\
import torch
import torch.nn as nn
import torch.nn.functional as F


class Good(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.f = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.f(torch.flatten(F.relu(self.c(x)), 1))
'''

# TorchScript whose __setstate__ (run by torch.jit.load) writes a marker file.
EVIL = '''\
import torch


class Evil(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self):
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]):
        self.w = state[0]
        self.training = state[1]
        torch.save(self.w, "MARKER")

    def forward(self, x):
        return x
'''


def cli(args: list[str] | str, **env):
    args = shlex.split(args) if isinstance(args, str) else args
    return CliRunner(mix_stderr=False, env=env or None).invoke(main, [str(a) for a in args])


def refused(res, code: int, *words: str) -> str:
    """One clean ``error:`` message with exit ``code`` containing ``words``; returns stderr."""
    err = res.stderr.split("\r")[-1].lstrip()  # after any progress bar
    assert res.exit_code == code, (res.exit_code, err, res.output)
    assert err.startswith("error: ") and err.count("error: ") == 1, err
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, err
    for w in words:
        assert w in err, (w, err)
    return err


def digits_net() -> qir.QNetwork:
    """A small standard NetX network for (1, 8, 8) digits: conv Cuba -> dense Readout."""
    rng = np.random.default_rng(0)
    conv = 2 * rng.integers(-20, 21, (2, 1, 3, 3))
    dense = 2 * rng.integers(-20, 21, (10, 72))
    dense[0, 0], dense[0, 1] = 40, -40
    blocks = [qir.Block("in", (1, 8, 8)),
              qir.Block("c", (2, 6, 6), [qir.ConvSyn("in", conv)], bias=np.array([3, -2]),
                        neuron=qir.Cuba(vth=100)),
              qir.Block("out", (10,), [qir.DenseSyn("c", dense)], neuron=qir.Readout())]
    return qir.QNetwork(blocks, input_scale=16.0, meta={"dataset": "digits", "timesteps": 8})


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    (d / "models.py").write_text(MODELS)
    netx_export.save(digits_net(), d / "good.net")
    np.save(d / "x.npy", np.full((8, 8, 1), 3, np.int32))
    return d


def unsealed(d: Path, name: str, edit, keep_checksum: bool = False) -> Path:
    """A copy of good.net without our 512-byte seal (as h5repack leaves it), edited by
    ``edit(f)``; the content checksum is recomputed unless the edit declares huge data, and
    dropped with our marks unless ``keep_checksum``, so only the check under test can refuse it."""
    path = d / f"{name}.net"
    with h5py.File(d / "good.net", "r") as fs, h5py.File(path, "w") as fd:
        for k, v in fs.attrs.items():
            if keep_checksum or (k != schema.CHECKSUM_ATTR and k not in schema.OUR_MARKS):
                fd.attrs[k] = v
        fs.copy(fs["layer"], fd, name="layer")
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


# ---- code in a weights file ----------------------------------------------------------------
def test_torchscript_weights_are_refused_without_running_their_code(d, tmp_path):
    marker = tmp_path / "marker"
    src = tmp_path / "evilmod.py"
    src.write_text(EVIL.replace("MARKER", str(marker)))
    sys.path.insert(0, str(tmp_path))
    try:
        import evilmod  # noqa: F401 - written just above
        torch.jit.script(evilmod.Evil()).save(str(tmp_path / "evil.pt"))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("evilmod", None)
    # the archive does run code when torch loads it (the test's premise) ...
    torch.jit.load(str(tmp_path / "evil.pt"))
    assert marker.exists()
    marker.unlink()
    # ... and the CLI refuses it before any loader sees it
    res = cli(["evaluate", "--model", f"{d}/models.py:Good", "--weights", tmp_path / "evil.pt",
               "--dataset", "digits", "-T", "4"])
    refused(res, 2, "TorchScript", "not a plain state_dict", "torch.save(model.state_dict()")
    assert not marker.exists()


def test_plain_state_dict_zip_still_loads(d, tmp_path):
    from loihi_conv.app.zoo import load_user_model

    ns: dict = {}
    exec(MODELS, ns)
    torch.save(ns["Good"]().state_dict(), tmp_path / "w.pt")
    assert isinstance(load_user_model(f"{d}/models.py:Good", str(tmp_path / "w.pt")), torch.nn.Module)


# ---- NetX/HDF5 files that point elsewhere or declare too much -------------------------------
SECRET = "root:x:0:0:SECRET-CONTENT-7f3a"


def _external_weight(f):
    secret = Path(f.filename).parent / "secret.txt"
    secret.write_text(SECRET * 100)
    w = f["layer/1/weight"]
    shape, dtype = w.shape, w.dtype
    del f["layer/1/weight"]
    f.create_dataset("layer/1/weight", shape, dtype,
                     external=[(str(secret), 0, int(np.prod(shape)) * dtype.itemsize)])


def _external_type(f):
    secret = Path(f.filename).parent / "secret.txt"
    secret.write_text(SECRET * 100)
    del f["layer/1/type"]
    f.create_dataset("layer/1/type", (1,), "S16", external=[(str(secret), 0, 16)])


def _external_link(f):
    other = Path(f.filename).parent / "other.h5"
    with h5py.File(other, "w") as o:
        o.create_group("neuron")
        o["neuron/type"] = np.array([b"CUBA"], "S16")
    del f["layer/1/neuron"]
    f["layer/1/neuron"] = h5py.ExternalLink(str(other), "/neuron")


def _virtual(f, missing: bool = False):
    src = Path(f.filename).parent / ("missing.h5" if missing else "vsrc.h5")
    w = f["layer/1/weight"]
    shape, dtype = w.shape, w.dtype
    if not missing:
        with h5py.File(src, "w") as o:
            o["w"] = np.ones(shape, dtype)
    layout = h5py.VirtualLayout(shape, dtype)
    layout[...] = h5py.VirtualSource(str(src), "w", shape)
    del f["layer/1/weight"]
    f.create_virtual_dataset("layer/1/weight", layout, fillvalue=0)


def _bomb(f):  # 5.8 GB of zeros in a few kB (gzip), each dataset under the per-dataset limit
    for k in range(8):
        f.create_dataset(f"layer/3/pad{k}", (9 * 10**7,), np.int64, chunks=(2**20,),
                         compression="gzip")


def _chunk_bomb(f):  # a small dataset whose single chunk inflates to 128 MiB
    del f["layer/3/weight"]
    f.create_dataset("layer/3/weight", (2**24,), np.int64, chunks=(2**24,), compression="gzip",
                     maxshape=(None,))


def _deep(f):
    g = f
    for _ in range(6000):
        g = g.create_group("g")


def _soft_loop(f):
    f["layer/9"] = h5py.SoftLink("/layer/9")


def _uint64_bias(f):
    del f["layer/1/bias"]
    f["layer/1/bias"] = np.array([2**64 - 1, 1], np.uint64)


def _tamper(f):
    f["layer/1/weight"][0, 0, 0, 0] = 40


HDF5_CASES = {
    "external storage of the weights": (_external_weight, "external storage"),
    "external storage of a type string": (_external_type, "external storage"),
    "external link to another HDF5 file": (_external_link, "ExternalLink"),
    "virtual dataset mapping another file": (_virtual, "virtual dataset"),
    "virtual dataset with a missing source": (lambda f: _virtual(f, True), "virtual dataset"),
    "compressed datasets declaring 5.8 GB": (_bomb, "memory"),
    "one 128 MiB compressed chunk": (_chunk_bomb, "per HDF5 chunk"),
    "6000 nested groups": (_deep, "nested deeper than"),
    "soft-link loop": (_soft_loop, "SoftLink"),
    "bias stored as uint64 max": (_uint64_bias, "beyond the int64 range"),
}


@pytest.mark.parametrize("case", list(HDF5_CASES))
def test_hdf5_that_points_elsewhere_or_declares_too_much_is_refused(d, case):
    edit, words = HDF5_CASES[case]
    path = unsealed(d, case.replace(" ", "_"), edit)
    t0 = time.perf_counter()
    for args in (["inspect", path], ["emulate", path, "-i", d / "x.npy", "-s", "4", "-o", d / "y.npy"]):
        err = refused(cli(args), 3, words)
        assert SECRET not in err and "root:x" not in err
    assert time.perf_counter() - t0 < 10
    assert not (d / "y.npy").exists()


def test_file_claiming_to_be_ours_without_its_checksum_is_refused(d):
    # stripped of seal and checksum, then tampered, but still carrying loihi_conv_version
    path = unsealed(d, "stripped", _tamper, keep_checksum=True)
    with h5py.File(path, "r+") as f:
        del f.attrs[schema.CHECKSUM_ATTR]
    refused(cli(["inspect", path]), 3, "claims to be written by loihi-conv", "no 'checksum'")
    # an unsealed copy that keeps its checksum (h5repack) still reads; tampering it does not
    refused(cli(["inspect", unsealed(d, "tampered", _tamper, keep_checksum=True)]), 3,
            "checksum mismatch")
    assert cli(["inspect", unsealed(d, "repacked", lambda f: None, keep_checksum=True)]).exit_code == 0


def test_uint64_inputs_beyond_int64_are_refused_not_wrapped(d):
    np.save(d / "x_u64.npy", np.full((8, 8, 1), 2**63 + 5, np.uint64))
    refused(cli(["emulate", d / "good.net", "-i", d / "x_u64.npy", "-s", "4", "-o", d / "y.npy"]), 2,
            "beyond the int64 range")
    assert not (d / "y.npy").exists()


def test_huge_declared_state_is_refused_before_allocation(d):
    blocks = [qir.Block("in", (1, 300, 300)),
              qir.Block("c", (1000, 300, 300), [qir.ConvSyn("in", np.full((1000, 1, 1, 1), 2))],
                        neuron=qir.Cuba(vth=100))]  # 9e7 neurons from a 20 kB file
    netx_export.save(qir.QNetwork(blocks), d / "huge_state.net")
    np.save(d / "x300.npy", np.ones((300, 300, 1), np.int32))
    refused(cli(["emulate", d / "huge_state.net", "-i", d / "x300.npy", "-s", "4", "-o", d / "y.npy"]), 2,
            "90090000 neurons", "GiB of memory", "LOIHI_CONV_MAX_BYTES")


# ---- destinations -----------------------------------------------------------------------------
def _outputs(d: Path, dest: Path) -> dict[str, list]:
    """Every output flag of the quick commands, pointed at ``dest``."""
    return {"emulate --out": ["emulate", d / "good.net", "-i", d / "x.npy", "-s", "4", "-o", dest],
            "inspect --json": ["inspect", d / "good.net", "--json", dest],
            "inspect --recipe-out": ["inspect", d / "recipe.net", "--recipe-out", dest],
            "score --json": ["score", d / "good.net", "--samples", "4", "--json", dest]}


@pytest.fixture(scope="module")
def recipe_net(d) -> Path:
    from loihi_conv.convert import Recipe

    q = digits_net()
    q.meta.update(model="$(touch PWNED)`id`'", recipe=Recipe().to_dict(), target="cuba")
    return netx_export.save(q, d / "recipe.net")


@pytest.mark.parametrize("kind", ["character device", "FIFO", "directory"])
def test_devices_fifos_and_directories_are_never_replaced(d, recipe_net, tmp_path, kind):
    dest = {"character device": Path("/dev/null"), "FIFO": tmp_path / "fifo", "directory": tmp_path / "dir"}[kind]
    if kind == "FIFO":
        os.mkfifo(dest)
    if kind == "directory":
        dest.mkdir()
    before = os.stat(dest)
    for flag, args in _outputs(d, dest).items():
        res = cli(args)
        assert res.exit_code == 2 and "Traceback" not in res.stderr, (flag, res.stderr)
        assert kind in res.stderr or "is a directory" in res.stderr, (flag, res.stderr)
        after = os.stat(dest)
        assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev), flag
    assert sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if kind == "character device" else [dest.name])


@pytest.fixture
def tiny_fs(tmp_path):
    """A 200 kB tmpfs (needs root and mount rights; the test is skipped without them)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); ENOSPC untested")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_leaves_no_partial_or_temp_file(d, recipe_net, tiny_fs):
    outs = {**_outputs(d, tiny_fs / "out"),
            "convert --out": ["convert", "--model", f"{d}/models.py:Good", "--dataset", "digits", "--target",
                              "if-soft", "-T", "4", "--no-search", "--calib-size", "64", "-o", tiny_fs / "out"]}
    for room in (0, 8192):  # nothing left; a few kB (the write starts, then fails)
        (tiny_fs / "fill").unlink(missing_ok=True)
        free = os.statvfs(tiny_fs).f_bavail * os.statvfs(tiny_fs).f_frsize
        (tiny_fs / "fill").write_bytes(b"\0" * (free - room))
        for flag, args in outs.items():
            if room and flag != "convert --out":
                args = ["emulate", d / "good.net", "-i", d / "x.npy", "-s", "4000", "-o", tiny_fs / "out"]
            refused(cli(args), 2, "cannot write", "nothing was written")
            assert sorted(p.name for p in tiny_fs.iterdir()) == ["fill"], (flag, room)


def test_read_only_destination_is_refused_before_the_work(d, recipe_net, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(ro)], capture_output=True)
    if proc.returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        for flag, args in _outputs(d, ro / "out").items():
            refused(cli(args), 2, "not writable")
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_sigterm_while_convert_writes_removes_the_temp_file(d, tmp_path, monkeypatch):
    import signal

    from netx_export import writer

    real = writer._read_back

    def read_back_then_sigterm(qnet, tmp):  # the temp file is complete on disk now
        real(qnet, tmp)
        assert Path(tmp).exists()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
        raise AssertionError("SIGTERM did not interrupt the write")

    monkeypatch.setattr(writer, "_read_back", read_back_then_sigterm)
    res = cli(["convert", "--model", f"{d}/models.py:Good", "--dataset", "digits", "--target", "if-soft",
               "-T", "4", "--no-search", "--calib-size", "64", "-o", tmp_path / "c.net"])
    assert res.exit_code == 143 and res.stderr.strip().endswith("terminated"), res.stderr
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is not None  # the CLI restored the previous handler


# ---- Ctrl-C during a Lava run -----------------------------------------------------------------
def _session(sid: int) -> list[str]:
    """Live (non-zombie) processes of session ``sid``."""
    out = subprocess.run(["ps", "-eo", "pid,sid,stat,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()[1:]
            if line.split()[1] == str(sid) and not line.split()[2].startswith("Z")]


def _mapped_shm(sid: int) -> set[Path]:
    """/dev/shm entries (Lava's shared-memory segments, the runner's I/O directory) that the
    processes of session ``sid`` have mapped: ours, not those of other runs on the machine."""
    found = set()
    for line in _session(sid):
        try:
            maps = Path(f"/proc/{line.split()[0]}/maps").read_text()
        except OSError:
            continue
        for m in maps.splitlines():
            path = m.split(maxsplit=5)[-1]
            if path.startswith("/dev/shm/"):
                found.add(Path("/dev/shm") / Path(path).relative_to("/dev/shm").parts[0])
    return found


@pytest.mark.lava
@pytest.mark.parametrize("how", ["SIGINT to the process group", "SIGTERM to the main process"])
def test_signal_during_run_lava_leaves_no_process_segment_or_output(d, how):
    import signal

    out = d / f"run_{how[:6]}.json"
    p = subprocess.Popen([sys.executable, "-m", "loihi_conv.app.cli", "run-lava", str(d / "good.net"),
                          "--samples", "300", "-T", "64", "--json", str(out)],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 60
        while len(_session(p.pid)) < 4 and time.time() < deadline:  # Lava's workers are up
            time.sleep(0.2)
        assert len(_session(p.pid)) >= 4, "Lava did not start"
        time.sleep(1)
        shm = _mapped_shm(p.pid)
        assert any(s.name.startswith("psm_") for s in shm) and any(s.is_dir() for s in shm), shm
        t0 = time.time()
        if how.startswith("SIGINT"):
            os.killpg(p.pid, signal.SIGINT)
        else:
            os.kill(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        took = time.time() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == (130 if how.startswith("SIGINT") else 143), err[-500:]
    assert took < 10 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("interrupted" if how.startswith("SIGINT") else "terminated")
    time.sleep(0.5)
    assert _session(p.pid) == []
    assert [s for s in shm if s.exists()] == []
    assert not out.exists()


# ---- what the tool prints and checks ------------------------------------------------------------
def test_recipe_out_prints_a_shell_quoted_rebuild_command(d, recipe_net, tmp_path):
    res = cli(["inspect", recipe_net, "--recipe-out", tmp_path / "r.toml"])
    assert res.exit_code == 0, res.stderr
    cmd = res.output.strip().splitlines()[-1].strip()
    argv = shlex.split(cmd)
    assert argv[argv.index("--model") + 1] == "$(touch PWNED)`id`'"
    # a shell expands nothing in it
    echoed = subprocess.run(["sh", "-c", "printf '%s\\n' " + cmd.split(" ", 2)[2]], capture_output=True,
                            text=True, cwd=tmp_path).stdout.splitlines()
    assert echoed[echoed.index("--model") + 1] == "$(touch PWNED)`id`'"
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("toml,words", [
    ("timesteps = 16\n", ["timesteps=16 must be a list", "timesteps = [16]"]),
    ("neuron_params = {s_max = -3}\n", ["neuron_params s_max=-3 must be >= 0"]),
    ('neuron_model = "if-multibit"\nneuron_params = {s_max = 3}\n', ["neuron_params for 'if-multibit'",
                                                                     "power of two"]),
    ("s_max = -3\n", ["unknown option(s) s_max"]),
])
def test_bad_recipe_values_name_the_key_and_the_expected_type(d, tmp_path, toml, words):
    (tmp_path / "r.toml").write_text(toml)
    refused(cli(["evaluate", "--model", f"{d}/models.py:Good", "--dataset", "digits", "--recipe",
                 tmp_path / "r.toml", "-T", "4"]), 2, "recipe: ", *words)


def test_scoring_on_another_dataset_warns(d, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "other.npz", x_train=rng.random((20, 1, 8, 8), np.float32), y_train=rng.integers(0, 10, 20),
             x_test=rng.random((20, 1, 8, 8), np.float32), y_test=rng.integers(0, 10, 20))
    res = cli(["score", d / "good.net", "--dataset", tmp_path / "other.npz", "--samples", "8"])
    assert res.exit_code == 0, res.stderr
    assert "warning: " in res.stderr and "was converted for digits, not" in res.stderr
    res = cli(["score", d / "good.net", "--samples", "8"])
    assert res.exit_code == 0 and "warning" not in res.stderr


def test_lava_dl_import_prints_nothing():
    code = "from netx_export import lava_env; lava_env.import_netx(); print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and proc.stdout == "ok\n" and proc.stderr == "", proc.stderr
