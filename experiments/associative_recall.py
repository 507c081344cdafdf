"""Multi-query associative recall (Arora et al. 2023, Zoology).

Attention solves it at small width; a recurrent model needs a state that grows
with the number of key-value pairs (length // 16 by default). Every model has two
layers here: attention needs two for the lookup (an induction head: one layer
marks each value with its key, the next finds the queried key).

    python -m experiments.associative_recall
    python -m experiments.associative_recall --lengths=64,128,256 --steps=5000
    python -m experiments.associative_recall --models=gru,mingru,lru,mamba,transformer --seeds=0,1,2

accuracy_vs_length.png plots accuracy against the number of pairs, mean and spread
over seeds.
"""

from experiments import common
from seqjax import tasks

TASK = tasks.AssociativeRecall(vocab_size=64)
EXPERIMENT = common.Experiment(
    name="associative_recall",
    task=TASK,
    lengths=(32, 64),
    steps=600,
    num_layers=2,
    x_axis=("key-value pairs", TASK.pairs),
)

if __name__ == "__main__":
    common.main(EXPERIMENT)
