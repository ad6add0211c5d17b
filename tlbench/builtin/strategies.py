"""The three builtin strategies: scratch, linear and finetune.

Their defaults are tuned for small datasets (hundreds to tens of thousands of
images) at the sizes the README uses; every value can be overridden from the
CLI or a config file.
"""

from __future__ import annotations

from tlbench.api import Hyperparameters, SearchDim, Strategy
from tlbench.hookspecs import hookimpl

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


@hookimpl
def tlbench_register_strategies(register):
    for strategy in (SCRATCH, LINEAR, LOGREG, FINETUNE, LP_FT):
        register(strategy)
