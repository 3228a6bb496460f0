"""The installed distribution: console scripts that resolve and help, no generic top-level names,
and a wheel that installs with `[jax]` and runs where TensorFlow is not installed."""

import importlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile

import numpy as np
import tomllib
from conftest import REPO, console_script


def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_console_scripts_point_at_the_trainers_main_functions():
    scripts = pyproject()["project"]["scripts"]
    assert set(scripts) >= {"keras-lfr-train", "keras-lfr-evaluate", "keras-lfr-reproduce"}
    for target in scripts.values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_the_trainers_install_under_keras_lfr_and_nothing_else_at_the_top():
    setuptools = pyproject()["tool"]["setuptools"]
    assert all(name.split(".")[0] == "keras_lfr" for name in setuptools["packages"])
    assert setuptools["package-dir"] == {"keras_lfr.trainers": "trainers"}
    # The installed package and the checkout's are the same files.
    from keras_lfr.trainers import train as installed

    from trainers import train as checkout

    assert installed.__file__ == checkout.__file__


# Flags each program defines itself, which its --help must list.
OWN_FLAGS = {
    "keras-lfr-train": ("--method", "--recipe", "--model_dir", "--fresh"),
    "keras-lfr-evaluate": ("--model", "--zoo", "--validation_examples", "--output"),
    "keras-lfr-reproduce": ("--budget", "--print_commands"),
    "keras-lfr-sweep": ("--values", "--relative"),
    "keras-lfr-release": ("--name", "--leaderboard"),
    "keras-lfr-seeds": ("--seeds", "--results_dir"),
    "keras-lfr-compare": (),  # no flags: its arguments are evaluation files
}


def test_every_console_script_prints_its_own_help_and_exits_0(tmp_path):
    """`keras-lfr-* --help` through the installed entry point, as `python -m trainers.*` does."""
    scripts = pyproject()["project"]["scripts"]
    assert set(scripts) == set(OWN_FLAGS)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    processes = {  # all at once: each spends its seconds importing TensorFlow
        name: subprocess.Popen(
            [console_script(name), "--help"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in scripts
    }
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, f"{name}: {stderr[-3000:]}"
        module = importlib.import_module(scripts[name].partition(":")[0])
        assert stdout.startswith(module.__doc__.strip().splitlines()[0]), (name, stdout[:300])
        listed = set(re.findall(r"^  (--(?:\[no\])?\w+)", stdout, re.MULTILINE))
        listed |= {flag.replace("[no]", "") for flag in listed}
        assert set(OWN_FLAGS[name]) <= listed, (name, sorted(listed))
        assert "--logtostderr" not in listed, name  # absl's own flags: only with --helpfull
        # No TensorFlow start-up log when the user set no TF_CPP_MIN_LOG_LEVEL.
        assert not re.search(r"^[IWEF]\d{4} ", stderr, re.MULTILINE), (name, stderr[-3000:])


# What the TensorFlow-free environment leaves out of this one's site-packages:
# TensorFlow's extra, and keras_lfr itself (installed there from the wheel).
NOT_INSTALLED = ("tensorflow", "tensorboard", "keras_lfr", "__editable__")

# Run in the TensorFlow-free environment: a zoo model loads, trains two steps
# on numpy arrays and is attacked on a few images; tfds and SavedModel export
# say which extra they need.
WITHOUT_TENSORFLOW = textwrap.dedent(
    """
    import functools, importlib.util, sys
    import keras, numpy as np
    import keras_lfr
    from keras_lfr import attacks, evaluation, zoo

    assert importlib.util.find_spec("tensorflow") is None
    assert keras.backend.backend() == "jax" and keras_lfr.__file__.startswith(sys.prefix)
    name = "mnist/linf-0.3/pgd-at-fast"
    assert name in zoo.available("mnist") and zoo.info(name)["dataset"] == "mnist"
    data = keras_lfr.data.load("mnist", "test", batch_size=16, shuffle=False, data_npz="data.npz")
    x, y = next(iter(data))
    model = keras_lfr.wrap(zoo.load(name), method="pgd_at", steps=1)
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1]), history.history
    pgd = functools.partial(attacks.pgd, epsilon=0.3, step_size=0.1, steps=2)
    results = evaluation.robust_accuracy(model, [(x[:4], y[:4])], {"pgd": pgd}, verbose=0)
    assert results["examples"] == 4, results
    for load, needs in ((lambda: keras_lfr.data.load("mnist"), "tensorflow_datasets"),
                        (lambda: keras_lfr.export(model, "saved"), "tensorflow")):
        try:
            load()
        except ImportError as error:
            assert f"needs {needs}" in str(error) and "keras_lfr[tensorflow]" in str(error), error
        else:
            raise AssertionError(f"no ImportError without {needs}")
    assert not {"tensorflow", "tensorflow_datasets"} & set(sys.modules)
    print("ok")
    """
)


def without_tensorflow(root):
    """A virtual environment with this one's packages except TensorFlow's extra and keras_lfr.

    Its site-packages has a `.pth` naming a folder of links to this
    environment's site-packages entries, less `NOT_INSTALLED`: keras, JAX,
    numpy and absl are there, and `import tensorflow` fails as where it is
    not installed. pip sees the same, so it installs offline (`--no-index`).
    """
    shown = root / "site-packages"
    shown.mkdir()
    for folder in {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}:
        for entry in os.scandir(folder):
            if not entry.name.startswith(NOT_INSTALLED) and not entry.name.endswith(".pth"):
                (shown / entry.name).symlink_to(entry.path)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    pathlib.Path(site, "environment.pth").write_text(f"{shown}\n")
    return python


def test_the_wheel_installs_with_jax_and_runs_without_tensorflow(tmp_path):
    """`pip install keras_lfr[jax]` brings no TensorFlow, and the zoo, training, the attacks
    and the trainers run on the JAX backend where TensorFlow cannot be imported."""
    source = tmp_path / "source"  # built from a copy: nothing is written into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source)
    for name in ("keras_lfr", "trainers"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp_path, source],
        check=True,
    )
    (wheel,) = tmp_path.glob("keras_lfr-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = re.findall(r"^Requires-Dist: (.*)$", archive.read(metadata).decode(), re.M)
        shipped = [n for n in archive.namelist() if n.startswith("keras_lfr/zoo/models/")]
    needed = [r for r in requires if "extra ==" not in r or 'extra == "jax"' in r]
    assert not [r for r in needed if r.startswith("tensor")], needed
    assert {n.rsplit("/", 1)[1] for n in shipped} == {"record.json", "model.weights.h5"}

    python = without_tensorflow(tmp_path)
    bin_dir = python.parent
    install = [*pip, "--python", python, "install", "--no-index", f"{wheel}[jax]"]
    subprocess.run(install, check=True)
    work = tmp_path / "work"
    work.mkdir()
    rng = np.random.default_rng(0)
    np.savez(  # a dataset in keras.datasets' format
        work / "data.npz",
        **{
            f"{x}_{split}": rng.integers(0, 256 if x == "x" else 10, shape, dtype=np.uint8)
            for split, count in (("train", 64), ("test", 16))
            for x, shape in (("x", (count, 28, 28)), ("y", (count,)))
        },
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KERAS"))},
        "KERAS_BACKEND": "jax",
        "KERAS_LFR_CACHE_DIR": str(tmp_path / "cache"),
    }

    def run(*command):
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done.stdout

    library = subprocess.Popen(  # beside the trainers: the two take a core each
        [python, "-c", WITHOUT_TENSORFLOW],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        flags = "--method=pgd_at --steps=1 --epochs=1 --batch_size=32 --model_dir=run --verbose=0"
        trained = run(bin_dir / "keras-lfr-train", "--data_npz=data.npz", *flags.split())
        assert "Saved run/model.keras" in trained, trained  # 64 images: two steps
        flags = "--examples=8 --batch_size=8 --protocol=paper --attacks=fgsm --verbose=0"
        evaluated = run(
            bin_dir / "keras-lfr-evaluate",
            "--model=run/model.keras",
            "--data_npz=data.npz",
            *flags.split(),
        )
        assert re.search(
            r"^\| model\.keras \| [\d.]+ \| [\d.]+ \| [\d.]+ \| 8 \|$", evaluated, re.M
        )
        assert list(tmp_path.glob("cache/evaluations/model.keras-paper-*/chunk-000000-000008.json"))
    finally:
        stdout, stderr = library.communicate(timeout=300)
    assert library.returncode == 0 and stdout.strip() == "ok", stderr[-3000:]
