"""lmlab: train, evaluate, compare and dissect language models, from n-grams to LSTMs.

Every model answers the same question, log P(w_t | w_1..w_{t-1}), and every number is measured
the same way (see :mod:`lmlab.metrics`), so a 5-gram and an LSTM can be compared honestly.
"""

__version__ = "0.1.0"
