"""The GPU check: what only a GPU can show about tlbench's numbers, in one command.

    benchmarks/gpu_check.sh                 # on a machine with an NVIDIA GPU (< 8 min)
    benchmarks/gpu_check.sh --cpu-smoke     # every step on tiny settings on a CPU (the script's own test)

Steps, each timed, each reported even when another fails:

1. cuda-tests: the tests that need CUDA (`pytest tests -k "cuda or gpu"`), e.g. no
   host sync in evaluation or in a bf16/fp16 training step (sync debug mode
   "error"), the device identity and peak of this GPU.
2. precision: `--precision fp32` is true fp32 and `tf32` is not: the TF32 flags
   each sets, read back, and the fp32 matmul and convolution rates under each.
3. grid-224: `tlbench run` at 224 px, bf16 and fp16, channels-last, `--compile`,
   on ../shared/data/flowers12 (synthetic if absent): each record's warm-up time,
   per-epoch times (epoch 1 no slower than epoch 2: every shape was warmed up),
   throughput, MFU and its basis, peak memory with and without the resident data.
4. devices-executor: two workers sharing one GPU (`--executor devices --devices
   cuda:0,cuda:0`); reported as skipped when this tlbench has no such executor.
5. speed-suite: `benchmarks/` on the GPU (ratios against bare PyTorch and the
   tutorial loop, like with like).
6. sync-debug-eval: evaluation of a ResNet-18 at 224 px, bf16 channels-last,
   under `torch.cuda.set_sync_debug_mode("error")`, split on the GPU and on the host.
7. mfu-resnet50: the MFU of ResNet-50 training at 224 px, bf16, channels-last,
   against the dense bf16 peak of this GPU (`tlbench.timing.device_peak`).

Writes results/gpu-check-<device>.md and .json: the device (nvidia-smi), torch,
CUDA and cuDNN versions, the git sha, every step's figures. Exits 2 at once on
a machine without CUDA (unless --cpu-smoke), 1 when a step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FLOWERS12 = Path(os.environ.get("TLBENCH_FLOWERS12", REPO.parent / "shared" / "data" / "flowers12"))


class Check:
    """Settings of one check run: the real one on a GPU, or tiny ones on a CPU (`--cpu-smoke`)."""

    def __init__(self, args: argparse.Namespace):
        self.smoke = args.cpu_smoke
        self.device = "cpu" if self.smoke else args.device
        self.work = Path(tempfile.mkdtemp(prefix="tlbench-gpu-check-"))
        self.out = (
            Path(args.out) if args.out else (self.work / "out" if self.smoke else REPO / "results")
        )
        self.skip = set(args.skip)
        self.steps: list[dict[str, Any]] = []
        self.mfu_batch = args.mfu_batch

    def python(
        self, *argv: str, timeout: float, env: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """Run `python argv...` in the repository; (exit status, combined output)."""
        try:
            done = subprocess.run(
                [sys.executable, *argv], cwd=REPO, capture_output=True, text=True,
                timeout=timeout, env={**os.environ, **(env or {})},
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            out = (
                (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            )
            return 124, out + f"\n[timed out after {timeout:.0f} s]"
        return done.returncode, done.stdout + done.stderr

    def step(self, name: str, run: Callable[[Check], dict[str, Any]]) -> None:
        if name in self.skip:
            self.steps.append(
                {"step": name, "status": "skipped", "reason": "--skip", "seconds": 0.0}
            )
            print(f"[{name}] skipped (--skip)", flush=True)
            return
        print(f"[{name}] ...", flush=True)
        t0 = time.perf_counter()
        try:
            result = run(self)
            result.setdefault("status", "ok")
        except Exception as exc:  # a failed step is reported; the others still run
            result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()[-3000:]}  # fmt: skip
        result = {"step": name, **result, "seconds": round(time.perf_counter() - t0, 1)}
        self.steps.append(result)
        summary = "; ".join(str(result[k]) for k in ("summary", "reason") if result.get(k))
        print(f"[{name}] {result['status']} in {result['seconds']} s  {summary}", flush=True)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _section(text: str, title: str) -> list[str]:
    """The lines of a pytest terminal-summary section (between its header and the next rule)."""
    lines = text.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if title in line and line.startswith("=")), None
    )
    if start is None:
        return []
    body = []
    for line in lines[start + 1 :]:
        if line.startswith("="):
            break
        body.append(line)
    return body


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- steps


def cuda_tests(c: Check) -> dict[str, Any]:
    argv = ["-m", "pytest", "tests", "-q", "-rs", "-p", "no:cacheprovider", "-k", "cuda or gpu"]
    code, out = c.python(*argv, timeout=240)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    needs_cuda = out.count("needs CUDA")
    result = {"exit": code, "summary": last, "output": _tail(out)}
    if code not in (0, 5):
        result["status"] = "failed"
    elif not c.smoke and needs_cuda:
        result["status"] = "failed"
        result["reason"] = f"{needs_cuda} CUDA test(s) skipped on a machine with CUDA"
    return result


def precision(c: Check) -> dict[str, Any]:
    import torch

    from tlbench.engine import Execution
    from tlbench.timing import backend_state

    device = torch.device(c.device)
    out: dict[str, Any] = {}
    for name in ("fp32", "tf32", "bf16"):
        if name == "tf32" and device.type != "cuda":
            continue
        ex = Execution(device, name) if device.type == "cuda" else Execution.resolve(device, name)
        ex.apply_backends()
        facts = backend_state()
        n, ch = (128, 16) if c.smoke else (8192, 256)
        a = torch.randn(n, n, device=device)
        conv = torch.nn.Conv2d(ch, ch, 3, padding=1).to(device)
        x = torch.randn(2 if c.smoke else 64, ch, 28, 28, device=device)
        with torch.no_grad(), ex.autocast:
            for _ in range(2):  # warm-up: cuBLAS handles, cuDNN autotuning
                a @ a, conv(x)
            _sync(device)
            t0 = time.perf_counter()
            reps = 3 if c.smoke else 20
            for _ in range(reps):
                a @ a
            _sync(device)
            matmul = reps * 2 * n**3 / (time.perf_counter() - t0) / 1e12
            t0 = time.perf_counter()
            for _ in range(reps):
                conv(x)
            _sync(device)
            conv_flops = 2 * x.shape[0] * 28 * 28 * ch * ch * 9
            conv_tflops = reps * conv_flops / (time.perf_counter() - t0) / 1e12
        out[name] = {
            **facts,
            "matmul_tflops": float(f"{matmul:.3g}"),
            "conv_tflops": float(f"{conv_tflops:.3g}"),
        }
    summary = ", ".join(
        f"{k}: matmul {v['matmul_tflops']} TFLOP/s (tf32 {v['tf32_matmul']}), conv {v['conv_tflops']} "
        f"(tf32 {v['tf32_cudnn']})"
        for k, v in out.items()
    )
    result: dict[str, Any] = {"settings": out, "summary": summary}
    if device.type == "cuda" and (out["fp32"]["tf32_matmul"] or out["fp32"]["tf32_cudnn"]):
        result["status"] = "failed"
        result["reason"] = "--precision fp32 left TF32 on"
    return result


def _sync(device: Any) -> None:
    from tlbench.timing import synchronize

    synchronize(device)


def _dataset(c: Check) -> str:
    if c.smoke:
        return f"imagefolder:{_tiny_imagefolder(c.work / 'tiny')}"
    if (FLOWERS12 / "train").is_dir():
        return f"imagefolder:{FLOWERS12}"
    return "synthetic"


def _tiny_imagefolder(root: Path) -> Path:
    """2 classes (reddish, bluish) x 12 train / 4 test PNGs of 40 px: a grid in seconds on a CPU."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for label, channel in (("red", 0), ("blue", 2)):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 120, (40, 40, 3), dtype=np.uint8)
                pixels[..., channel] += 120
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def grid(c: Check) -> dict[str, Any]:
    out_file = c.work / "grid.jsonl"
    runs = []
    failed = []
    # On a CPU bf16 and fp16 are emulated and slow: the smoke run checks the path in fp32.
    for prec in ("fp32",) if c.smoke else ("bf16", "fp16"):
        argv = ["-m", "tlbench.cli", "run", "--datasets", _dataset(c), "--seeds", "0",
                "--strategies", "finetune,linear", "--device", c.device, "--precision", prec,
                "--channels-last", "--out", str(out_file), "--cache-dir", str(c.work / "cache"),
                "--force", "--plain"]  # fmt: skip
        if c.smoke:
            # The offline pretrained backbone: `finetune` and `linear` need weights.
            argv += ["--backbones", "efficientnet_lite0", "--image-size", "32", "--epochs", "2"]
        else:
            argv += ["--backbones", "efficientnet_lite0", "--image-size", "224",
                     "--epochs", "2", "--batch-size", "64", "--compile"]  # fmt: skip
        code, text = c.python(*argv, timeout=300 if c.smoke else 240)
        if code != 0:
            failed.append(f"{prec}: exit {code}: {_tail(text, 8)}")
    for r in _records(out_file):
        cfg, cost = r.get("config", {}), r.get("cost") or {}
        curve = (r.get("accuracy") or {}).get("curve") or []
        epochs = [e.get("epoch_seconds") for e in curve]
        runs.append({
            "run": f"{cfg.get('backbone')} / {cfg.get('strategy')} / {cfg.get('precision')}",
            "status": r.get("status"), "reason": r.get("reason"),
            "accuracy": (r.get("accuracy") or {}).get("final"),
            "train_images_per_s": cost.get("train_images_per_s"),
            "warmup_seconds": cost.get("warmup_seconds"),
            "warmup_batches": cost.get("warmup_batches"),
            "upload_seconds": cost.get("upload_seconds"),
            "epoch_seconds": epochs,
            "epoch1_over_epoch2": epochs[0] / epochs[1] if len(epochs) > 1 and epochs[1] else None,
            "mfu": cost.get("mfu"), "mfu_basis": cost.get("mfu_basis"),
            "peak_memory_bytes": cost.get("peak_memory_bytes"),
            "model_peak_memory_bytes": cost.get("model_peak_memory_bytes"),
            "resident_data_bytes": cost.get("resident_data_bytes"),
            "tf32": cfg.get("tf32", cost.get("tf32")), "compile": cfg.get("compile"),
        })  # fmt: skip
    bad = [r["run"] for r in runs if r["status"] != "ok"]
    slow_first = [
        r["run"] for r in runs if (r["epoch1_over_epoch2"] or 0) > 1.5 and "finetune" in r["run"]
    ]
    result: dict[str, Any] = {"runs": runs, "summary": f"{len(runs)} runs, {len(bad)} not ok"}
    if failed or bad or not runs:
        result["status"] = "failed"
        result["reason"] = "; ".join(failed + [f"{b} not ok" for b in bad]) or "no records"
    elif slow_first and not c.smoke:
        result["status"] = "warn"
        result["reason"] = (
            f"epoch 1 over 1.5x slower than epoch 2 (a one-off cost inside the clock): {slow_first}"
        )
    return result


def devices_executor(c: Check) -> dict[str, Any]:
    code, text = c.python("-m", "tlbench.cli", "run", "--help", timeout=60)
    if "--executor" not in text or "devices" not in text:
        return {"status": "skipped", "reason": "this tlbench has no `--executor devices` yet"}
    devices = "cpu,cpu" if c.smoke else f"{c.device},{c.device}"
    out_file = c.work / "devices.jsonl"
    code, text = c.python(
        "-m", "tlbench.cli", "run", "--executor", "devices", "--devices", devices,
        "--datasets", "synthetic", "--backbones", "small_cnn,efficientnet_lite0",
        "--strategies", "scratch,linear", "--seeds", "0", "--epochs", "1", "--image-size", "32",
        "--out", str(out_file), "--cache-dir", str(c.work / "cache"), "--force", "--plain",
        timeout=300,
    )  # fmt: skip
    records = _records(out_file)
    # small_cnn has no pretrained weights: its `linear` run is recorded as skipped.
    ok = [r for r in records if r.get("status") == "ok"]
    skipped = [r for r in records if r.get("status") == "skipped"]
    summary = f"--devices {devices}: {len(ok)} runs ok, {len(skipped)} skipped (of 4)"
    result: dict[str, Any] = {"exit": code, "summary": summary,
                              "output": _tail(text, 12)}  # fmt: skip
    if code != 0 or len(ok) != 3 or len(skipped) != 1:
        result["status"] = "failed"
        result["reason"] = result["summary"]
    return result


def speed_suite(c: Check) -> dict[str, Any]:
    env = {"TLBENCH_BENCH_DEVICE": c.device}
    json_path = c.work / "benchmarks.json"
    argv = [
        "-m",
        "pytest",
        "benchmarks",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={json_path}",
    ]
    if c.smoke:  # the step benchmark on the tutorials' CNN, once: the suite's shortest
        argv += ["-k", "small_cnn", "--benchmark-disable"]
    code, text = c.python(*argv, timeout=300 if c.smoke else 420, env=env)
    ratios = _section(text, "tlbench speed ratios")
    result: dict[str, Any] = {"exit": code, "ratios": ratios, "output": _tail(text, 30),
                              "summary": text.strip().splitlines()[-1] if text.strip() else ""}  # fmt: skip
    if code != 0:
        result["status"] = "failed"
    return result


def sync_debug_eval(c: Check) -> dict[str, Any]:
    import torch
    import torchvision

    from tlbench import engine
    from tlbench.engine import Execution

    if c.smoke:
        return {"status": "skipped", "reason": "needs CUDA (torch.cuda.set_sync_debug_mode)"}
    device = torch.device(c.device)
    ex = Execution(device, "bf16", channels_last=True)
    model = ex.place(torchvision.models.resnet18(num_classes=10)).eval()
    images = torch.randint(0, 256, (160, 3, 256, 256), dtype=torch.uint8)
    labels = torch.arange(160) % 10
    checked = []
    for where, split in (("gpu", images.to(device)), ("host", images)):
        logits_of = engine.image_logits(model, split, 224, ex)
        engine.eval_counts(logits_of, labels, 10, 64, device)  # warm-up
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            confusion, _ = engine.eval_counts(logits_of, labels, 10, 64, device)  # 3 batches
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert int(confusion.sum()) == 160
        checked.append(where)
    return {"summary": f"no synchronising op in evaluation (split on: {', '.join(checked)})"}


def mfu_resnet50(c: Check) -> dict[str, Any]:
    import torch
    import torchvision
    from torch import nn

    from tlbench.api import Hyperparameters
    from tlbench.engine import Execution, TrainStep, make_optimizer
    from tlbench.timing import device_identity, forward_flops, mfu

    device = torch.device(c.device)
    size, batch = (64, 4) if c.smoke else (224, c.mfu_batch)
    ex = Execution(device, "fp32" if c.smoke else "bf16", channels_last=True)
    ex.apply_backends()
    torch.manual_seed(0)
    model = ex.place(torchvision.models.resnet50())
    optimizer = make_optimizer([{"params": list(model.parameters())}], Hyperparameters(), device)
    step = TrainStep(model, optimizer, nn.CrossEntropyLoss(), ex)
    x = ex.to_input(torch.rand(batch, 3, size, size, device=device))
    y = torch.randint(0, 1000, (batch,), device=device)
    for _ in range(2 if c.smoke else 10):
        step(x, y)
    _sync(device)
    steps = 2 if c.smoke else 30
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    _sync(device)
    images_per_s = steps * batch / (time.perf_counter() - t0)
    flops = forward_flops(model, size)
    figures = mfu(flops, images_per_s, device_identity(device), ex.precision)
    value = figures["mfu"]
    shown = f"{100 * value:.1f}%" if value is not None else "none"
    return {
        "image_size": size, "batch_size": batch, "precision": ex.precision,
        "memory_format": "channels_last", "images_per_s": images_per_s,
        "forward_flops_per_image": flops, **figures,
        "summary": f"ResNet-50 {size} px {ex.precision} channels-last, batch {batch}: "
                   f"{images_per_s:.3g} img/s, MFU {shown} ({figures['mfu_basis']})",
    }  # fmt: skip


STEPS: list[tuple[str, Callable[[Check], dict[str, Any]]]] = [
    ("cuda-tests", cuda_tests),
    ("precision", precision),
    ("grid-224", grid),
    ("devices-executor", devices_executor),
    ("speed-suite", speed_suite),
    ("sync-debug-eval", sync_debug_eval),
    ("mfu-resnet50", mfu_resnet50),
]


# --------------------------------------------------------------------------- report


def _provenance(c: Check) -> dict[str, Any]:
    import torch

    from tlbench.timing import device_identity, git_sha

    smi = shutil.which("nvidia-smi")
    smi_text = ""
    if smi:
        try:
            smi_text = subprocess.run([smi], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            smi_text = f"nvidia-smi failed: {exc}"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    return {
        "device_identity": device_identity(torch.device(c.device)),
        "nvidia_smi": smi_text or "(no nvidia-smi)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "git_sha": git_sha(),
        "git_dirty": bool(dirty),
        "cpu_smoke": c.smoke,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def write_report(c: Check, provenance: dict[str, Any]) -> Path:
    slug = provenance["device_identity"]["slug"]
    name = f"gpu-check-{'cpu-smoke-' if c.smoke else ''}{slug}"
    c.out.mkdir(parents=True, exist_ok=True)
    data = {"provenance": provenance, "steps": c.steps}
    (c.out / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    ident = provenance["device_identity"]
    lines = [
        f"# GPU check: {ident['name']}" + (" (CPU smoke run)" if c.smoke else ""),
        "",
        f"- Command: `{provenance['command']}` at {provenance['time']}",
        f"- Device: {ident['key']} (compute capability {ident['compute_capability']}, "
        f"MIG {ident['mig']})",
        f"- torch {provenance['torch']}, CUDA {provenance['cuda']}, cuDNN {provenance['cudnn']}, "
        f"Python {provenance['python']}",
        f"- tlbench git sha {provenance['git_sha']}" + (" (uncommitted changes)" if provenance["git_dirty"] else ""),
        "",
        "| step | status | seconds | result |",
        "|---|---|---|---|",
    ]  # fmt: skip
    for s in c.steps:
        text = "; ".join(str(s[k]) for k in ("summary", "reason") if s.get(k))
        text = text.replace("|", "/").replace("\n", " ")
        lines.append(f"| {s['step']} | {s['status']} | {s['seconds']} | {text} |")
    for s in c.steps:
        if s["step"] == "grid-224" and s.get("runs"):
            lines += ["", "## Grid runs", "",
                      "| run | status | top-1 | img/s | warm-up s | epoch s | MFU | peak MB | model peak MB | resident MB |",
                      "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
            for r in s["runs"]:
                mb = lambda v: f"{v / 1e6:.0f}" if v else "-"  # noqa: E731
                ep = ", ".join(f"{e:.2f}" for e in r["epoch_seconds"] if e is not None)
                lines.append(
                    f"| {r['run']} | {r['status']} | {r['accuracy']} | "
                    f"{r['train_images_per_s'] and round(r['train_images_per_s'], 1)} | "
                    f"{r['warmup_seconds'] and round(r['warmup_seconds'], 2)} | {ep} | "
                    f"{r['mfu'] and round(r['mfu'], 3)} | {mb(r['peak_memory_bytes'])} | "
                    f"{mb(r['model_peak_memory_bytes'])} | {mb(r['resident_data_bytes'])} |"
                )
        for key in ("output", "traceback"):
            if s.get(key):
                lines += ["", f"## {s['step']}: {key}", "", "```", s[key], "```"]
    lines += ["", "## nvidia-smi", "", "```", provenance["nvidia_smi"].strip(), "```", ""]
    path = c.out / f"{name}.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run every step on tiny settings on the CPU (tests this script)")  # fmt: skip
    parser.add_argument("--device", default="cuda", help="the GPU to check (default cuda)")
    parser.add_argument(
        "--out", help="folder of the report (default results/; a temp dir with --cpu-smoke)"
    )
    parser.add_argument("--skip", action="append", default=[], choices=[n for n, _ in STEPS],
                        help="leave a step out (repeatable)")  # fmt: skip
    parser.add_argument("--mfu-batch", type=int, default=128, help="ResNet-50 batch for the MFU")
    args = parser.parse_args(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        why = "this PyTorch has no CUDA" if torch.version.cuda is None else "no GPU is visible"
        print(f"gpu_check: no CUDA device ({why}). This check needs an NVIDIA GPU; "
              "`--cpu-smoke` runs its steps on tiny settings on the CPU.", file=sys.stderr)  # fmt: skip
        return 2
    c = Check(args)
    started = time.perf_counter()
    for name, run in STEPS:
        c.step(name, run)
    provenance = _provenance(c)
    provenance["total_seconds"] = round(time.perf_counter() - started, 1)
    path = write_report(c, provenance)
    print(f"\nreport: {path} and {path.with_suffix('.json')} ({provenance['total_seconds']} s)")
    shutil.rmtree(c.work / "cache", ignore_errors=True)
    return 1 if any(s["status"] == "failed" for s in c.steps) else 0


if __name__ == "__main__":
    sys.exit(main())
