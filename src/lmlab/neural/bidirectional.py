"""ELMo-style bidirectional language model (Peters et al. 2018), with a cloze head.

Two recurrences of the same kind (cell, layers, residual, variant) read the text in opposite
directions and share the embedding and the softmax:

* the FORWARD recurrence reads left to right and predicts the next word. It is an ordinary
  left-to-right LM: :meth:`BidirectionalLM.forward` returns its logits only, its state is carried
  across batches like any RNN's, and its perplexity is comparable with every other lmlab model;
* the BACKWARD recurrence reads right to left and predicts the previous word;
* the CLOZE head predicts a blanked word w_t from [h^f_{t-1}; h^b_{t+1}]: the forward recurrence
  having read up to w_{t-1} and the backward one having read from the end down to w_{t+1}.

!!! NEVER SCORE TEXT AS A LEFT-TO-RIGHT LM WITH THE BACKWARD OR CLOZE OUTPUTS. !!!
They condition on words to the right of the one predicted, so their "perplexities" are not
perplexities of the text: the product of cloze probabilities is not a probability of the text and
can be made arbitrarily small or large. Only the forward half (``forward`` / ``loss``'s forward
term) is a language model in the sense of lmlab's evaluation protocol. Cloze accuracy/perplexity
and backward perplexity are reported *beside* forward perplexity, under their own names.

Training (:meth:`BidirectionalLM.loss`) returns the mean of the forward, backward and cloze
cross-entropies. The forward state is carried across batches; the backward recurrence restarts
from a zero state in every batch (the text to the right of a batch has not been read yet), so in
training it sees at most one batch of right context. Exact backward perplexity over a whole
stream is computed separately by :meth:`BidirectionalLM.backward_logprobs`, which runs the
backward recurrence over the entire reversed stream; :meth:`BidirectionalLM.cloze_scores` does
the same for the cloze task. Note that exp(loss) is therefore NOT a perplexity; the three parts
of the last loss are kept in ``last_loss_parts`` for logging.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lmlab.corpus import EOS_ID
from lmlab.neural.base import LanguageModelBase, Recurrence, State
from lmlab.neural.config import ModelConfig


class BidirectionalLM(LanguageModelBase):
    """Forward + backward recurrences sharing embedding and softmax, plus a cloze head.

    Stream convention (as :mod:`lmlab.neural.data`): ``inputs[t]`` is the word before
    ``targets[t]``, so a [T, B] batch covers the tokens w_0 .. w_T of each column with
    ``inputs = w_0..w_{T-1}`` and ``targets = w_1..w_T``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.emsize)
        self.forward_rnn = Recurrence(c)
        self.backward_rnn = Recurrence(c)
        self.drop = nn.Dropout(c.dropout)
        self.decoder = nn.Linear(c.hidden, c.vocab_size)  # shared by both directions
        self.cloze_head = nn.Linear(2 * c.hidden, c.vocab_size)
        for module in (self.embedding, self.decoder, self.cloze_head):
            for p in module.parameters():
                nn.init.uniform_(p, -c.init_range, c.init_range)
        if c.tied:
            self.decoder.weight = self.embedding.weight
        self.last_loss_parts: dict[str, torch.Tensor] = {}

    # -- the trainer's interface: the state is the FORWARD recurrence's ------------------------

    def init_state(self, batch_size, device):
        return self.forward_rnn.init_state(batch_size, device)

    def forward(self, inputs, state):
        """Forward-direction (left-to-right) logits [T, B, V] only: a legitimate LM."""
        if state is None:
            state = self.init_state(inputs.size(1), inputs.device)
        hf, state = self.forward_rnn(self.drop(self.embedding(inputs)), state)
        return self.decoder(self.drop(hf)), state

    def loss(self, inputs, targets, state):
        """(forward CE + backward CE + cloze CE) / 3 and the new forward state."""
        hf, hb, state = self._both(inputs, targets, state)
        hf, hb = self.drop(hf), self.drop(hb)
        vocab = self.config.vocab_size
        fwd = F.cross_entropy(self.decoder(hf).reshape(-1, vocab), targets.reshape(-1))
        # hb[t] has read targets[t:] = w_{t+1}..w_T and predicts the word before: inputs[t].
        bwd = F.cross_entropy(self.decoder(hb).reshape(-1, vocab), inputs.reshape(-1))
        cloze = F.cross_entropy(self._cloze(hf, hb).reshape(-1, vocab), targets.reshape(-1))
        self.last_loss_parts = {"forward": fwd.detach(), "backward": bwd.detach(),
                                "cloze": cloze.detach()}
        return (fwd + bwd + cloze) / 3, state

    def cloze_logits(self, inputs: torch.Tensor, targets: torch.Tensor, state: State
                     ) -> tuple[torch.Tensor, State]:
        """Cloze logits [T, B, V] for each target of the batch (right context: the rest of the
        batch only) and the new forward state. Position t never sees ``targets[t]``."""
        hf, hb, state = self._both(inputs, targets, state)
        return self._cloze(self.drop(hf), self.drop(hb)), state

    def _both(self, inputs, targets, state):
        """Top-layer outputs of both directions, aligned to the batch positions:
        hf[t] has read .. w_t (inputs up to t), hb[t] has read w_T .. w_{t+1} (targets[t:])."""
        if state is None:
            state = self.init_state(inputs.size(1), inputs.device)
        hf, state = self.forward_rnn(self.drop(self.embedding(inputs)), state)
        zero = self.backward_rnn.init_state(inputs.size(1), inputs.device)  # restart every batch
        hb, _ = self.backward_rnn(self.drop(self.embedding(targets.flip(0))), zero)
        return hf, hb.flip(0), state

    def _cloze(self, hf: torch.Tensor, hb: torch.Tensor) -> torch.Tensor:
        """Logits for targets[t] = w_{t+1} from hf[t] (read .. w_t) and hb[t+1] (read w_T ..
        w_{t+2}); for the last target nothing to its right has been read: a zero vector, the
        backward recurrence's output before it reads anything."""
        right = torch.cat([hb[1:], torch.zeros_like(hb[:1])])
        return self.cloze_head(torch.cat([hf, right], dim=-1))

    # -- whole-stream scoring (evaluation) ---------------------------------------------------

    @torch.no_grad()
    def backward_logprobs(self, targets: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """Backward-LM log-probabilities (nats) of a whole 1-D stream (``targets`` = the stream's
        ids, w_1..w_N, as :func:`lmlab.neural.data.stream_tensors` gives them).

        The stream is read with its leading boundary, w_0 = ``</s>``, as left-to-right models
        read it. Mirrored: the backward LM starts from a zero state, reads w_N first (context, as
        w_0 is for the forward LM) and predicts w_{N-1}, ..., w_1, w_0. Returns ``out`` [N] in
        stream order: ``out[i] = log p_b(w_i | w_{i+1} .. w_N)``, i = 0..N-1, so N predictions as
        for the forward LM and ``-out.mean()`` is the backward cross-entropy. Runs in eval mode,
        in chunks of ``chunk`` tokens with the state carried (exact, memory bounded).
        NOT a left-to-right score (see the module docstring).
        """
        seq = torch.cat([targets.new_tensor([EOS_ID]), targets]).flip(0)  # w_N .. w_0
        out = []
        with _eval(self):
            state = self.backward_rnn.init_state(1, targets.device)
            for s in range(0, len(targets), chunk):
                x, y = seq[s:s + chunk], seq[s + 1:s + chunk + 1]
                h, state = self.backward_rnn(self.embedding(x[:len(y), None]), state)
                logp = F.log_softmax(self.decoder(h[:, 0]), dim=-1)
                out.append(logp.gather(1, y[:, None])[:, 0])
        return torch.cat(out).flip(0) if out else targets.new_zeros(0, dtype=torch.float)

    @torch.no_grad()
    def cloze_scores(self, targets: torch.Tensor, chunk: int = 2048
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cloze scores of every position of a whole 1-D stream (``targets`` = w_1..w_N).

        Position i predicts w_i from the forward recurrence having read w_0 (= ``</s>``) ..
        w_{i-1} and the backward one having read w_N .. w_{i+1} (nothing for i = N), both over
        the entire stream. Returns ``(logp, pred)``, each [N]: the log-probability (nats) of the
        true word and the most probable word, so cloze accuracy is ``(pred == targets).mean()``
        and cloze "perplexity" ``exp(-logp.mean())``. A fill-in-the-blank score with both-side
        context: NEVER report it as (or mix it into) a language-model perplexity.
        """
        n = len(targets)
        device = targets.device
        with _eval(self):
            # Backward pass first, keeping only its top-layer outputs.
            rev = targets.flip(0)
            state, parts = self.backward_rnn.init_state(1, device), []
            for s in range(0, n, chunk):
                h, state = self.backward_rnn(self.embedding(rev[s:s + chunk, None]), state)
                parts.append(h[:, 0])
            hb = torch.cat(parts).flip(0) if parts else None  # hb[j] has read targets[j:]
            # Target j (w_{j+1}, 0-based) is predicted from hf[j] (read w_0..w_j) and hb[j+1]
            # (read targets[j+1:]); after the last word nothing is to the right: zeros.
            inputs = torch.cat([targets.new_tensor([EOS_ID]), targets[:-1]])
            state, logps, preds = self.forward_rnn.init_state(1, device), [], []
            for s in range(0, n, chunk):
                hf, state = self.forward_rnn(self.embedding(inputs[s:s + chunk, None]), state)
                right = hb[s + 1:s + chunk + 1]
                right = torch.cat([right, right.new_zeros(len(hf) - len(right), right.size(1))])
                logits = self.cloze_head(torch.cat([hf[:, 0], right], dim=-1))
                logp = F.log_softmax(logits, dim=-1)
                logps.append(logp.gather(1, targets[s:s + chunk, None])[:, 0])
                preds.append(logp.argmax(-1))
        if not logps:
            return targets.new_zeros(0, dtype=torch.float), targets.new_zeros(0)
        return torch.cat(logps), torch.cat(preds)


class _eval:
    """Put a module in eval mode for a block, then restore its previous mode."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.was_training = module, module.training

    def __enter__(self):
        self.module.eval()

    def __exit__(self, *exc):
        self.module.train(self.was_training)


__all__ = ["BidirectionalLM"]
