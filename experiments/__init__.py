"""Runnable comparisons of RNN, LSTM, GRU and Transformer: `python -m experiments.<name>`."""
