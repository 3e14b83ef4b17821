"""The names the command line offers before anything heavy is imported (``host --help`` loads no torch). Each is the
one definition its owner uses: datasets (:data:`edgeshrink.host.data.DATASETS` has a loader for each, and checks it),
optimizers and learning-rate schedules (:mod:`edgeshrink.host.train`)."""

DATASET_NAMES = ("digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "imagenet", "cityscapes")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "multistep", "cosine", "poly", "constant")
