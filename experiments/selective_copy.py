"""Selective copying (Gu & Dao 2023): output the data tokens scattered among noise, in order.

    python -m experiments.selective_copy
    python -m experiments.selective_copy --lengths=256,1024 --steps=10000
    python -m experiments.selective_copy --models=rnn,mingru,minlstm --num_layers=3 --steps=2000

Defaults, by measurement on a 2-core CPU (3 seeds, width 64, rate 3e-3, 1000
steps): the vanilla RNN stays at chance while the GRU and the Transformer recall
0.8 to 0.9 of the tokens and the LSTM 0.56 to 0.78, lower at T = 32 than 16;
one layer of Mamba (0.97) and three of minGRU or minLSTM (0.99) do far better (README).
"""

from experiments import common
from seqjax import tasks

EXPERIMENT = common.Experiment(
    name="selective_copy", task=tasks.SelectiveCopy(num_tokens=4), lengths=(16, 32), steps=1000
)

if __name__ == "__main__":
    common.main(EXPERIMENT)
