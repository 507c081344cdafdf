"""Adding problem (Hochreiter & Schmidhuber 1997; as in Arjovsky, Shah & Bengio 2016).

Sum the two marked values of a length-T sequence. Predicting the mean scores
MSE 1/6 ~ 0.167; accuracy is the share of answers within 0.04 of the target.

    python -m experiments.adding
    python -m experiments.adding --lengths=100,200,400 --steps=5000

Defaults, by measurement on a 2-core CPU (3 seeds, width 64, rate 1e-2, 1000
steps, early stopping at 0.9): the vanilla RNN stays at the baseline at T = 50
and 100, the LSTM solves T = 50 in 2 of 3 seeds and not T = 100, the GRU solves
both (2 of 3 seeds at T = 100), and the Transformer solves both in some seeds (2 of 3
at T = 50, 1 of 3 at T = 100; at this rate its runs depend on seed and rounding).
"""

from experiments import common
from seqjax import tasks

EXPERIMENT = common.Experiment(
    name="adding",
    task=tasks.Adding(),
    lengths=(50, 100),
    steps=1000,
    solved_accuracy=0.9,
    learning_rates=(1e-2,),
)

if __name__ == "__main__":
    common.main(EXPERIMENT)
