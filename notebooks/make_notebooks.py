"""Writes the notebooks in this folder from the Python source below.

The ``.ipynb`` files are generated, committed without outputs, and executed
headless by ``tests/test_notebooks.py``. Edit the cells here, then run

    python notebooks/make_notebooks.py

(``--check`` only reports whether the committed files are up to date).
"""

import argparse
import pathlib
import sys
import textwrap

import nbformat
from nbformat import v4

HERE = pathlib.Path(__file__).resolve().parent

# Colab-only install: a local checkout is already installed (pip install -e).
# PNM_OPTAX_PIP overrides what is installed, e.g. a git URL of a fork.
INSTALL = '''
import os, sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:  # Colab only; skipped everywhere else.
    import subprocess
    spec = os.environ.get("PNM_OPTAX_PIP", "pnm-optax[{extras}]")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec], check=True)
'''

# Shared setup: the FAST flag and the repository root on sys.path.
SETUP = '''
import os, pathlib, sys

# PNM_FAST=1 (set by the CI test) shrinks every budget to seconds on a CPU.
FAST = os.environ.get("PNM_FAST", "0") == "1"

# Run from a checkout (e.g. notebooks/): make the repository root importable.
for folder in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents]:
    if (folder / "pnm_optax" / "__init__.py").is_file():
        sys.path.insert(0, str(folder))
        break
'''


def md(text: str):
  return v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(*parts: str, tags=()):
  """A code cell from source parts, each dedented on its own."""
  source = '\n\n'.join(textwrap.dedent(p).strip() for p in parts)
  cell = v4.new_code_cell(source)
  if tags:
    cell.metadata['tags'] = list(tags)
  return cell


def notebook(cells, accelerator=None):
  nb = v4.new_notebook(cells=cells)
  for index, cell in enumerate(nb.cells):  # stable ids: no diff on rebuild
    cell['id'] = f'cell-{index:02d}'
  nb.metadata['kernelspec'] = {'name': 'python3', 'language': 'python',
                               'display_name': 'Python 3'}
  nb.metadata['language_info'] = {'name': 'python'}
  nb.metadata['colab'] = {'provenance': []}
  if accelerator:
    nb.metadata['accelerator'] = accelerator
  return nb


# --------------------------------------------------------------------------
# quickstart.ipynb

QUICKSTART = [
    md('''
    # PNM / AdaPNM quickstart

    Positive-Negative Momentum (Xie et al., ICML 2021) as Optax
    transformations. This notebook

    1. builds `pnm_optax.pnm` and `pnm_optax.adapnm` inside an `optax.chain`
       with a learning-rate schedule, gradient clipping and masked weight
       decay;
    2. trains a tiny Flax NNX MLP on scikit-learn's bundled 8x8 digits (no
       download) and plots the loss against SGD with momentum;
    3. explains `b0`, the knob that sets the gradient noise, and measures its
       effect.

    It runs on any Colab runtime (CPU is enough). `PNM_FAST=1` shrinks the
    budgets so the CI test runs it in seconds.
    '''),
    code(INSTALL.format(extras='flax,benchmarks')),
    code(SETUP, '''
    import flax
    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np
    import optax
    from flax import nnx

    import pnm_optax

    print(f"FAST={FAST}; jax {jax.__version__} ({jax.default_backend()}), "
          f"optax {optax.__version__}, flax {flax.__version__}, "
          f"pnm_optax {pnm_optax.__version__}")
    '''),
    md(r'''
    ## 1. PNM in an Optax chain

    `pnm_optax.pnm(learning_rate, b1, b0, weight_decay, ...)` is used like
    `optax.sgd` / `optax.adamw`; `learning_rate`, `b0` and `weight_decay`
    accept Optax schedules. Weight decay is decoupled by default (as the
    authors' code) and `mask` selects the decayed leaves. Both are ordinary
    `GradientTransformation`s, so they compose with the rest of Optax.

    Learning rates: PNM's buffers are averages (damped by $1-\beta_1^2$)
    rather than SGD's undamped momentum sum, and its step is divided by
    $\sqrt{(1+\beta_0)^2+\beta_0^2}$, so it takes a larger learning rate than
    SGD-M; like the authors' CIFAR-10 settings (see
    `benchmarks/generalization.py`), this notebook uses 1.0 for PNM and 0.1
    for SGD-M.
    '''),
    code('''
    STEPS = 200 if FAST else 2000
    BATCH = 64


    def decay_kernels(params):
        """Weight-decay mask: decay weight matrices, not biases."""
        return jax.tree.map(lambda p: p.ndim > 1, params)


    def schedule(peak):
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=peak, warmup_steps=STEPS // 10,
            decay_steps=STEPS)


    def make_pnm(b0=1.0):
        return optax.chain(
            optax.clip_by_global_norm(1.0),
            pnm_optax.pnm(schedule(1.0), b1=0.9, b0=b0, weight_decay=5e-4,
                          mask=decay_kernels),
        )


    OPTIMIZERS = {
        "PNM": make_pnm(),
        "AdaPNM": optax.chain(
            optax.clip_by_global_norm(1.0),
            pnm_optax.adapnm(schedule(1e-2), b0=1.0, weight_decay=1e-2,
                             mask=decay_kernels),
        ),
        "SGD-M (baseline)": optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.add_decayed_weights(5e-4, decay_kernels),
            optax.sgd(schedule(0.1), momentum=0.9),
        ),
    }
    '''),
    md('''
    ## 2. A tiny Flax NNX model

    `nnx.split` turns the model into a pytree of parameters that Optax updates
    directly; the whole training run is one jitted `lax.scan`.
    '''),
    code('''
    from sklearn.datasets import load_digits

    digits = load_digits()  # 1797 images shipped with scikit-learn
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    x_train, y_train = jnp.asarray(x[order[:1500]]), jnp.asarray(y[order[:1500]])
    x_test, y_test = jnp.asarray(x[order[1500:]]), jnp.asarray(y[order[1500:]])


    class MLP(nnx.Module):
        def __init__(self, din, dhidden, dout, *, rngs):
            self.hidden = nnx.Linear(din, dhidden, rngs=rngs)
            self.out = nnx.Linear(dhidden, dout, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.nn.relu(self.hidden(x)))


    def train(tx, steps=STEPS, seed=0):
        """Trains a fresh MLP with `tx`; returns (loss per step, test accuracy)."""
        graphdef, params = nnx.split(MLP(64, 128, 10, rngs=nnx.Rngs(seed)))

        def loss_fn(params, xb, yb):
            logits = nnx.merge(graphdef, params)(xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        def step(carry, key):
            params, opt_state = carry
            idx = jax.random.randint(key, (BATCH,), 0, x_train.shape[0])
            loss, grads = jax.value_and_grad(loss_fn)(params, x_train[idx], y_train[idx])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        @jax.jit
        def run(params):
            keys = jax.random.split(jax.random.key(seed), steps)
            (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), keys)
            accuracy = jnp.mean(nnx.merge(graphdef, params)(x_test).argmax(-1) == y_test)
            return losses, accuracy

        losses, accuracy = run(params)
        return np.asarray(losses), float(accuracy)


    runs = {name: train(tx) for name, tx in OPTIMIZERS.items()}
    for name, (losses, accuracy) in runs.items():
        print(f"{name:17s} loss {losses[:10].mean():.3f} -> {losses[-20:].mean():.3f}, "
              f"test accuracy {100 * accuracy:.1f}%")
        assert losses[-20:].mean() < 0.5 * losses[:10].mean(), name
    '''),
    code('''
    def smooth(values, width=10):
        return np.convolve(values, np.ones(width) / width, mode="valid")


    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, (losses, _) in runs.items():
        ax.plot(smooth(losses), label=name)
    ax.set(xlabel="step", ylabel="training loss (moving average)", yscale="log",
           title="Digits MLP")
    ax.legend()
    plt.show()
    '''),
    md(r'''
    ## 3. `b0`: the noise knob

    PNM keeps two momentum buffers: odd steps update one, even steps the
    other, each an EMA with factor $\beta_1^2$ of its own gradients. The step
    combines them as

    $$u_t = \frac{(1+\beta_0)\, m_t - \beta_0\, m_{t-1}}{\sqrt{(1+\beta_0)^2 + \beta_0^2}}.$$

    The two buffers average disjoint sets of gradients, so their noises are
    independent. With gradients of mean $\mu$ and noise $\sigma$, the mean of
    $u_t$ is $\mu / \sqrt{(1+\beta_0)^2+\beta_0^2}$ while its noise keeps the
    standard deviation of one buffer, $\sigma\sqrt{(1-\beta_1^2)/(1+\beta_1^2)}$:
    relative to the mean step, the noise grows by
    $\sqrt{(1+\beta_0)^2+\beta_0^2}$ ($\sqrt 5 \approx 2.24$ at the default
    `b0=1`). `b0=0` is plain EMA momentum. The paper's claim is that this
    extra noise leads to flatter minima and better generalization; the learning
    rate still sets the overall step size.

    Below, `scale_by_pnm` is fed synthetic gradients $\mu + \sigma\,\xi_t$
    and the statistics of its output are compared with these formulas.
    '''),
    code('''
    B1, MU, SIGMA = 0.9, 1.0, 1.0
    B0_VALUES = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 4.0])


    def pn_norm(b0):
        return np.sqrt((1 + b0) ** 2 + b0 ** 2)


    @jax.jit
    @jax.vmap  # b0 may be a traced value: one compilation for every b0
    def update_statistics(b0, dim=1024 if FAST else 8192, steps=400, burn_in=100):
        """Mean and std of scale_by_pnm's output for gradients MU + SIGMA * noise."""
        tx = pnm_optax.scale_by_pnm(b1=B1, b0=b0)

        def step(state, key):
            grad = MU + SIGMA * jax.random.normal(key, (dim,))
            update, state = tx.update(grad, state)
            return state, update

        keys = jax.random.split(jax.random.key(1), steps)
        _, updates = jax.lax.scan(step, tx.init(jnp.zeros(dim)), keys)
        return updates[burn_in:].mean(), updates[burn_in:].std()


    measured = np.stack(update_statistics(jnp.asarray(B0_VALUES, jnp.float32)), axis=1)
    measured = measured.astype(np.float64)
    mean_theory = MU / pn_norm(B0_VALUES)
    std_theory = SIGMA * np.sqrt((1 - B1**2) / (1 + B1**2)) * np.ones_like(B0_VALUES)
    noise_ratio = measured[:, 1] / measured[:, 0]
    noise_growth = noise_ratio / noise_ratio[0]  # relative to b0 = 0

    for b0, (m, s), g in zip(B0_VALUES, measured, noise_growth):
        print(f"b0={b0:4.2f}: mean {m:.4f} (theory {MU / pn_norm(b0):.4f}), "
              f"std {s:.4f} (theory {std_theory[0]:.4f}), "
              f"noise/mean x{g:.3f} (theory x{pn_norm(b0) / pn_norm(0):.3f})")
    np.testing.assert_allclose(measured[:, 0], mean_theory, rtol=0.03)
    np.testing.assert_allclose(measured[:, 1], std_theory, rtol=0.03)
    np.testing.assert_allclose(noise_growth, pn_norm(B0_VALUES), rtol=0.05)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(B0_VALUES, measured[:, 0], "o", label="mean (measured)")
    left.plot(B0_VALUES, mean_theory, "-", label=r"$\\mu/\\sqrt{(1+b_0)^2+b_0^2}$")
    left.plot(B0_VALUES, measured[:, 1], "s", label="std (measured)")
    left.plot(B0_VALUES, std_theory, "--", label="std of one buffer")
    left.set(xlabel="b0", ylabel="PNM update", title="Mean step and noise")
    left.legend(fontsize=8)
    right.plot(B0_VALUES, noise_growth, "o", label="measured")
    right.plot(B0_VALUES, pn_norm(B0_VALUES), "-", label=r"$\\sqrt{(1+b_0)^2+b_0^2}$")
    right.set(xlabel="b0", ylabel="noise / mean, relative to b0=0",
              title="Relative noise grows with b0")
    right.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    '''),
    md('''
    The same knob in training: the MLP above with PNM at `b0` = 0 and 2 (the
    default `b0=1` is the PNM curve above), plus a schedule that anneals `b0`
    from 2 to 0 (any `optax` schedule works; the
    optimizer state keeps one structure). At a fixed learning rate a larger
    `b0` also shortens the mean step (left plot above), which slows the
    training loss; the paper's claim concerns test error on real tasks such
    as CIFAR-10 (see `cifar10_pnm_vs_sgd.ipynb`).
    '''),
    code('''
    b0_settings = {"b0=0 (EMA momentum)": 0.0, "b0=2": 2.0,
                   "b0: 2 -> 0 (schedule)": optax.linear_schedule(2.0, 0.0, STEPS)}
    b0_runs = {label: train(make_pnm(b0)) for label, b0 in b0_settings.items()}

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, (losses, accuracy) in b0_runs.items():
        ax.plot(smooth(losses), label=f"{label}: test acc {100 * accuracy:.1f}%")
        assert np.isfinite(losses).all(), label
    ax.set(xlabel="step", ylabel="training loss (moving average)", yscale="log",
           title="PNM on digits, varying b0")
    ax.legend(fontsize=8)
    plt.show()
    '''),
    md('''
    Summary of this run (the CI test reads this line back).
    '''),
    code('''
    import json

    summary = {
        "fast": FAST,
        "steps": STEPS,
        "loss": {name: [float(l[:10].mean()), float(l[-20:].mean())]
                 for name, (l, _) in runs.items()},
        "test_accuracy": {name: acc for name, (_, acc) in runs.items()},
        "b0": B0_VALUES.tolist(),
        "noise_growth": noise_growth.tolist(),
        "update_mean": measured[:, 0].tolist(),
        "update_std": measured[:, 1].tolist(),
        "b0_test_accuracy": {label: acc for label, (_, acc) in b0_runs.items()},
    }
    print("PNM_NOTEBOOK_SUMMARY", json.dumps(summary))
    ''', tags=['summary']),
]


# --------------------------------------------------------------------------
# cifar10_pnm_vs_sgd.ipynb

PAPER_RESNET18 = '{"pnm": 4.48, "adapnm": 4.94, "sgdm": 5.01, "adam": 6.53, "adamw": 5.08}'

CIFAR = [
    md('''
    # CIFAR-10: PNM and AdaPNM against SGD-M, Adam and AdamW

    The paper's CIFAR-10 comparison (Xie et al., ICML 2021, Table 2): ResNet-18,
    batch 128, 200 epochs, learning rate divided by 10 at epochs 80 and 160,
    weight decay 5e-4, the authors' per-optimizer hyperparameters, test error
    as mean and std over seeds. It drives the repository's benchmark,
    `benchmarks.generalization.main` (the same code as
    `python -m benchmarks.generalization --dataset cifar10`).

    **Runtime.** Use a GPU or TPU runtime (*Runtime -> Change runtime type*).
    The full budget is 5 optimizers x 3 seeds x 200 epochs of ResNet-18; lower
    `EPOCHS`, `SEEDS` or `OPTIMIZERS` below to fit a session (the learning-rate
    drops stay at 40% and 80% of the epochs).

    **FAST mode.** `PNM_FAST=1` switches to the offline default data
    (scikit-learn's bundled 8x8 digits with a small CNN) and a few steps per
    optimizer, so the CI test runs the whole notebook on a CPU in well under a
    minute. Its numbers say nothing about CIFAR-10.
    '''),
    code(INSTALL.format(extras='flax,benchmarks')),
    code(SETUP, '''
    import json
    import tempfile

    import jax

    from benchmarks import generalization

    print(f"FAST={FAST}; jax {jax.__version__}, devices: {jax.devices()}")
    '''),
    md('''
    ## Settings

    In Colab these are form fields. `DATA_DIR` is where CIFAR-10 lives (or
    will be downloaded to, on Colab); the benchmark itself never downloads.
    '''),
    code('''
    EPOCHS = 200  #@param {type:"integer"}
    SEEDS = 3  #@param {type:"integer"}
    OPTIMIZERS = "pnm,adapnm,sgdm,adam,adamw"  #@param {type:"string"}
    B0 = 1.0  #@param {type:"number"}
    DATA_DIR = os.environ.get("CIFAR10_DIR", "/content/data" if IN_COLAB else "data")
    OUT_DIR = "/content/results" if IN_COLAB else os.path.join("results", "cifar10_notebook")

    if FAST:  # offline digits data, one seed, two short epochs per optimizer
        OUT_DIR = tempfile.mkdtemp(prefix="pnm_notebook_")
        argv = ["--dataset", "digits", "--epochs", "2", "--seeds", "1",
                "--max-steps-per-epoch", "10", "--no-progress"]
    else:
        argv = ["--dataset", "cifar10", "--model", "resnet18", "--data-dir", DATA_DIR,
                "--epochs", str(EPOCHS), "--seeds", str(SEEDS), "--batch-size", "128"]
    argv += ["--optimizers", OPTIMIZERS, "--b0", str(B0), "--out", OUT_DIR]
    print("python -m benchmarks.generalization " + " ".join(argv))
    '''),
    md('''
    ## CIFAR-10 data (Colab only)

    Downloads the python version of CIFAR-10 (about 170 MB) into `DATA_DIR`
    once. Elsewhere, download and extract it yourself and set `CIFAR10_DIR`
    (see `benchmarks/data.py` for the accepted layouts). Skipped in FAST mode.
    '''),
    code('''
    CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

    if IN_COLAB and not FAST and not os.path.isdir(os.path.join(DATA_DIR, "cifar-10-batches-py")):
        import tarfile
        import urllib.request

        os.makedirs(DATA_DIR, exist_ok=True)
        archive, _ = urllib.request.urlretrieve(CIFAR10_URL, os.path.join(DATA_DIR, "cifar10.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(DATA_DIR, filter="data")
        os.remove(archive)
    '''),
    md('''
    ## Train every optimizer

    One run per (optimizer, seed); each seed fixes the initialisation and the
    data order, shared by all optimizers. The benchmark prints a table of the
    final test error and writes a JSON of all curves and a PNG under `OUT_DIR`.
    '''),
    code('''
    results = generalization.main(argv)
    '''),
    md('''
    ## Results

    Test error per optimizer (mean and std over seeds); on CIFAR-10 with
    ResNet-18 the paper's numbers (mean of 3 runs, 200 epochs) are shown beside
    it.
    '''),
    code('''
    import matplotlib.pyplot as plt
    import numpy as np
    from IPython.display import Image, display

    PAPER_RESNET18 = ''' + PAPER_RESNET18 + '''  # test error %, Table 2
    cfg, summary = results["config"], results["summary"]
    names = list(summary)
    mean = np.array([100 * summary[n]["test_error_mean"] for n in names])
    std = np.array([100 * summary[n]["test_error_std"] for n in names])
    is_paper_setting = cfg["dataset"] == "cifar10" and cfg["model"] == "resnet18"

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(names))
    ax.bar(x, mean, yerr=std, capsize=4, label=f"this run ({cfg['epochs']} epochs, {len(cfg['seeds'])} seeds)")
    if is_paper_setting:
        ax.plot(x, [PAPER_RESNET18[n] for n in names], "k_", markersize=25, mew=2,
                label="paper (200 epochs)")
    ax.set_xticks(x, [generalization.LABELS[n] for n in names])
    ax.set(ylabel="test error %", title=f"{cfg['dataset']} / {cfg['model']}")
    ax.legend(fontsize=8)
    plt.show()

    if results.get("png_path"):
        display(Image(results["png_path"]))
    '''),
    md('''
    Summary of this run (the CI test reads this line back and compares it
    with the JSON file the benchmark wrote).
    '''),
    code('''
    for name in names:
        losses = results["curves"][name]["train_loss_mean"]
        assert np.isfinite(losses).all() and 0 <= summary[name]["test_error_mean"] <= 1, name

    print("PNM_NOTEBOOK_SUMMARY", json.dumps({
        "fast": FAST,
        "dataset": cfg["dataset"],
        "model": cfg["model"],
        "epochs": cfg["epochs"],
        "seeds": cfg["seeds"],
        "json_path": results["json_path"],
        "png_path": results["png_path"],
        "test_error_mean": {n: summary[n]["test_error_mean"] for n in names},
        "train_loss_mean": {n: results["curves"][n]["train_loss_mean"] for n in names},
    }))
    ''', tags=['summary']),
]


NOTEBOOKS = {
    'quickstart.ipynb': lambda: notebook(QUICKSTART),
    'cifar10_pnm_vs_sgd.ipynb': lambda: notebook(CIFAR, accelerator='GPU'),
}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--check', action='store_true',
                      help='exit 1 if a committed notebook is out of date')
  args = parser.parse_args(argv)
  stale = []
  for name, build in NOTEBOOKS.items():
    path = HERE / name
    text = nbformat.writes(build()) + '\n'
    if args.check:
      if not path.is_file() or path.read_text() != text:
        stale.append(name)
    else:
      path.write_text(text)
      print(f'wrote {path}')
  if stale:
    print('out of date (run python notebooks/make_notebooks.py): '
          + ', '.join(stale))
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
