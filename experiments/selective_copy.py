"""Selective copying (Gu & Dao 2023): output the data tokens scattered among noise, in order.

python -m experiments.selective_copy
python -m experiments.selective_copy --lengths=256,1024 --steps=10000
"""

from experiments import common
from seqjax import tasks

EXPERIMENT = common.Experiment(
    name="selective_copy", task=tasks.SelectiveCopy(num_tokens=4), lengths=(16, 32), steps=1000
)

if __name__ == "__main__":
    common.main(EXPERIMENT)
