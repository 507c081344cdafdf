"""Multi-query associative recall (Arora et al. 2023, Zoology).

Attention solves it at small width; a recurrent model needs a state that grows
with the number of key-value pairs (length // 16 by default).

    python -m experiments.associative_recall
    python -m experiments.associative_recall --lengths=64,128,256 --steps=5000
"""

from experiments import common
from seqjax import tasks

EXPERIMENT = common.Experiment(
    name="associative_recall", task=tasks.AssociativeRecall(vocab_size=64), lengths=(32,), steps=1000
)

if __name__ == "__main__":
    common.main(EXPERIMENT)
