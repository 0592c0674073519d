"""Neural language models, readable top to bottom.

Every model maps a [T, B] batch of input ids and a carried state to [T, B, V] next-word logits and
the new state, so one trainer and one evaluator serve them all:

    state = model.init_state(batch_size, device)
    for each [T, B] window of the stream:            # inputs[t] is the word before targets[t]
        loss, state = model.loss(inputs, targets, state)
        state = detach_state(state)                  # truncated BPTT: keep values, cut the graph

Models:

* :class:`NNLM` -- Bengio et al. (2003): the last ``window`` words -> concatenated embeddings ->
  tanh hidden layer -> softmax, with optional direct embedding -> output connections. Its "state"
  is simply the last input ids of the previous batch, so it reads the same stream as an RNN.
* :class:`RecurrentLM` -- embedding -> (deep, optionally residual) recurrence -> decoder, for the
  cells ``rnn_tanh``, ``rnn_relu``, ``irnn`` (Le et al. 2015), ``lstm`` (optionally a Greff et al.
  variant from :mod:`lmlab.neural.cells`) and ``gru``.
* ``BidirectionalLM`` (ELMo-style, in :mod:`lmlab.neural.bidirectional`) for ``bidirectional``.

The shared pieces (``State``, :class:`LanguageModelBase`, :class:`Recurrence`) are in
:mod:`lmlab.neural.base`, below both this module and the bidirectional one.

``build_model(config)`` picks the class. Configuration mistakes raise :class:`LmlabError`.
"""

from __future__ import annotations

import torch
from torch import nn

from lmlab.corpus import EOS_ID
from lmlab.errors import LmlabError
from lmlab.neural.base import LanguageModelBase, Recurrence, State, detach_state
from lmlab.neural.bidirectional import BidirectionalLM
from lmlab.neural.config import ModelConfig

# ----------------------------------------------------------------------------------------------
# NNLM (Bengio et al. 2003)
# ----------------------------------------------------------------------------------------------


class NNLM(LanguageModelBase):
    """y = b + W x + U tanh(d + H x), where x concatenates the embeddings of the previous
    ``window`` words (W x: the optional direct connections, ``config.direct``).

    Stream interface: the context of target t is ``inputs[t-window+1 .. t]``; the words before the
    batch come from the state, the last ``window`` input ids of the previous batch ([window, B]
    long, ``</s>`` at the start of the stream, the same boundary the n-gram models pad with). Only
    ``window - 1`` of them are ever read; carrying ``window`` keeps the state non-empty even for
    ``window == 1`` and costs nothing.

    Tying (``config.tied``) shares the embedding with the output matrix U. When ``emsize !=
    hidden`` the tanh layer is first projected to ``emsize`` by a bias-free linear map (Press &
    Wolf 2017), so tying is always possible; with ``emsize == hidden`` there is no projection.
    The direct connections W act on the whole window (window*emsize wide) and are never tied.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.window = c.window
        self.embedding = nn.Embedding(c.vocab_size, c.emsize)
        self.hidden_layer = nn.Linear(c.window * c.emsize, c.hidden)  # d + H x
        self.direct = nn.Linear(c.window * c.emsize, c.vocab_size, bias=False) if c.direct else None
        self.proj = (nn.Linear(c.hidden, c.emsize, bias=False)
                     if c.tied and c.emsize != c.hidden else None)
        self.decoder = nn.Linear(c.emsize if self.proj is not None else c.hidden, c.vocab_size)
        self.drop = nn.Dropout(c.dropout)
        for p in self.parameters():
            nn.init.uniform_(p, -c.init_range, c.init_range)
        if c.tied:
            self.decoder.weight = self.embedding.weight

    def init_state(self, batch_size, device):
        return torch.full((self.window, batch_size), EOS_ID, dtype=torch.long, device=device)

    def forward(self, inputs, state):
        if state is None:
            state = self.init_state(inputs.size(1), inputs.device)
        full = torch.cat([state, inputs])  # [window + T, B]
        # ctx[t, b] = full[t+1 : t+1+window, b] = inputs[t-window+1 .. t, b], oldest first: all T
        # windows at once as a strided view, no loop over time.
        ctx = full[1:].unfold(0, self.window, 1)  # [T, B, window]
        x = self.drop(self.embedding(ctx).flatten(2))  # [T, B, window * emsize]
        h = self.drop(torch.tanh(self.hidden_layer(x)))
        if self.proj is not None:
            h = self.proj(h)
        logits = self.decoder(h)
        if self.direct is not None:
            logits = logits + self.direct(x)
        return logits, full[-self.window:]


class RecurrentLM(LanguageModelBase):
    """Embedding -> dropout -> recurrence -> dropout -> linear decoder (Zaremba et al. 2014).

    ``tied`` shares the decoder matrix with the embedding (Press & Wolf 2017; Inan et al. 2017),
    which needs ``emsize == hidden`` (checked by :meth:`ModelConfig.check`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.emsize)
        self.rnn = Recurrence(c)
        self.drop = nn.Dropout(c.dropout)
        self.decoder = nn.Linear(c.hidden, c.vocab_size)
        for module in (self.embedding, self.decoder):
            for p in module.parameters():
                nn.init.uniform_(p, -c.init_range, c.init_range)
        if c.tied:
            self.decoder.weight = self.embedding.weight

    def init_state(self, batch_size, device):
        return self.rnn.init_state(batch_size, device)

    def forward(self, inputs, state):
        if state is None:
            state = self.init_state(inputs.size(1), inputs.device)
        out, state = self.rnn(self.drop(self.embedding(inputs)), state)
        return self.decoder(self.drop(out)), state


def build_model(config: ModelConfig) -> LanguageModelBase:
    """The model ``config`` describes, freshly initialised (seed torch first for repeatability)."""
    config.check()
    if config.vocab_size < 1:
        raise LmlabError(f"vocab_size must be set from the vocabulary (>= 1), got "
                         f"{config.vocab_size}")
    if config.model == "nnlm":
        if config.variant is not None:
            raise LmlabError("--variant applies to lstm only, not nnlm")
        return NNLM(config)
    if config.bidirectional:
        return BidirectionalLM(config)
    return RecurrentLM(config)


__all__ = ["build_model", "detach_state", "LanguageModelBase", "NNLM", "RecurrentLM", "Recurrence",
           "State", "BidirectionalLM", "EOS_ID"]
