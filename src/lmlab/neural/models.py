"""Neural language models. Every model maps a [T, B] batch of input ids and a carried state to
[T, B, V] next-word logits and the new state, so one trainer and one evaluator serve them all.

(Skeleton: the full set of options is being filled in; the interface below is the contract.)
"""

from __future__ import annotations

import torch
from torch import nn

from lmlab.corpus import EOS_ID
from lmlab.neural.config import ModelConfig

State = object  # a tensor or a (nested) tuple of tensors, carried between batches


def detach_state(state: State) -> State:
    """Cut the graph at a batch boundary (truncated BPTT) without changing values."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple | list):
        return type(state)(detach_state(s) for s in state)
    return state


class LanguageModelBase(nn.Module):
    """What the trainer and evaluator rely on."""

    config: ModelConfig

    def init_state(self, batch_size: int, device: torch.device) -> State:
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, state: State
             ) -> tuple[torch.Tensor, State]:
        """Mean cross-entropy (nats/token) of the batch; bidirectional models add their
        backward loss."""
        logits, state = self(inputs, state)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                           targets.reshape(-1)), state


class RecurrentLM(LanguageModelBase):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.emsize)
        kind = {"lstm": nn.LSTM, "gru": nn.GRU}.get(c.model, nn.RNN)
        kwargs = {} if c.model in ("lstm", "gru") else {
            "nonlinearity": "tanh" if c.model == "rnn_tanh" else "relu"}
        self.rnn = kind(c.emsize, c.hidden, c.layers, dropout=c.dropout if c.layers > 1 else 0,
                        **kwargs)
        self.drop = nn.Dropout(c.dropout)
        self.decoder = nn.Linear(c.hidden, c.vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -c.init_range, c.init_range)

    def init_state(self, batch_size, device):
        c = self.config
        h = torch.zeros(c.layers, batch_size, c.hidden, device=device)
        return (h, h.clone()) if c.model == "lstm" else h

    def forward(self, inputs, state):
        x = self.drop(self.embedding(inputs))
        out, state = self.rnn(x, state)
        return self.decoder(self.drop(out)), state


def build_model(config: ModelConfig) -> LanguageModelBase:
    config.check()
    return RecurrentLM(config)


__all__ = ["build_model", "detach_state", "LanguageModelBase", "EOS_ID"]
