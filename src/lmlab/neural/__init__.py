"""Neural language models (PyTorch): Bengio's NNLM, Elman RNN/IRNN, LSTM, GRU, deep, residual,
bidirectional; a trainer that survives; all scored by the same protocol as n-gram models."""
