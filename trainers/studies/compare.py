r"""Compares trained models' evaluations: mean ± std over seeds, and paired differences.

    python -m trainers.evaluate --model=runs/seeds/pgd_at_s0/model.keras --protocol=autoattack \
        --examples=1000 --output=results/seeds/pgd_at_s0.json      # one per run
    python -m trainers.studies.compare results/seeds/*.json

Each argument is the JSON that `trainers.evaluate --output` writes for a
model in a run directory; it holds the run's configuration (`run`, its
`run.json`), so it compares after the run is gone (`trainers.studies.seeds` writes
one per run, to commit). Runs whose configurations (read as the setting
they trained: `setting`) differ only in the seed form one group,
named by its method and those of the settings that set it apart from the
other groups of that method which differ from `trainers.train`'s defaults
(the number of epochs is not part of a setting: a run may be extended). For each group it prints the
seeds and the mean ± standard deviation of clean and robust (worst-case)
accuracy; for each pair of groups, the difference of their robust accuracies
with its 95% interval and an exact McNemar p-value, from the images each
pair of same-seed runs classifies differently
(`keras_lfr.evaluation.paired_comparison`, with the runs of equal seeds
joined one after another), and, where the two share two seeds or more, the
mean of the same-seed differences with a Student-t 95% interval over the
seeds (`over_seeds`): the first interval counts only the images' sampling
error, the second the seeds' spread as well, so a ranking rests on the
second, and the last line states the order it gives (`ranking`). All
evaluations must share protocol, dataset, ε and images.
"""

import sys

from .. import options
from .comparing import tables


def main(argv):
    paths = argv[1:]
    if not paths:
        sys.exit("usage: python -m trainers.studies.compare EVALUATION.json [EVALUATION.json ...]")
    try:
        text = tables(paths)
    except (OSError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        sys.exit(f"error: {options.one_line(error)}")
    print(text)


def run():
    """The `keras-lfr-compare` console script."""
    options.run_program(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
