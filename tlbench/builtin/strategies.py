"""The builtin strategies: scratch, linear, logreg, finetune, lp-ft, laststages and llrd.

Their defaults are tuned for small datasets (hundreds to tens of thousands of
images) at the sizes the README uses; every value can be overridden from the
CLI or a config file. `laststages` and `llrd` read the backbone's stages
(`Backbone.stages`, stem first), and take options (`StrategyOption`):
`--strategy-option llrd.decay=0.5`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tlbench.hookspecs import hookimpl
from tlbench.plugin_types import Hyperparameters, SearchDim, Strategy, StrategyOption, all_trainable

if TYPE_CHECKING:
    from torch import nn

#: Lightning's `BaseFinetuning(train_bn=False)`, timm's `freeze_batch_norm_2d`.
FREEZE_BN = StrategyOption(
    "freeze_bn",
    False,
    "BatchNorm layers keep their pretrained scale, shift and running statistics",
)


def _keep_eval(module: nn.Module, args: Any) -> None:
    # A forward pre-hook: the layer normalises with its running statistics and never
    # updates them, whatever `model.train()` said (a frozen BatchNorm).
    module.training = False


def freeze_batchnorm(module: nn.Module) -> None:
    """Every BatchNorm layer of `module` frozen: no gradient, running statistics used and kept."""
    from torch import nn

    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            for p in layer.parameters(recurse=False):
                p.requires_grad_(False)
            layer.register_forward_pre_hook(_keep_eval)


def _trainable_only(groups: list[dict]) -> list[dict]:
    """The groups without their frozen parameters (and without groups left empty)."""
    kept = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    return [g for g in kept if g["params"]]


def finetune_groups(
    backbone: nn.Module,
    head: nn.Module,
    hp: Hyperparameters,
    options: dict[str, Any] | None = None,
) -> list[dict]:
    """Everything trains (`all_trainable`), BatchNorm layers frozen with `freeze_bn`."""
    groups = all_trainable(backbone, head, hp)
    if (options or {}).get("freeze_bn"):
        freeze_batchnorm(backbone)
    return _trainable_only(groups)


def by_stage(
    backbone: nn.Module,
    head: nn.Module,
    hp: Hyperparameters,
    stages: list[tuple[str, list[Any]]],
    scales: list[float | None],
    freeze_bn: bool,
) -> list[dict]:
    """The head at lr and stage i at lr * scales[i], one group each; a stage whose scale
    is None is frozen."""
    for p in backbone.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    groups = [{"params": list(head.parameters()), "lr": hp.lr, "name": "head"}]
    for (name, params), scale in zip(stages, scales, strict=True):
        if scale is None:
            continue
        for p in params:
            p.requires_grad_(True)
        groups.append({"params": params, "lr": hp.lr * scale, "name": name})
    if freeze_bn:
        freeze_batchnorm(backbone)
    return _trainable_only(groups)


def last_stages_groups(
    backbone: nn.Module,
    head: nn.Module,
    hp: Hyperparameters,
    stages: list[tuple[str, list[Any]]],
    options: dict[str, Any],
) -> list[dict]:
    """The last `n` stages train at lr * backbone_lr_mult; the rest is frozen. `n` beyond
    the backbone's stages trains them all."""
    first = len(stages) - options["n"]
    scales = [hp.backbone_lr_mult if i >= first else None for i in range(len(stages))]
    return by_stage(backbone, head, hp, stages, scales, options["freeze_bn"])


def layer_decay_groups(
    backbone: nn.Module,
    head: nn.Module,
    hp: Hyperparameters,
    stages: list[tuple[str, list[Any]]],
    options: dict[str, Any],
) -> list[dict]:
    """Layer-wise learning-rate decay (timm's `param_groups_layer_decay`, BEiT, MAE): the
    head at lr, the last stage at lr * decay, each earlier stage `decay` times its
    successor's, all times backbone_lr_mult."""
    k = len(stages)
    scales = [hp.backbone_lr_mult * options["decay"] ** (k - i) for i in range(k)]
    return by_stage(backbone, head, hp, stages, scales, options["freeze_bn"])


SCRATCH = Strategy(
    name="scratch",
    description="random init, every parameter trains: the baseline transfer must beat",
    pretrained=False,
    defaults=Hyperparameters(
        epochs=10,
        batch_size=32,
        # A randomly initialised network needs a larger step and more regularisation
        # than a pretrained one; AdamW at 2e-3 is robust across the small CNN and ResNets.
        lr=2e-3,
        weight_decay=0.05,
        warmup_epochs=1,
    ),
    search_space=(
        SearchDim("lr", 1e-4, 1e-2, log=True),
        SearchDim("weight_decay", 1e-4, 0.3, log=True),
    ),
)

LINEAR = Strategy(
    name="linear",
    description="frozen pretrained backbone, new linear head trained on cached features",
    pretrained=True,
    frozen_backbone=True,
    defaults=Hyperparameters(
        # The head trains on cached, standardised features: epochs cost milliseconds,
        # so enough of them to converge like a logistic-regression probe.
        epochs=30,
        batch_size=64,
        lr=1e-3,
        weight_decay=1e-3,
        # Features are computed once from the centre crop; there is nothing to augment.
        augment=False,
    ),
    # The probe's step and its L2 regularisation (Kornblith et al. 2019 sweep the
    # regularisation of a logistic-regression probe over several decades).
    search_space=(
        SearchDim("lr", 1e-4, 1e-1, log=True),
        SearchDim("weight_decay", 1e-6, 1e-1, log=True),
    ),
)

LOGREG = Strategy(
    name="logreg",
    description="frozen pretrained backbone, multinomial logistic regression by L-BFGS on its features",
    pretrained=True,
    frozen_backbone=True,
    defaults=Hyperparameters(
        # Four evaluations of 25 full-batch L-BFGS iterations each (tlbench.probe):
        # a converged probe on cached features in well under a second.
        epochs=4,
        batch_size=64,
        lr=1.0,
        # The L2 strength on the weights, per image of the mean loss.
        weight_decay=1e-4,
        optimizer="lbfgs",
        augment=False,
    ),
    # The regularisation is what a probe's accuracy hangs on (Kornblith et al. 2019).
    search_space=(SearchDim("weight_decay", 1e-6, 10.0, log=True),),
)

FINETUNE = Strategy(
    name="finetune",
    description="pretrained backbone and new head all train; backbone at 0.1x the head's LR",
    pretrained=True,
    param_groups=finetune_groups,
    options=(FREEZE_BN,),
    defaults=Hyperparameters(
        epochs=5,
        batch_size=32,
        lr=1e-3,
        # Pretrained features are worth keeping: a 10x smaller step on the backbone
        # than on the new head (the usual discriminative fine-tuning rule).
        backbone_lr_mult=0.1,
        weight_decay=1e-4,
        warmup_epochs=1,
    ),
    # Li et al. 2020: the usual fine-tuning defaults cost points, and the best
    # backbone rate depends on how close the target domain is to ImageNet.
    search_space=(
        SearchDim("lr", 1e-5, 1e-2, log=True),
        SearchDim("backbone_lr_mult", 0.01, 1.0, log=True),
        SearchDim("weight_decay", 1e-6, 1e-2, log=True),
    ),
)


LP_FT = Strategy(
    name="lp-ft",
    description="linear probe on frozen features first, then fine-tune everything from that head",
    pretrained=True,
    # Kumar et al. (ICLR 2022): a head trained first keeps the fine-tune from
    # distorting the pretrained features through a random head's gradients.
    probe=LINEAR.defaults,
    defaults=Hyperparameters(
        epochs=5,
        batch_size=32,
        # The head is already good: one small rate for everything, not 10x on the head.
        lr=1e-4,
        backbone_lr_mult=1.0,
        weight_decay=1e-4,
        warmup_epochs=1,
    ),
    search_space=(
        SearchDim("lr", 1e-6, 1e-3, log=True),
        SearchDim("weight_decay", 1e-6, 1e-2, log=True),
    ),
)


LAST_STAGES = Strategy(
    name="laststages",
    description="pretrained backbone: its last n stages (option n, default 2) and a new head train",
    pretrained=True,
    defaults=FINETUNE.defaults,
    param_groups=last_stages_groups,
    options=(
        StrategyOption("n", 2, "how many stages train, counted from the head", low=1),
        FREEZE_BN,
    ),
    needs_stages=True,
    search_space=FINETUNE.search_space,
)

LLRD = Strategy(
    name="llrd",
    description="pretrained backbone: every stage trains, each at decay x the next one's LR",
    pretrained=True,
    # The decay sets the backbone's rates: the last stage already gets lr * decay.
    defaults=FINETUNE.defaults.replace(backbone_lr_mult=1.0),
    param_groups=layer_decay_groups,
    options=(
        # MAE's and timm's fine-tuning recipes use 0.65-0.75 for ViT-B.
        StrategyOption("decay", 0.75, "each stage's LR over the next one's", low=0.0, high=1.0),
        FREEZE_BN,
    ),
    needs_stages=True,
    search_space=(
        SearchDim("lr", 1e-5, 1e-2, log=True),
        SearchDim("weight_decay", 1e-6, 1e-2, log=True),
    ),
)


@hookimpl
def tlbench_register_strategies(register):
    for strategy in (SCRATCH, LINEAR, LOGREG, FINETUNE, LP_FT, LAST_STAGES, LLRD):
        register(strategy)
