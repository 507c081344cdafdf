"""Parity of a bit string (Deletang et al. 2023), with length generalisation.

Trained on strings of length up to T, evaluated on longer ones: LSTMs learn the
regular language and generalise; Transformers stay near chance beyond T.

    python -m experiments.parity
    python -m experiments.parity --lengths=40 --eval_lengths=100,500 --steps=10000
"""

from experiments import common
from seqjax import tasks

EXPERIMENT = common.Experiment(
    name="parity",
    task=tasks.Parity(),
    lengths=(16,),
    steps=1000,
    eval_lengths=(32, 64),
    # Generalisation is scored on strings longer than any seen in training.
    eval_task=lambda train_length: tasks.Parity(min_length=train_length + 1),
)

if __name__ == "__main__":
    common.main(EXPERIMENT)
