"""Copy / memory task (Hochreiter & Schmidhuber 1997; Arjovsky, Shah & Bengio 2016).

Remember 10 symbols over a delay of T blanks, then recall them. The memoryless
baseline's cross-entropy is 10 log 8 / (T + 20); a vanilla RNN stalls at it as T
grows while gated RNNs (and attention) get below it.

    python -m experiments.copy_task                      # default comparison
    python -m experiments.copy_task --lengths=50,100 --steps=5000 --seeds=0,1,2
"""

from experiments import common
from seqjax import tasks

EXPERIMENT = common.Experiment(
    name="copy_task", task=tasks.Copy(), lengths=(10, 30), steps=1500, learning_rates=(1e-2,)
)

if __name__ == "__main__":
    common.main(EXPERIMENT)
